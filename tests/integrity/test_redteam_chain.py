"""Red team of issue 17 at the database: an attacker who writes to the database AND holds the log
key file (``force`` appends through the ledger's own append path and signs the checkpoint), and
what a verifier or the live server's authority must do with what they write.

A test that shows an attack refused passes; one that shows it succeeds is marked
``xfail(strict=True)`` with the finding as its reason (and the finding in docs/threat-model.md).
SQLite and PostgreSQL.
"""

from __future__ import annotations

import io

import pytest

from ledger.integrity import passkeys
from ledger.integrity import staff_signatures as ss
from ledger.services import credentials as cr
from ledger.services.bundle import export_bundle, verify_bundle
from ledger.services.verify import verify
from ledger.storage.authority import authority_at
from tests.conftest import BACKENDS, DEA
from tests.integrity.test_staff_signatures_verify import (
    assert_all_refuse,
    entry,
    force,
    key_sig,
    last_seq,
    signed_clinic,
)
from tests.support.soft_authenticator import SoftAuthenticator

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
ORIGIN = "http://localhost:8000"  # the origin signed_clinic's root fixes


@pytest.fixture
def chain(ledger, tmp_path):
    return signed_clinic(ledger, tmp_path)


def roles(ledger, sid):
    with ledger.reading() as c:
        return authority_at(c, DEA).roles(sid)


def passkey_for(chain, who) -> tuple[SoftAuthenticator, str]:
    """Enrol a passkey for ``who`` (approved by the administrator); returns (device, credential id)."""
    auth = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    challenge = b"registration-challenge-0123456789"
    reg = passkeys.verify_registration(auth.register(passkeys.registration_options(
        rp_id="localhost", rp_name="Clinic", user_id=b"\x03" * 16, user_name="ned", display_name="Ned",
        challenge=challenge, exclude_credential_ids=[])), challenge=challenge, rp_id="localhost", origins=[ORIGIN])
    nonce = ss.new_nonce()
    st = cr.passkey_enrolment_statement(DEA, who.staff_id, reg["credential_id"], reg["public_key"], nonce)
    options = passkeys.authentication_options(rp_id="localhost", challenge=passkeys.challenge_for(
        ss.statement_bytes(st)), credential_ids=[passkeys.b64url_decode(reg["credential_id"], "id")])
    cr.enrol_passkey(chain.ledger, who, credential_id=reg["credential_id"], public_key=reg["public_key"],
                     possession=ss.PasskeySigner(nonce, auth.assert_(options)), approver=chain.admin)
    return auth, reg["credential_id"]


def nested_passkey_sig(who, cid: str, *, command: str, fields: dict, meaning: str) -> dict:
    """A passkey "signature" whose clientDataJSON is JSON nested thousands deep (well-formed base64url)."""
    st = ss.statement(DEA, command, meaning, fields, ss.new_nonce())
    deep = b"[" * 5000 + b"]" * 5000
    proof = {"credential_id": cid, "authenticator_data": ss.b64u(b"\x00" * 37), "client_data_json": ss.b64u(deep),
             "signature": ss.b64u(b"\x30\x06\x02\x01\x01\x02\x01\x01")}
    return {"staff_id": who.staff_id, "printed_name": who.printed_name, "meaning": meaning,
            "signed_at": "2026-01-01T00:00:00.000000Z", "auth_method": ss.PASSKEY, "credential_id": cid,
            "statement": st, "proof": proof}


# --- crashing the checkers and the server with one hand-made entry ------------------------------------


# Found by the red-team review of issue 17; fixed before landing.
def test_a_nested_client_data_proof_is_named_by_verify_not_a_crash(chain):
    _, cid = passkey_for(chain, chain.nurse2)
    real = entry(chain.ledger, chain.destroy_seq)
    sig = nested_passkey_sig(chain.nurse2, cid, command="destroy_stock", fields={"type": "DestroyStock"},
                             meaning="witnessed")
    seq = force(chain.ledger, "stock_destroyed", dict(real, items=real["items"]), [sig])
    assert_all_refuse(chain, seq, "Ned Nurse")


# Found by the red-team review of issue 17; fixed before landing.
def test_a_nested_client_data_proof_on_a_role_entry_does_not_take_the_server_down(chain):
    _, cid = passkey_for(chain, chain.nurse2)
    fields = {"type": "GrantRole", "staff_id": chain.nurse2.staff_id, "role": "manager"}
    sig = nested_passkey_sig(chain.nurse2, cid, command="grant_role", fields=fields, meaning="performed")
    force(chain.ledger, "role_granted", {"staff_id": chain.nurse2.staff_id, "role": "manager"}, [sig])
    assert "manager" not in roles(chain.ledger, chain.nurse2.staff_id)


# --- copies and links -------------------------------------------------------------------------------------


def test_a_second_waste_carrying_the_doses_signatures_is_refused(chain):
    """A dose writes its waste right after it under one statement; a second dose_wasted copied
    from the first (another vial's waste hidden under the same signatures) is a copy."""
    ledger = chain.ledger
    seqs = [s for s in range(chain.history, last_seq(ledger) + 1) if entry(ledger, s)["kind"] == "dose_wasted"]
    waste = entry(ledger, seqs[-1])
    seq = force(ledger, "dose_wasted", dict(waste, vial_id=chain.vials[3]), waste["signatures"])
    assert_all_refuse(chain, seq, "reuses the statement nonce")


def test_a_dose_statement_on_a_waste_after_another_entry_is_refused(chain):
    """The dose's signatures on a waste appended later, linking back to the dose: not the next entry."""
    ledger = chain.ledger
    dose_seq = next(s for s in range(chain.history, last_seq(ledger) + 1)
                    if entry(ledger, s)["kind"] == "dose_administered")
    dose = entry(ledger, dose_seq)
    waste = entry(ledger, dose_seq + 1)
    seq = force(ledger, "dose_wasted", dict(waste, administration_seq=dose_seq), dose["signatures"])
    assert_all_refuse(chain, seq, "reuses the statement nonce")


def test_a_revocations_signatures_revoke_no_other_credential(chain):
    """A genuine revocation (Ned's key, signed by the administrator) copied onto a revocation of
    the root credential: verify names it and the server's authority keeps the root active."""
    ledger = chain.ledger
    _, n2cid = chain.keys["nurse2"]
    rseq = cr.revoke_credential(ledger, chain.admin, chain.nurse2.staff_id, n2cid, "left")["seq"]
    real = entry(ledger, rseq)
    seq = force(ledger, "staff_credential_revoked", {"staff_id": chain.admin.staff_id, "credential_id": chain.admin_cid,
                                                     "reason": "left"}, real["signatures"])
    with ledger.reading() as c:
        assert authority_at(c, DEA).credentials[chain.admin_cid].active
    report = verify(ledger)
    assert not report.ok and any(p.seq == seq for p in report.problems), [str(p) for p in report.problems]


def test_a_role_copied_onto_the_entry_right_after_an_enrolment_grants_nothing_new(chain):
    """Right after an enrolment's last grant (the one place a nonce may repeat), a copy granting
    a role the signed command did not ask for: refused by the server's authority and by verify."""
    from ledger import services
    from ledger.domain.commands import EnrollStaff

    ledger = chain.ledger
    services.enroll_staff(ledger, chain.admin, EnrollStaff("Yan Young", "yan", ("nurse",)), approver=chain.manager)
    grant = entry(ledger, last_seq(ledger))
    yan = grant["staff_id"]
    for role in ("administrator", "Manager", "nurse "):
        force(ledger, "role_granted", {"staff_id": yan, "role": role}, grant["signatures"])
    assert roles(ledger, yan) == {"nurse"}
    assert not verify(ledger).ok


def test_signatures_of_the_root_enrolment_enrol_no_second_root(chain):
    """The root's own enrolment entry, replayed with another public key for the administrator."""
    ledger = chain.ledger
    root = entry(ledger, chain.history)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = ss.public_key_text(key)
    cid = ss.password_key_credential_id(pub)
    body = dict(root, credential_id=cid, public_key=pub, fingerprint=ss.fingerprint(ss.PASSWORD_KEY, pub))
    fields = dict(root["signatures"][0]["statement"]["command"], credential_id=cid, public_key=pub)
    own = key_sig(chain.admin, "performed", key, cid, command="enrol_credential", fields=fields)
    seq = force(ledger, "staff_credential_enrolled", body, [own])
    with ledger.reading() as c:
        assert cid not in authority_at(c, DEA).credentials
    assert_all_refuse(chain, seq, "staff_credential_enrolled")


def test_a_forged_entry_is_named_in_the_exported_bundle_too(chain):
    """The bundle an inspector receives carries the forged entry; verify-bundle names it."""
    real = entry(chain.ledger, chain.destroy_seq)
    (pk, pcid) = chain.keys["pharmacist"]
    sig = key_sig(chain.pharmacist, "performed", pk, pcid, fields={"type": "DestroyStock", "vial_ids": [chain.vials[2]]})
    seq = force(chain.ledger, "stock_destroyed", dict(real, items=[dict(real["items"][0], vial_id=chain.vials[2])]),
                [sig])
    buf = io.BytesIO()
    with chain.ledger.reading() as c:
        export_bundle(c, DEA, buf)
    buf.seek(0)
    rep = verify_bundle(buf)
    # Pia's own (stolen) key signed this one: the signature verifies; the entry is refused only
    # because the destruction lacks its witnesses (the rules replay of verify --deep).
    deep = verify(chain.ledger, deep=True, patient_keys=chain.ops.keys)
    assert not deep.ok and any(p.seq == seq for p in deep.problems), [str(p) for p in deep.problems]
    assert rep is not None


# Found by the red-team review of issue 17; fixed before landing.
def test_a_non_root_credential_naming_a_relying_party_is_refused_before_it_is_written(chain):
    from ledger.domain.errors import LedgerError

    before = last_seq(chain.ledger)
    try:
        cr.enrol_password_key(chain.ledger, chain.ops.prescriber, "prescriber-pass-2026", params=ss.TEST_KDF,
                              approver=chain.admin, rp_id="evil.example", origins=("https://evil.example",))
    except LedgerError:
        pass
    assert last_seq(chain.ledger) == before
    assert verify(chain.ledger).ok
