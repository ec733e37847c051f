"""Backups restore into a fresh database and verify with the same roots, on both backends."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from ledger import services
from ledger.storage.store import Ledger, make_engine, migrate
from tests.cli.test_cli import run
from tests.conftest import Clinic, fresh_database_url
from tests.contract.test_ledger_contract import receipt


def _roots(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w{9}): \d+ entries, root ([0-9a-f]{64})$", text, re.M))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_backup_and_restore_round_trip(backend, tmp_path):
    src_gen = fresh_database_url(backend, tmp_path / "src")
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = next(src_gen)
    dst_gen = fresh_database_url(backend, tmp_path / "dst")
    dst = next(dst_gen)
    try:
        lg = Ledger(make_engine(src))
        migrate(lg.engine)
        c = Clinic(lg)
        for i in range(5):
            services.receive_stock(lg, c.nurse, receipt(c, f"INV-{i}"))
        lg.dispose()
        b = run(["backup", "--db", src, "--out", str(tmp_path / "ledger.backup")], tmp_path)
        before = _roots(b.stdout)
        assert before and len(before) == 1
        r = run(["restore", "--db", dst, "--from", str(tmp_path / "ledger.backup")], tmp_path)
        assert _roots(r.stdout) == before
        v = run(["verify", "--deep", "--db", dst], tmp_path)
        assert _roots(v.stdout.replace("ok ", "")) == before
        # A backup never overwrites, and a restore never lands on an existing ledger.
        again = run(["backup", "--db", src, "--out", str(tmp_path / "ledger.backup")], tmp_path, check=False)
        assert again.returncode == 2 and "never overwrites" in again.stderr
        over = run(["restore", "--db", dst, "--from", str(tmp_path / "ledger.backup")], tmp_path, check=False)
        assert over.returncode == 2 and "restore only into" in over.stderr
    finally:
        next(dst_gen, None)
        next(src_gen, None)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_an_older_backup_restored_is_caught_by_the_witness_and_appends_are_refused(backend, tmp_path):
    """Last night's ``csledger backup`` restored after today's entries were witnessed: the
    restored ledger verifies on its own (it is a true, older ledger), but ``csledger serve``
    warns at start, refuses every append with ``rollback-detected``, and ``csledger witnesses
    push`` fails, because the witness already cosigned a larger tree."""
    import httpx

    from bench.loadtest import PASSWORD, ServerProcess
    from tests.robustness.test_server_crash import set_up

    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src_gen, dst_gen = fresh_database_url(backend, tmp_path / "src"), fresh_database_url(backend, tmp_path / "dst")
    src, dst = next(src_gen), next(dst_gen)
    net, witness = None, None
    try:
        net, witness, origins, _ = set_up(src, tmp_path / "work", clinics=1)
        env = {k: v for k, v in net.server_env().items() if k.startswith("CSLEDGER_")}
        clinic = net.clinics[0]
        run(["backup", "--db", src, "--out", str(tmp_path / "last-night.backup")], tmp_path, env)

        def receipt(base: str, token: str, invoice: str) -> httpx.Response:
            return httpx.post(f"{base}/v1/registrants/{clinic.dea}/receipts", headers={
                "Authorization": f"Bearer {token}", "Idempotency-Key": invoice}, json={
                "supplier_id": clinic.supplier_id, "invoice_number": invoice,
                "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
                "lines": [{"ndc": "67457-0001-10", "containers": 1, "lot": "L1", "expiry": "2030-12-31"}]}, timeout=60)

        def login(base: str) -> str:
            r = httpx.post(f"{base}/v1/registrants/{clinic.dea}/sessions",
                           json={"username": "nurse0", "password": PASSWORD}, timeout=60)
            assert r.status_code == 201, r.text
            return r.json()["access_token"]

        # Today: two receipts over HTTP, and the witness cosigns the grown tree.
        today = ServerProcess(src, net.server_env(), cwd=tmp_path / "work")
        today.start()
        try:
            token = login(today.base)
            for inv in ("TODAY-1", "TODAY-2"):
                assert receipt(today.base, token, inv).status_code == 201
        finally:
            today.stop()
        run(["witnesses", "push", "--registrant", clinic.dea, "--db", src], tmp_path, env)

        # The old backup restores and verifies: nothing inside it can tell it is old.
        run(["restore", "--db", dst, "--from", str(tmp_path / "last-night.backup")], tmp_path, env)
        run(["verify", "--deep", "--db", dst], tmp_path, env)

        # The witness can. Its last cosigned checkpoint, saved to a file, is reached by today's
        # ledger and not by the restored one (`verify --checkpoint`)...
        held = tmp_path / "witnessed.checkpoint"
        held.write_text(run(["witness", "latest", "--dir", str(witness.dir), "--origin", origins[clinic.dea]],
                            tmp_path, env).stdout)
        ok = run(["verify", "--db", src, "--checkpoint", str(held)], tmp_path, env)
        assert f"ok --checkpoint {held}: the entries reach its root ({clinic.dea} size" in ok.stdout, ok.stdout
        old = run(["verify", "--db", dst, "--checkpoint", str(held)], tmp_path, env, check=False)
        assert old.returncode == 1, old.stdout + old.stderr
        assert f"FAIL {clinic.dea}: --checkpoint {held}: a checkpoint of size" in old.stderr, old.stderr
        assert "an older backup restored" in old.stderr
        # ...pushing the restored (smaller) tree is refused...
        push = run(["witnesses", "push", "--registrant", clinic.dea, "--db", dst], tmp_path, env, check=False)
        assert push.returncode == 1 and "NOT cosigned" in push.stderr, push.stdout + push.stderr
        # ...and a server started on it warns and refuses every append, naming the rollback.
        restored = ServerProcess(dst, net.server_env(), cwd=tmp_path / "work", log_path=tmp_path / "restored.log")
        restored.start()
        try:
            r = receipt(restored.base, login(restored.base), "AFTER-RESTORE")
            assert r.status_code == 409 and r.json()["type"].endswith("rollback-detected"), r.text
        finally:
            restored.stop()
        warned = (tmp_path / "restored.log").read_text()
        assert clinic.dea in warned and "witness" in warned
        with Ledger(make_engine(dst)).reading() as c:
            invoices = [row[0] for row in c.exec_driver_sql(
                "SELECT canonical FROM entries WHERE kind = 'stock_received'")]
        assert not any(b"AFTER-RESTORE" in bytes(x) for x in invoices), "a refused append was written"
    finally:
        if witness:
            witness.stop()
        next(dst_gen, None)
        next(src_gen, None)
