"""Every checker checks staff signatures (issue 17): ``verify``, ``verify --deep``, the exported
bundle and ``verify-bundle``, and ``verify --pinned-keys`` with the root credential pinned.

The attacker here holds write access to the database AND the log's signing key: entries are
appended through the ledger's own append path (hash chain, Merkle nodes, movements, projections
all consistent, the checkpoint signed with the real log key), bypassing every service check. What
they cannot do is sign as a person: every checker must refuse their entries, naming the entry and
the person. SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import services
from ledger.domain.commands import DestroyStock, EnrollStaff, TakeInventory
from ledger.domain.principal import Principal
from ledger.integrity import canonical as canon
from ledger.integrity import staff_signatures as ss
from ledger.services import credentials as cr
from ledger.services.bundle import export_bundle, verify_bundle
from ledger.services.rules_replay import SIGNATURES
from ledger.services.signature_check import SYSTEM_KINDS, StaffSignatureCheck
from ledger.services.verify import verify
from ledger.storage.log import attach
from tests.clinical.conftest import Ops
from tests.conftest import BACKENDS, DEA, DEA2, an_hour_ago
from tests.integrity.conftest import settings_for

CSLEDGER = [sys.executable, "-m", "api.cli"]
both = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
ENVELOPE = ("registrant", "seq", "kind", "schema_version", "occurred_at", "recorded_at", "signatures", "prev")


# --- the attacker's tools -------------------------------------------------------------------------


class RawEvent(dict):
    """An entry body written by hand: what ``CommandContext.append`` needs of an event."""

    def __init__(self, kind: str, body: dict, schema_version: int = 1):
        super().__init__({k: v for k, v in body.items() if k not in ENVELOPE})
        self.kind = kind
        self.schema_version = schema_version


def force(ledger, kind: str, body: dict, signatures: list[dict]) -> int:
    """Append one hand-made entry through the ledger's own append path (with the log key
    attached, the new checkpoint is signed too): a database writer holding the log key."""
    out = {}

    def build(ctx):
        ctx.guard_command_kinds = False  # the attacker writes what they like
        out["seq"] = ctx.append(RawEvent(kind, body), signatures=signatures, occurred_at=ctx.now).seq
        return {}

    ledger.execute(DEA, "forced_by_hand", {}, build, principal_id=None)
    return out["seq"]


def entry(ledger, seq: int) -> dict:
    with ledger.reading() as c:
        data = c.execute(sa.text("SELECT canonical FROM entries WHERE registrant = :r AND seq = :s"),
                         {"r": DEA, "s": seq}).scalar()
    return canon.decode(bytes(data))


def plain_sig(p: Principal, meaning: str) -> dict:
    """A signature as the ledger wrote them before issue 17: a JSON object naming the person."""
    return {"staff_id": p.staff_id, "printed_name": p.printed_name, "meaning": meaning,
            "signed_at": canon.format_time(an_hour_ago()), "auth_method": "password"}


def key_sig(p: Principal, meaning: str, key: Ed25519PrivateKey, credential_id: str, *, command: str = "destroy_stock",
            fields: dict | None = None, registrant: str = DEA, nonce: str | None = None) -> dict:
    """A staff signature made with ``key`` (the person's stolen key, or one of the attacker's)."""
    st = ss.statement(registrant, command, meaning, fields or {"type": "DestroyStock"}, nonce or ss.new_nonce())
    return {"staff_id": p.staff_id, "printed_name": p.printed_name, "meaning": meaning,
            "signed_at": canon.format_time(an_hour_ago()), "auth_method": ss.PASSWORD_KEY,
            "credential_id": credential_id, "statement": st, "proof": ss.sign_with(key, ss.statement_bytes(st))}


# --- the clinic ------------------------------------------------------------------------------------


def signing(ledger, who: Principal, password: str, approver: Principal | None, **kw) -> tuple[Principal, Ed25519PrivateKey, str]:
    """Enrol a password key for ``who`` (through the service); their principal now signs with it."""
    _, record, key = cr.enrol_password_key(ledger, who, password, params=ss.TEST_KDF, approver=approver, **kw)
    return replace(who, signer=ss.PasswordKeySigner(key, record["credential_id"])), key, record["credential_id"]


def signed_clinic(ledger, tmp_path) -> SimpleNamespace:
    """Unsigned history (the clinic's set-up), the administrator's root credential, credentials for
    a manager, two nurses and a pharmacist, then signed work: a receipt, a dose with its waste
    (two entries, one command), an enrolment with two roles (three entries) and a destruction."""
    log = attach(ledger, settings_for(tmp_path))
    ops = Ops(ledger)
    # An empty initial inventory (unsigned history too): reports need one (tests/reports).
    services.take_inventory(ledger, ops.pharmacist, TakeInventory("initial", "opening_of_business",
                                                                  an_hour_ago() - timedelta(hours=1)), witness=ops.nurse)
    history = entry_count(ledger)
    admin, _, admin_cid = signing(ledger, ops.admin, "admin-pass-2026", None, rp_id="localhost",
                                  origins=("http://localhost:8000",))
    keys = {}
    people = {}
    for name in ("manager", "nurse", "nurse2", "pharmacist"):
        p, key, cid = signing(ledger, getattr(ops, name), f"{name}-pass-2026", admin)
        people[name], keys[name] = p, (key, cid)
    ops.nurse = people["nurse"]
    vids = ops.receive(4)
    ops.dose(vids[0], drawn="4.00", given="3.50", waste="0.50", witness=people["nurse2"])
    services.enroll_staff(ledger, admin, EnrollStaff("Zed Zulu", "zed", ("nurse", "pharmacist")),
                          approver=people["manager"])
    destroyed = services.destroy_stock(ledger, people["pharmacist"], DestroyStock(
        (vids[1],), "incinerated", "medication room", "past its beyond-use date", an_hour_ago()),
        witnesses=(people["nurse"], people["nurse2"]))
    (destroy_seq,) = [e["seq"] for e in destroyed["entries"]]
    return SimpleNamespace(log=log, ops=ops, ledger=ledger, admin=admin, admin_cid=admin_cid, keys=keys,
                           vials=vids, history=history, destroy_seq=destroy_seq, **people)


def entry_count(ledger) -> int:
    with ledger.reading() as c:
        return c.execute(sa.text("SELECT COUNT(*) FROM entries")).scalar()


def last_seq(ledger) -> int:
    return entry_count(ledger) - 1


def forged_destruction_body(chain, vial_ids) -> dict:
    """A Form 41 of other sealed vials, shaped exactly as the real destruction's."""
    real = entry(chain.ledger, chain.destroy_seq)
    items = [dict(real["items"][0], vial_id=v) for v in vial_ids]
    return dict(real, items=items, reason="expired")


def bundle_of(ledger):
    buf = io.BytesIO()
    with ledger.reading() as c:
        export_bundle(c, DEA, buf)
    buf.seek(0)
    return verify_bundle(buf)


def all_checkers(chain) -> dict:
    """Each checker's verdict: (ok, text of the first problem)."""
    fast = verify(chain.ledger)
    deep = verify(chain.ledger, deep=True, patient_keys=chain.ops.keys)
    rep = bundle_of(chain.ledger)
    return {"verify": (fast.ok, str(fast.problems[0]) if fast.problems else ""),
            "verify --deep": (deep.ok, str(deep.problems[0]) if deep.problems else ""),
            "verify-bundle": (rep.ok, str(rep.problem) if rep.problem else "")}


def assert_all_refuse(chain, seq: int, *expected: str) -> None:
    for checker, (ok, text) in all_checkers(chain).items():
        assert not ok, f"{checker} accepted entry {seq}"
        where = f"{DEA} seq {seq}: " if checker != "verify-bundle" else f"(seq {seq}): "
        assert where in text, (checker, text)
        for want in expected:
            assert want in text, (checker, want, text)


def cli(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "CSLEDGER_KEY_DIR": str(tmp_path / "keys")}
    env.pop("CSLEDGER_PINNED_KEYS_FILE", None)
    env.pop("CSLEDGER_PATIENT_KEY", None)
    return subprocess.run(CSLEDGER + [str(a) for a in args], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture
def chain(ledger, tmp_path) -> SimpleNamespace:
    return signed_clinic(ledger, tmp_path)


# --- the untouched chain ------------------------------------------------------------------------------


@both
def test_an_untouched_signed_chain_passes_every_checker_and_says_what_it_checked(chain, db_url, tmp_path):
    for checker, (ok, text) in all_checkers(chain).items():
        assert ok, (checker, text)
    report = verify(chain.ledger)
    s = report.staff[DEA]
    assert s.root_seq == chain.history and s.unsigned_history == chain.history
    assert s.root_fingerprint.startswith("sha256:") and s.root_owner == f"{chain.admin.staff_id} (Avery Admin)"
    assert s.signed_entries == entry_count(chain.ledger) - chain.history
    assert s.credentials == 5 and s.signatures_checked >= s.signed_entries
    assert 0 < report.signature_seconds <= report.seconds
    rep = bundle_of(chain.ledger)
    assert rep.staff.root_fingerprint == s.root_fingerprint and rep.staff.signed_entries == s.signed_entries
    assert any(f"entries 0-{chain.history - 1} were recorded before staff credentials existed" in n for n in rep.notes)

    p = cli(tmp_path, "verify", "--db", db_url)
    assert p.returncode == 0, p.stdout + p.stderr
    unsigned = [ln for ln in p.stdout.splitlines() if "unsigned history" in ln]
    assert unsigned == [f"{DEA}: entries 0-{chain.history - 1} were recorded before staff credentials existed: "
                        "unsigned history"], p.stdout  # once
    assert f"root staff credential {s.root_fingerprint} of {chain.admin.staff_id} (Avery Admin)" in p.stdout
    assert f"staff signatures: {s.signed_entries} entries from {chain.history} on" in p.stdout
    assert "staff signatures checked in" in p.stdout


@both
def test_a_chain_with_no_credentials_passes_with_its_unsigned_history_reported(ledger, tmp_path):
    attach(ledger, settings_for(tmp_path))
    ops = Ops(ledger)
    ops.receive(2)
    n = entry_count(ledger)
    for deep in (False, True):
        report = verify(ledger, deep=deep, patient_keys=ops.keys)
        assert report.ok, report.problems
        assert report.staff[DEA].root_seq is None and report.staff[DEA].unsigned_history == n
        lines = [ln for ln in report.staff_lines() if "unsigned history" in ln]
        assert lines == [f"{DEA}: entries 0-{n - 1} were recorded before staff credentials existed: unsigned history "
                         "(no staff credential is enrolled yet)"]
    rep = bundle_of(ledger)
    assert rep.ok, rep.problem
    assert any("unsigned history" in note for note in rep.notes)


# --- attacks ------------------------------------------------------------------------------------------


@both
def test_a_forged_form_41_with_plain_signatures_fails_every_checker_naming_the_entry_and_person(chain, db_url,
                                                                                                 tmp_path):
    """The issue's forgery: two sealed vials destroyed "performed by Pia, witnessed by Nora and
    Ned", appended with the log key; the signatures are the pre-issue-17 JSON objects."""
    seq = force(chain.ledger, "stock_destroyed", forged_destruction_body(chain, chain.vials[2:4]),
                [plain_sig(chain.pharmacist, "performed"), plain_sig(chain.nurse, "witnessed"),
                 plain_sig(chain.nurse2, "witnessed")])
    assert_all_refuse(chain, seq, "stock_destroyed", f"{chain.pharmacist.staff_id} (Pia Pharmacist)",
                      "is not a staff signature")
    for args in (("verify",), ("verify", "--deep")):
        p = cli(tmp_path, *args, "--db", db_url)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "Traceback" not in p.stderr
        assert f"{DEA} seq {seq}: stock_destroyed in the name of {chain.pharmacist.staff_id} (Pia Pharmacist)" in p.stderr, \
            p.stderr
    path = tmp_path / "clinic.bundle"
    with chain.ledger.reading() as c, path.open("wb") as f:
        export_bundle(c, DEA, f)
    p = cli(tmp_path, "verify-bundle", path)
    assert p.returncode == 1 and f"(seq {seq})" in p.stderr and "Pia Pharmacist" in p.stderr, p.stdout + p.stderr


@both
def test_a_role_forced_in_after_the_root_is_named_for_its_signatures_not_counted_by_the_replay(chain):
    """verify --deep checks the signatures before the rules: the forged grant is named for them."""
    seq = force(chain.ledger, "role_granted", {"staff_id": chain.nurse.staff_id, "role": "manager"},
                [plain_sig(chain.admin, "performed"), plain_sig(chain.manager, "approved")])
    deep = verify(chain.ledger, deep=True, patient_keys=chain.ops.keys)
    assert [p.seq for p in deep.problems] == [seq]
    assert "role_granted in the name of" in str(deep.problems[0]) and "breaks rule" not in str(deep.problems[0])


def _self_enrolled(chain, approver_key: Ed25519PrivateKey | None, approver_cid: str | None) -> tuple[dict, list]:
    """A password key for Nora made by the log key's holder, signed by itself, with or without an
    'approval' in the administrator's name signed by ``approver_key``."""
    key = Ed25519PrivateKey.generate()
    pub = ss.public_key_text(key)
    cid = ss.password_key_credential_id(pub)
    body = {"staff_id": chain.nurse.staff_id, "credential_id": cid, "method": ss.PASSWORD_KEY, "public_key": pub,
            "fingerprint": ss.fingerprint(ss.PASSWORD_KEY, pub), "replaces": None, "rp_id": None, "origins": []}
    fields = {"type": "EnrolCredential", "staff_id": chain.nurse.staff_id, "method": ss.PASSWORD_KEY,
              "credential_id": cid, "public_key": pub, "replaces": None, "rp_id": None, "origins": []}
    sigs = [key_sig(chain.nurse, "performed", key, cid, command="enrol_credential", fields=fields)]
    if approver_key is not None:
        sigs.append(key_sig(chain.admin, "approved", approver_key, approver_cid, command="enrol_credential",
                            fields=fields))
    return body, sigs


@both
@pytest.mark.parametrize("approval", ["none", "random key", "unknown credential"])
def test_a_credential_enrolled_by_the_log_key_holder_alone_fails(chain, approval):
    random_key = Ed25519PrivateKey.generate()
    key, cid = {"none": (None, None), "random key": (random_key, chain.admin_cid),
                "unknown credential": (random_key, "pk-000000000000000000000000")}[approval]
    body, sigs = _self_enrolled(chain, key, cid)
    seq = force(chain.ledger, "staff_credential_enrolled", body, sigs)
    expected = {"none": (f"{chain.nurse.staff_id} (Nora Nurse)", "needs the approval of a manager or administrator"),
                "random key": (f"{chain.admin.staff_id} (Avery Admin)", "does not verify"),
                "unknown credential": (f"{chain.admin.staff_id} (Avery Admin)", "is not enrolled")}[approval]
    assert_all_refuse(chain, seq, "staff_credential_enrolled", *expected)


@both
def test_a_signature_copied_from_another_entry_fails_on_its_nonce(chain):
    """The real destruction's signatures, verbatim, on a second destruction of the same vial (so
    the statement names every vial the copy moves): each verifies on its own; the nonce gives it
    away. (On other vials the copy is refused first for the vials its command does not name.)"""
    real = entry(chain.ledger, chain.destroy_seq)
    seq = force(chain.ledger, "stock_destroyed", forged_destruction_body(chain, chain.vials[1:2]), real["signatures"])
    assert_all_refuse(chain, seq, f"reuses the statement nonce of entry {chain.destroy_seq}",
                      "a signature copied from another entry", "Pia Pharmacist")



@both
def test_a_signature_copied_onto_the_next_entry_of_a_multi_entry_command_is_refused(chain):
    """An enrolment writes staff_enrolled and one role_granted per role under one statement: a
    grant of a role the signed command did not ask for, carrying the same signatures, is a copy."""
    ledger = chain.ledger
    services.enroll_staff(ledger, chain.admin, EnrollStaff("Yan Young", "yan", ("nurse",)), approver=chain.manager)
    last = entry(ledger, last_seq(ledger))
    assert last["kind"] == "role_granted"
    seq = force(ledger, "role_granted", {"staff_id": last["staff_id"], "role": "manager"}, last["signatures"])
    assert_all_refuse(chain, seq, f"reuses the statement nonce of entry {seq - 1}")


@both
@pytest.mark.parametrize("change", ["registrant", "meaning", "different commands", "tampered statement"])
def test_a_statement_whose_fields_differ_from_the_entry_fails(chain, change):
    """Signed with the people's own (here: stolen) keys, so every proof verifies; the statements
    say something other than the entry."""
    (pk, pcid), (nk, ncid), (n2k, n2cid) = chain.keys["pharmacist"], chain.keys["nurse"], chain.keys["nurse2"]
    performer = key_sig(chain.pharmacist, "performed", pk, pcid)
    w1 = key_sig(chain.nurse, "witnessed", nk, ncid)
    w2 = key_sig(chain.nurse2, "witnessed", n2k, n2cid)
    if change == "registrant":  # a signature made at another registrant
        w1 = key_sig(chain.nurse, "witnessed", nk, ncid, registrant=DEA2)
        want = f"names registrant {DEA2}"
    elif change == "meaning":  # the witness signed 'witnessed'; the entry says 'performed'
        w1 = dict(w1, meaning="performed")
        want = "means 'witnessed', the entry says 'performed'"
    elif change == "different commands":  # Nora's statement is of another command
        w1 = key_sig(chain.nurse, "witnessed", nk, ncid, command="record_waste", fields={"type": "RecordWaste"})
        want = "signed different commands"
    else:  # the statement edited after signing
        w1 = dict(w1, statement=dict(w1["statement"], command={"type": "DestroyStock", "vial_ids": ["V1-1"]}))
        want = "does not verify"
    seq = force(chain.ledger, "stock_destroyed", forged_destruction_body(chain, chain.vials[2:4]), [performer, w1, w2])
    names = ("Nora Nurse",) if change != "different commands" else ()
    assert_all_refuse(chain, seq, want, *names)


@both
def test_a_revoked_credential_signs_nothing_after_its_revocation(chain):
    ledger = chain.ledger
    n2k, n2cid = chain.keys["nurse2"]
    revoked = cr.revoke_credential(ledger, chain.admin, chain.nurse2.staff_id, n2cid, "phone lost")["seq"]
    from ledger.domain.errors import Forbidden

    with pytest.raises(Forbidden):  # the live server refuses it
        services.destroy_stock(ledger, chain.pharmacist, DestroyStock(
            (chain.vials[2],), "incinerated", "medication room", "expired", an_hour_ago() + timedelta(minutes=5)),
            witnesses=(chain.nurse, chain.nurse2))
    (pk, pcid), (nk, ncid) = chain.keys["pharmacist"], chain.keys["nurse"]
    seq = force(ledger, "stock_destroyed", forged_destruction_body(chain, chain.vials[2:4]),
                [key_sig(chain.pharmacist, "performed", pk, pcid), key_sig(chain.nurse, "witnessed", nk, ncid),
                 key_sig(chain.nurse2, "witnessed", n2k, n2cid)])
    assert_all_refuse(chain, seq, f"{chain.nurse2.staff_id} (Ned Nurse)", f"was revoked at entry {revoked}")


# --- pinning the root credential ------------------------------------------------------------------------


def test_the_root_credential_is_pinned_beside_the_log_keys(chain, db_url, tmp_path):
    shown = cli(tmp_path, "keys", "show", "--registrant", DEA, "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    fp = verify(chain.ledger).staff[DEA].root_fingerprint
    assert f"staff-root {DEA} {fp}" in shown.stdout
    pinned = tmp_path / "pinned.keys"
    pinned.write_text(shown.stdout)
    ok = cli(tmp_path, "verify", "--pinned-keys", pinned, "--db", db_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "the root staff credential is pinned too" in ok.stdout.strip().splitlines()[-1]

    # What `csledger init` prints (no registrant: the file's keys name it), with another root.
    other = ss.fingerprint(ss.PASSWORD_KEY, ss.public_key_text(Ed25519PrivateKey.generate()))
    lines = [ln for ln in shown.stdout.splitlines() if not ln.startswith("staff-root")]
    pinned.write_text("\n".join(lines + [f"staff-root {other}"]) + "\n")
    bad = cli(tmp_path, "verify", "--pinned-keys", pinned, "--db", db_url)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"{DEA} seq {chain.history}: the chain's root staff credential (entry {chain.history}) is {fp}" in bad.stderr
    assert other in bad.stderr
    # A typo in the line pins nothing silently.
    pinned.write_text("\n".join(lines + ["staff-root sha256:abc"]) + "\n")
    typo = cli(tmp_path, "verify", "--pinned-keys", pinned, "--db", db_url)
    assert typo.returncode == 2 and "staff-root" in typo.stderr and "line" in typo.stderr, typo.stderr


def test_a_pinned_root_fails_a_chain_without_credentials(ledger, db_url, tmp_path):
    attach(ledger, settings_for(tmp_path))
    Ops(ledger).receive(1)
    shown = cli(tmp_path, "keys", "show", "--registrant", DEA, "--db", db_url)
    assert "staff-root" not in shown.stdout
    pinned = tmp_path / "pinned.keys"
    fp = ss.fingerprint(ss.PASSWORD_KEY, ss.public_key_text(Ed25519PrivateKey.generate()))
    pinned.write_text(shown.stdout + f"staff-root {fp}\n")
    bad = cli(tmp_path, "verify", "--pinned-keys", pinned, "--db", db_url)
    assert bad.returncode == 1 and "the chain enrols no staff credential" in bad.stderr, bad.stdout + bad.stderr


def test_verify_bundle_holds_the_chain_to_a_pinned_root(chain):
    fp = verify(chain.ledger).staff[DEA].root_fingerprint
    buf = io.BytesIO()
    with chain.ledger.reading() as c:
        export_bundle(c, DEA, buf)
    assert verify_bundle(io.BytesIO(buf.getvalue()), trusted_staff_root=fp).ok
    other = verify_bundle(io.BytesIO(buf.getvalue()), trusted_staff_root="sha256:" + "0" * 64)
    assert not other.ok and other.problem.where == "--staff-root" and fp in str(other.problem)


# --- the checker on its own --------------------------------------------------------------------------------


def test_system_kinds_are_the_kinds_signed_by_nobody():
    assert SYSTEM_KINDS == {k for k, slots in SIGNATURES.items() if slots == ()}


def test_the_checker_names_a_root_that_is_not_an_administrators(chain):
    """Fed by hand: a root credential of a nurse (the first enrolment must be an administrator's)."""
    with chain.ledger.reading() as c:
        rows = c.execute(sa.text("SELECT canonical FROM entries ORDER BY seq")).scalars().all()
    entries = [canon.decode(bytes(r)) for r in rows[:chain.history]]
    key = Ed25519PrivateKey.generate()
    pub = ss.public_key_text(key)
    cid = ss.password_key_credential_id(pub)
    fake = {"registrant": DEA, "seq": chain.history, "kind": "staff_credential_enrolled",
            "staff_id": chain.nurse.staff_id, "credential_id": cid, "method": ss.PASSWORD_KEY, "public_key": pub,
            "fingerprint": ss.fingerprint(ss.PASSWORD_KEY, pub), "replaces": None, "rp_id": None, "origins": [],
            "signatures": [key_sig(chain.nurse, "performed", key, cid, command="enrol_credential")]}
    check = StaffSignatureCheck(DEA)
    problems = check.feed_all([*entries, fake])
    assert len(problems) == 1 and problems[0].seq == chain.history
    assert "must be an administrator's" in str(problems[0]) and "Nora Nurse" in str(problems[0])
    assert check.root_seq is None and check.summary().unsigned_history == chain.history + 1


# --- passkeys: the relying party fixed by the root ---------------------------------------------------------


def passkey_signed(ledger, who: Principal, auth, run):
    """Run a command as ``who`` signing with their passkey: the first call answers with the
    statement and the WebAuthn options (nothing recorded), the second carries the assertion."""
    from ledger.domain.errors import SignatureNeeded

    nonce = ss.new_nonce()
    with pytest.raises(SignatureNeeded) as asked:
        run(replace(who, signer=ss.PasskeySigner(nonce)))
    response = auth.assert_(asked.value.challenge["public_key"])
    return run(replace(who, signer=ss.PasskeySigner(nonce, response)))


@both
def test_passkey_signatures_verify_against_the_relying_party_the_root_fixed(ledger, tmp_path):
    from ledger.integrity import passkeys
    from tests.contract.test_ledger_contract import receipt
    from tests.support.soft_authenticator import SoftAuthenticator

    attach(ledger, settings_for(tmp_path))
    ops = Ops(ledger)
    admin, _, _ = signing(ledger, ops.admin, "admin-pass-2026", None, rp_id="localhost",
                          origins=("http://localhost",))
    auth = SoftAuthenticator(rp_id="localhost", origin="http://localhost")
    challenge = b"registration-challenge-0123456789"
    reg = passkeys.verify_registration(auth.register(passkeys.registration_options(
        rp_id="localhost", rp_name="Clinic", user_id=b"\x02" * 16, user_name="nora", display_name="Nora Nurse",
        challenge=challenge, exclude_credential_ids=[])), challenge=challenge, rp_id="localhost",
        origins=["http://localhost"])
    nonce = ss.new_nonce()
    st = cr.passkey_enrolment_statement(DEA, ops.nurse.staff_id, reg["credential_id"], reg["public_key"], nonce)
    options = passkeys.authentication_options(rp_id="localhost", challenge=passkeys.challenge_for(
        ss.statement_bytes(st)), credential_ids=[passkeys.b64url_decode(reg["credential_id"], "id")])
    cr.enrol_passkey(ledger, ops.nurse, credential_id=reg["credential_id"], public_key=reg["public_key"],
                     possession=ss.PasskeySigner(nonce, auth.assert_(options)), approver=admin)
    cmd = receipt(ops, "INV-PK", containers=2)  # one command, sent twice (its statement must not change)
    res = passkey_signed(ledger, ops.nurse, auth, lambda p: services.receive_stock(ledger, p, cmd))
    seq = res["entries"][0]["seq"]
    assert entry(ledger, seq)["signatures"][0]["auth_method"] == ss.PASSKEY
    for deep in (False, True):
        report = verify(ledger, deep=deep, patient_keys=ops.keys)
        assert report.ok, [str(p) for p in report.problems]
        assert report.staff[DEA].signed_entries == 3  # root, the passkey's enrolment, the receipt
    assert bundle_of(ledger).ok

    # The same assertion on a receipt of other stock: it verifies, but its nonce was used.
    real = entry(ledger, seq)
    forged = force(ledger, "stock_received", dict(real, invoice_number="INV-PK-2"), real["signatures"])
    report = verify(ledger)
    assert [p.seq for p in report.problems] == [forged] and "Nora Nurse" in str(report.problems[0])
