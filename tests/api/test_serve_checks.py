"""The server checks before it writes (issue 16).

``csledger serve`` checks each chain's tail against its latest signed checkpoint and the stored
Merkle nodes at start. A ledger tampered with while the server was down (an entry slipped in by
hand after the last checkpoint, a Merkle node changed) is served read-only for that registrant:
an append answers 503 ``chain-unverified`` naming the registrant and the failure, nothing is
written, reads still work and ``/healthz`` says which registrant is refused and why. The same
ledger untouched starts and appends normally. Served as a subprocess on SQLite and PostgreSQL.

The periodic background verify is exercised in-process (``ChainGuard.verify_once``): a failure
refuses appends at once; once the chain is repaired the refusal lifts and the incident is
recorded as a ``chain_unverified`` alert in the registrant's own chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pyotp
import pytest
import sqlalchemy as sa

from ledger import services
from ledger.integrity import canonical as canon
from ledger.integrity import merkle
from ledger.services.startup_check import ChainGuard
from ledger.services.verify import verify
from ledger.storage.log import ChainUnverified, attach
from ledger.storage.store import Ledger, entries_t, make_engine
from tests.cli.test_cli import CSLEDGER, INIT, _free_port, run
from tests.conftest import BACKENDS, DEA, Clinic, fresh_database_url
from tests.contract.test_ledger_contract import receipt
from tests.integrity.conftest import settings_for

PASSWORD = "four quiet harbor lamps"
PROBLEM_BASE = "https://csledger.local/problems/"


@pytest.fixture(params=BACKENDS)
def served_db(request, tmp_path) -> Iterator[str]:
    yield from fresh_database_url(request.param, tmp_path)


def drop_triggers(engine: sa.Engine, tables: tuple[str, ...]) -> None:
    with engine.begin() as c:
        for t in tables:
            if engine.dialect.name == "sqlite":
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_update")
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_delete")
            else:
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}")


def entry_count(engine: sa.Engine) -> int:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT COUNT(*) FROM entries WHERE registrant = :r"), {"r": DEA}).scalar()


def hand_appended_entry(engine: sa.Engine) -> str:
    """An INSERT after the last checkpoint (no trigger stops an insert): the last entry's bytes
    under the next seq, linked to it, with a made-up leaf hash."""
    with engine.begin() as c:
        last = c.execute(sa.select(entries_t).where(entries_t.c.registrant == DEA)
                         .order_by(entries_t.c.seq.desc()).limit(1)).mappings().one()
        seq = last["seq"] + 1
        c.execute(sa.insert(entries_t).values(**dict(last, seq=seq, prev_hash=last["leaf_hash"], leaf_hash="00" * 32,
                                                     command_id="by-hand")))
    return f"seq {seq}: canonical bytes do not hash to the stored leaf hash"


def merkle_node_changed(engine: sa.Engine) -> str:
    """The first perfect node the signed root is folded from, replaced (triggers dropped)."""
    n = entry_count(engine)
    level, idx = merkle.perfect_nodes(0, n)[0]
    drop_triggers(engine, ("merkle_nodes",))
    with engine.begin() as c:
        c.execute(sa.text("UPDATE merkle_nodes SET hash = :h WHERE registrant = :r AND level = :l AND idx = :i"),
                  {"h": hashlib.sha256(b"another subtree").digest(), "r": DEA, "l": level, "i": idx})
    return f"the root of the stored Merkle nodes at size {n} differs from the signed checkpoint's root"


@contextlib.contextmanager
def serving(tmp_path, db: str, env: dict) -> Iterator[tuple[str, list[str]]]:
    """``csledger serve`` as a subprocess; yields its base URL and (after exit) its output."""
    port = _free_port()
    proc = subprocess.Popen(CSLEDGER + ["serve", "--db", db, "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})
    root = f"http://127.0.0.1:{port}"
    output: list[str] = []
    try:
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(f"{root}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(f"server did not start: {proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(0.2)
        yield root, output
    finally:
        proc.terminate()
        output.append(proc.communicate(timeout=20)[0])


@pytest.mark.parametrize("tamper", [hand_appended_entry, merkle_node_changed], ids=lambda f: f.__name__)
def test_tampered_chain_is_served_read_only_and_healthz_says_why(tmp_path, served_db, tamper):
    db = served_db
    env = {"CSLEDGER_KEY_DIR": str(tmp_path / "keys"), "CSLEDGER_VERIFY_INTERVAL_MINUTES": "0"}
    run(INIT + ["--db", db], tmp_path, env)
    p = subprocess.run(CSLEDGER + ["staff", "set-password", "--dea", DEA, "--username", "avery", "--password-stdin",
                                   "--db", db], input=PASSWORD + "\n", capture_output=True, text=True, cwd=tmp_path,
                       timeout=120, env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    secret = re.search(r"TOTP secret \(shown once; add it to an authenticator app\): ([A-Z2-7]+)", p.stdout).group(1)
    engine = make_engine(db)
    try:
        # Untouched: the server starts, reports nothing refused and appends normally.
        with serving(tmp_path, db, env) as (root, _):
            base = f"{root}/v1/registrants/{DEA}"
            health = httpx.get(f"{root}/healthz").json()
            assert health["status"] == "ok" and health["refused"] == {}, health
            r = httpx.post(f"{base}/sessions", json={"username": "avery", "password": PASSWORD,
                                                     "totp": pyotp.TOTP(secret).now()})
            assert r.status_code == 201, r.text
            h = {"Authorization": f"Bearer {r.json()['access_token']}"}  # sessions outlive a restart
            r = httpx.post(f"{base}/staff", headers={**h, "Idempotency-Key": "enroll-nora"},
                           json={"printed_name": "Nora Nurse", "username": "nora", "roles": ["nurse"]})
            assert r.status_code == 201, r.text

        says = tamper(engine)
        before = entry_count(engine)
        with serving(tmp_path, db, env) as (root, output):
            base = f"{root}/v1/registrants/{DEA}"
            r = httpx.post(f"{base}/staff", headers={**h, "Idempotency-Key": "enroll-nina"},
                           json={"printed_name": "Nina Nurse", "username": "nina", "roles": ["nurse"]})
            assert r.status_code == 503, r.text
            problem = r.json()
            assert r.headers["content-type"].startswith("application/problem+json")
            assert problem["type"] == PROBLEM_BASE + "chain-unverified"
            assert DEA in problem["detail"] and says in problem["detail"], problem
            assert problem["errors"][0]["field"] == "registrant"
            assert entry_count(engine) == before  # nothing was written
            # Reads still work.
            assert httpx.get(f"{base}/me", headers=h).status_code == 200
            assert httpx.get(f"{base}/checkpoint").status_code == 200
            health = httpx.get(f"{root}/healthz").json()
            assert health["status"] == "degraded"
            assert health["refused"][DEA]["problem"] == "chain-unverified"
            assert says in health["refused"][DEA]["reason"], health
        assert f"{DEA}: appends refused: start-up check: {says}" in output[0], output[0]
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_periodic_verify_refuses_then_records_the_alert_once_repaired(ledger, db_url, tmp_path):
    log = attach(ledger, settings_for(tmp_path))
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    guard = ChainGuard(ledger, log)
    assert guard.startup() == {} and guard.verify_once() == {} and log.refused() == {}

    says = hand_appended_entry(ledger.engine)
    found = guard.verify_once()
    assert "canonical bytes do not hash to the stored leaf hash" in found[DEA]
    assert log.refused()[DEA]["problem"] == "chain-unverified"
    before = entry_count(ledger.engine)
    with pytest.raises(ChainUnverified) as refused:
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))
    assert refused.value.field == "registrant" and DEA in str(refused.value)
    assert entry_count(ledger.engine) == before
    assert guard.verify_once() == found  # still broken: refused once, logged once, no alert
    assert len(guard.failed) == 1

    drop_triggers(ledger.engine, ("entries",))  # the operator removes the row slipped in
    with ledger.engine.begin() as c:
        c.execute(sa.text("DELETE FROM entries WHERE registrant = :r AND command_id = 'by-hand'"), {"r": DEA})
    assert guard.verify_once() == {} and log.refused() == {}
    with ledger.reading() as c:
        alerts = [canon.decode(bytes(b)) for (b,) in c.execute(sa.text(
            "SELECT canonical FROM entries WHERE registrant = :r AND kind = 'alert_raised'"), {"r": DEA})]
    [alert] = [a for a in alerts if a["rule"] == "chain_unverified"]
    assert alert["severity"] == "critical" and "canonical bytes do not hash" in alert["summary"]
    assert alert["figures"]["failed_at"] <= alert["figures"]["verified_again_at"]
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-3"))  # appends resume
    assert says  # (the reason the hand-appended entry gives at start-up; see the served test)


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_well_formed_entry_after_the_last_checkpoint_is_refused(ledger, db_url, tmp_path):
    """A careful writer appends a real, well-hashed entry with its Merkle nodes but cannot sign:
    the fast verify passes (the last checkpoint is a consistent prefix), and the next signed
    append would vouch for it. The start-up check refuses the registrant instead."""
    log = attach(ledger, settings_for(tmp_path))
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    size = entry_count(ledger.engine)
    unsigned = Ledger(ledger.engine)  # the ledger without its signing hook
    services.receive_stock(unsigned, clinic.nurse, receipt(clinic, "INV-SLIPPED-IN"))
    assert verify(ledger).ok
    guard = ChainGuard(ledger, log)
    found = guard.startup()
    assert found[DEA] == (f"start-up check: entries {size}..{size} come after the last signed checkpoint (size "
                          f"{size}): each append signs its checkpoint in its own transaction, so they were written "
                          "outside the ledger")
    before = entry_count(ledger.engine)
    with pytest.raises(ChainUnverified):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))
    assert entry_count(ledger.engine) == before
    assert guard.verify_once() == {DEA: found[DEA].replace("start-up check: ", "")}  # still refused
