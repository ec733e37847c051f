"""The command line as a user meets it: ``csledger`` run as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

CSLEDGER = [sys.executable, "-m", "api.cli"]


def run(args: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(CSLEDGER + args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}")
    return p


INIT = ["init", "--dea", "AB1234563", "--name", "Calm Waters Ketamine Clinic", "--street", "100 Harbor Way",
        "--city", "Austin", "--state", "TX", "--zip", "78701", "--time-zone", "America/Chicago",
        "--admin-name", "Avery Admin", "--admin-username", "avery"]


def test_init_verify_and_tamper(tmp_path):
    env = {"CSLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"}
    p = run(INIT, tmp_path, env)
    assert "registered AB1234563" in p.stdout
    assert (tmp_path / "env.db").exists()  # the settings library read CSLEDGER_DATABASE_URL
    ok = run(["verify"], tmp_path, env)
    assert "verified 3 entries" in ok.stdout
    assert "(deep)" in run(["verify", "--deep"], tmp_path, env).stdout

    # Someone with full SQL access drops the trigger and edits the bytes: verify names the entry.
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'env.db'}")
    with eng.begin() as c:
        c.exec_driver_sql("DROP TRIGGER entries_no_update")
        c.exec_driver_sql("UPDATE entries SET canonical = CAST(replace(canonical, 'Avery', 'Ivory') AS BLOB) WHERE seq = 1")
    eng.dispose()
    bad = run(["verify"], tmp_path, env, check=False)
    assert bad.returncode == 1
    assert "AB1234563 seq 1" in bad.stderr and "leaf hash" in bad.stderr


def test_db_option_overrides_environment(tmp_path):
    env = {"CSLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"}
    run(INIT + ["--db", f"sqlite:///{tmp_path / 'flag.db'}"], tmp_path, env)
    assert (tmp_path / "flag.db").exists() and not (tmp_path / "env.db").exists()


def test_default_database_is_a_file_in_the_working_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CSLEDGER_DATABASE_URL"}
    p = subprocess.run(CSLEDGER + INIT, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "csledger.db").exists()


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    args = list(INIT)
    args[args.index("AB1234563")] = "AB1234564"
    p = run(args, tmp_path, check=False)
    assert p.returncode == 2
    assert "dea_number: check digit is 4, expected 3" in p.stderr
    assert "Traceback" not in p.stderr


def test_verify_on_missing_schema_is_clear(tmp_path):
    p = run(["verify", "--db", f"sqlite:///{tmp_path / 'nothing.db'}"], tmp_path, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "cannot read the ledger" in p.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_healthz_over_http(tmp_path):
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'srv.db'}"
    proc = subprocess.Popen(CSLEDGER + ["serve", "--db", db, "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(f"server did not start: {proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(0.2)
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok" and body["durability"]["synchronous"] == "2"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_verify_bundle_recomputes_the_accountability_audit(tmp_path):
    """``verify-bundle --audit-from/--audit-to`` exits 0 and prints, per product, the audit
    recomputed from the bundle, equal to the one the database gives for the same period.

    Replaces ``returncode == 0 and "..." in stdout or "audit" in stderr`` in
    ``tests/integrity/test_cli_integrity.py``, which ``and`` binds tighter than ``or``, so it
    passed whenever stderr named the audit: a failed audit passed it.

    Deliberate break tried (reverted at once): ``verify_bundle`` in ``ledger/services/bundle.py``
    raising in place of ``accountability(...)``, so the CLI prints "FAIL audit: the
    accountability audit could not be computed" and exits 1. This test failed on the exit code;
    ``test_cli_integrity.py::test_keys_export_verify_bundle_and_entry_proof`` still passed.
    """
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from ledger import services
    from ledger.domain.commands import TakeInventory
    from ledger.services.audit import audit_days
    from ledger.storage.log import attach
    from ledger.storage.store import Ledger, make_engine, migrate
    from tests.conftest import Clinic, clinic_today, count_as_booked
    from tests.contract.test_ledger_contract import receipt

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    env = {"CSLEDGER_DATABASE_URL": db, "CSLEDGER_KEY_DIR": str(tmp_path / "keys"),
           "CSLEDGER_ORIGIN_PREFIX": "ledger.calmwaters.test"}
    engine = make_engine(db)
    migrate(engine)
    ledger = Ledger(engine)
    attach(ledger, SimpleNamespace(key_dir=tmp_path / "keys", origin_prefix="ledger.calmwaters.test", log_keys=""))
    clinic = Clinic(ledger)
    # One period rule (issue 20): local days, and the audit runs between two counts: the
    # (empty) initial inventory begins the records, a count after the receipts ends the window.
    opened = datetime.now(UTC) - timedelta(hours=2)
    services.take_inventory(ledger, clinic.pharmacist, TakeInventory("initial", "opening_of_business", opened, ()),
                            witness=clinic.nurse)
    for i in range(2):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, invoice=f"AUD-{i}"))
    count_as_booked(ledger, clinic.nurse, clinic.nurse2)
    first, last = clinic_today(opened), clinic_today()
    expected = audit_days(ledger, clinic.dea, first, last)
    ledger.dispose()
    assert expected["products"], "the period should hold the receipts"
    start, end = expected["start"], expected["end"]

    vkey = run(["keys", "show", "--registrant", clinic.dea], tmp_path, env).stdout.splitlines()[1].strip()
    run(["export", "--registrant", clinic.dea, "--out", "ab.bundle"], tmp_path, env)
    p = run(["verify-bundle", "ab.bundle", "--log-key", vkey, "--audit-from", first.isoformat(),
             "--audit-to", last.isoformat()], tmp_path, env, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    out = p.stdout.splitlines()
    header = f"accountability audit {start} .. {end} (recomputed from the bundle):"
    assert header in out, p.stdout
    w = expected["window"]
    assert out[out.index(header) + 1] == (f"  days asked {first} to {last} (America/Chicago); window from entry "
                                          f"{w['begin']['seq']} to entry {w['end']['seq']}"), p.stdout
    printed = out[out.index(header) + 2:]
    want = [f"  {q['ndc']} {q['name']}: to account for {q['ml']['to_account_for']} mL, accounted for "
            f"{q['ml']['accounted_for']} mL, difference {q['ml']['difference']} mL ({q['variance_percent']} %)"
            f"{' FLAGGED' if q['flagged'] else ''}" for q in expected["products"]]
    assert printed[:len(want)] == want, (printed, want)
