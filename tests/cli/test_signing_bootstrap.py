"""Issue 17 at the console: ``init`` and ``staff set-password`` enrol the registrant's root signing
key, and ``csledger demo`` signs every entry after the root with its people's own keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import sqlalchemy as sa

from tests.cli.test_cli import CSLEDGER, INIT

PASSWORD = "correct horse battery 42"
ROOT_LINE = re.compile(r"^staff-root (sha256:[0-9a-f]{64})$", re.M)


def run(args: list[str], cwd: Path, *, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(CSLEDGER + args, cwd=cwd, capture_output=True, text=True, env=dict(os.environ), input=input,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}")
    return p


def _entries(db: str, registrant: str = "AB1234563") -> list[dict]:
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            blobs = c.execute(sa.text("SELECT canonical FROM entries WHERE registrant = :r ORDER BY seq"),
                              {"r": registrant}).scalars().all()
    finally:
        eng.dispose()
    return [json.loads(bytes(b)) for b in blobs]


def _signing_records(db: str) -> dict[tuple[str, str], dict]:
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            rows = c.execute(sa.text("SELECT registrant, staff_id, signing_key FROM staff_credentials")).all()
    finally:
        eng.dispose()
    return {(r, s): json.loads(k) for r, s, k in rows if k}


def _is_staff_signed(sig: dict) -> bool:
    return (sig.get("auth_method") == "password_key" and isinstance(sig.get("credential_id"), str)
            and isinstance(sig.get("statement"), dict) and isinstance(sig.get("proof"), dict))


def test_init_with_admin_password_enrols_the_root(tmp_path):
    from ledger.integrity.staff_signatures import open_key

    db = f"sqlite:///{tmp_path / 'i.db'}"
    # A refused password records nothing: no registrant left without its root.
    bad = run(INIT + ["--db", db, "--admin-password-stdin"], tmp_path, check=False, input="avery avery avery 1\n")
    assert bad.returncode == 2 and "admin_password" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "i.db").exists()

    p = run(INIT + ["--db", db, "--admin-password-stdin", "--rp-id", "clinic.example",
                    "--origin", "https://clinic.example"], tmp_path, input=PASSWORD + "\n")
    assert "registered AB1234563" in p.stdout and "TOTP secret" in p.stdout
    fingerprint = ROOT_LINE.search(p.stdout).group(1)
    assert PASSWORD not in p.stdout + p.stderr
    entries = _entries(db)
    assert [e["kind"] for e in entries] == ["registrant_registered", "staff_enrolled", "role_granted",
                                            "staff_credential_enrolled", "report_key_certified"]
    root = entries[3]
    assert root["fingerprint"] == fingerprint and root["staff_id"] == "S1" and root["method"] == "password_key"
    assert root["rp_id"] == "clinic.example" and root["origins"] == ["https://clinic.example"]
    assert len(root["signatures"]) == 1 and _is_staff_signed(root["signatures"][0])
    # The login holds the root key, wrapped under the administrator's password.
    record = _signing_records(db)[("AB1234563", "S1")]
    assert record["credential_id"] == root["credential_id"] and open_key(record, PASSWORD) is not None
    # The first report key (issue 18), certified by the administrator's new root key, so the first
    # report is signed; its key file is private, in the key folder.
    certified = entries[4]
    assert certified["signatures"][0]["staff_id"] == "S1" and _is_staff_signed(certified["signatures"][0])
    assert f"report key certified (entry 4): {certified['fingerprint']}" in p.stdout
    assert (tmp_path / "csledger-keys" / "AB1234563-report.key").stat().st_mode & 0o777 == 0o600
    assert "verified 5 entries" in run(["verify", "--deep", "--db", db], tmp_path).stdout


def test_init_defaults_fix_the_local_relying_party(tmp_path):
    db = f"sqlite:///{tmp_path / 'i.db'}"
    run(INIT + ["--db", db, "--admin-password-stdin"], tmp_path, input=PASSWORD + "\n")
    root = _entries(db)[3]
    assert root["rp_id"] == "localhost"
    assert root["origins"] == ["http://localhost:8000", "http://127.0.0.1:8000"]


def test_set_password_enrols_the_root_when_none_exists(tmp_path):
    from api.http.auth_store import AuthStore
    from ledger import services
    from ledger.domain.commands import EnrollStaff
    from ledger.domain.principal import AuthMethod, Principal
    from ledger.integrity.staff_signatures import PasswordKeySigner, open_key
    from ledger.storage.store import Ledger

    db = f"sqlite:///{tmp_path / 's.db'}"
    p = run(INIT + ["--db", db], tmp_path)
    assert "staff set-password --dea AB1234563 --username avery" in p.stdout
    assert len(_entries(db)) == 3  # no root yet
    setpw = ["staff", "set-password", "--dea", "AB1234563", "--password-stdin", "--db", db]

    # A temporary password does not wrap the root.
    p = run(setpw + ["--username", "avery", "--must-change"], tmp_path, input=PASSWORD + "\n")
    assert "no root signing key yet" in p.stdout and not ROOT_LINE.search(p.stdout)
    assert len(_entries(db)) == 3

    p = run(setpw + ["--username", "avery"], tmp_path, input=PASSWORD + "\n")
    fingerprint = ROOT_LINE.search(p.stdout).group(1)
    entries = _entries(db)
    assert entries[3]["kind"] == "staff_credential_enrolled" and entries[3]["fingerprint"] == fingerprint
    assert entries[3]["rp_id"] == "localhost"
    # With the root, the first report key (issue 18), certified by it.
    assert entries[4]["kind"] == "report_key_certified" and entries[4]["signatures"][0]["staff_id"] == "S1"
    assert "report key certified (entry 4)" in p.stdout

    # Once the root exists, set-password enrols nothing more, and keeps a key that still opens.
    p = run(setpw + ["--username", "avery"], tmp_path, input=PASSWORD + "\n")
    assert not ROOT_LINE.search(p.stdout) and "holds no signing key" not in p.stdout
    assert len(_entries(db)) == 5

    # Someone else: just the password; their key comes at sign-in with a manager's approval.
    ledger = Ledger.open(db)
    try:
        record = AuthStore.signing_record(AuthStore(ledger).credential("AB1234563", "S1"))
        admin = Principal("AB1234563", "S1", "Avery Admin", AuthMethod.PASSWORD_TOTP,
                          signer=PasswordKeySigner(open_key(record, PASSWORD), record["credential_id"]))
        services.enroll_staff(ledger, admin, EnrollStaff("Nora Nurse", "nora", ["nurse"]))
    finally:
        ledger.dispose()
    p = run(setpw + ["--username", "nora"], tmp_path, input="quiet river stone 7\n")
    assert "password set for nora" in p.stdout and not ROOT_LINE.search(p.stdout)
    assert "/v1/registrants/AB1234563/me/signing-key" in p.stdout
    assert [e["kind"] for e in _entries(db)][-1] == "role_granted"  # the console enrolled no key for nora


def test_demo_signs_every_entry_after_the_root(tmp_path):
    from api.cli.demo import DEMO_PASSWORD
    from ledger.integrity.staff_signatures import open_key

    db = f"sqlite:///{tmp_path / 'demo.db'}"
    run(["demo", "--db", db], tmp_path)
    for dea in ("AB1234563", "FB7654329"):
        entries = _entries(db, dea)
        # The demo's registration is its own (seq 0 signed demo_seed), then Avery's root at once.
        assert all(e["signatures"][0]["auth_method"] == "demo_seed" for e in entries[:3])
        root = entries[3]
        assert root["kind"] == "staff_credential_enrolled" and root["staff_id"] == entries[1]["staff_id"]
        keys = {e["credential_id"]: e["staff_id"] for e in entries if e["kind"] == "staff_credential_enrolled"}
        assert len(keys) == 7 and len(set(keys.values())) == 7
        signed = 0
        for e in entries[3:]:
            if e["kind"] == "alert_raised":  # written by the system's rules, signed by nobody
                continue
            assert e["signatures"], e["seq"]
            for sig in e["signatures"]:
                assert _is_staff_signed(sig), (e["seq"], e["kind"], sig)
                assert keys[sig["credential_id"]] == sig["staff_id"]
                signed += 1
        assert signed > 300
        # Every key but the root was approved by the administrator.
        for e in entries[4:]:
            if e["kind"] == "staff_credential_enrolled":
                assert [s["meaning"] for s in e["signatures"]] == ["performed", "approved"]
                assert e["signatures"][1]["staff_id"] == root["staff_id"]

    # The logins hold the same keys, and `staff demo-logins` (same password again) keeps them.
    before = _signing_records(db)
    assert len(before) == 14
    p = run(["staff", "demo-logins", "--db", db], tmp_path)
    assert "AB1234563 nora" in p.stdout
    after = _signing_records(db)
    assert after == before
    for (dea, sid), record in after.items():
        assert open_key(record, DEMO_PASSWORD) is not None
        enrolled = [e for e in _entries(db, dea) if e["kind"] == "staff_credential_enrolled"
                    and e["credential_id"] == record["credential_id"]]
        assert enrolled and enrolled[0]["staff_id"] == sid and enrolled[0]["public_key"] == record["public_key"]


def test_only_a_registrant_the_demo_registered_may_step_its_clock_back(tmp_path):
    """The demo's script clock steps back; its seq 0 (``demo_seed``) exempts it from
    ``recorded-at-order`` even though its people sign with password keys. A registrant made by
    ``init`` whose signed entries go back in time still fails the replay."""
    from datetime import UTC, datetime, timedelta

    from ledger import services
    from ledger.domain.commands import AddressInput, EnrollStaff, RegisterRegistrant
    from ledger.domain.principal import AuthMethod, Principal
    from ledger.integrity.staff_signatures import TEST_KDF, PasswordKeySigner
    from ledger.services.credentials import enrol_password_key
    from ledger.services.verify import verify
    from ledger.storage.store import Ledger, migrate

    for method, ok in ((AuthMethod.DEMO_SEED, True), (AuthMethod.CONSOLE_BOOTSTRAP, False)):
        now = [datetime(2026, 9, 1, 12, 0, tzinfo=UTC)]
        ledger = Ledger.open(f"sqlite:///{tmp_path / f'{method.value}.db'}", clock=lambda now=now: now[0])
        try:
            migrate(ledger.engine)
            res = services.register_registrant(ledger, RegisterRegistrant(
                "AB1234563", "Calm Waters", AddressInput("1 A St", "Austin", "TX", "78701"), "America/Chicago",
                "Avery Admin", "avery"), bootstrap_method=method)
            admin = Principal("AB1234563", res["admin_staff_id"], "Avery Admin", method)
            enrolled, _, key = enrol_password_key(ledger, admin, PASSWORD, params=TEST_KDF, rp_id="localhost")
            admin = Principal("AB1234563", admin.staff_id, "Avery Admin", method,
                              signer=PasswordKeySigner(key, enrolled["credential_id"]))
            now[0] += timedelta(hours=3)
            services.enroll_staff(ledger, admin, EnrollStaff("Nora Nurse", "nora", ["nurse"]))
            now[0] -= timedelta(hours=2)  # the script's clock (or a server's) set back
            services.enroll_staff(ledger, admin, EnrollStaff("Ned Nurse", "ned", ["nurse"]))
            problems = [str(p) for p in verify(ledger, deep=True).problems]
        finally:
            ledger.dispose()
        order = [p for p in problems if "recorded-at-order" in p]
        assert (order == []) if ok else order, (method, problems)
