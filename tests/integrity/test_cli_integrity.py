"""The integrity commands as a user meets them: ``csledger`` as a subprocess."""

from __future__ import annotations

from tests.cli.test_cli import INIT, run


def test_keys_export_verify_bundle_and_entry_proof(tmp_path):
    env = {"CSLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "CSLEDGER_KEY_DIR": str(tmp_path / "keys"),
           "CSLEDGER_ORIGIN_PREFIX": "ledger.calmwaters.test"}
    run(INIT, tmp_path, env)
    shown = run(["keys", "show", "--registrant", "AB1234563"], tmp_path, env).stdout
    vkey = shown.splitlines()[1].strip()
    assert vkey.startswith("ledger.calmwaters.test/AB1234563/") and "current" in shown
    run(["export", "--registrant", "AB1234563", "--out", "ab.bundle"], tmp_path, env)
    ok = run(["verify-bundle", "ab.bundle", "--log-key", vkey], tmp_path, env)
    assert "bundle OK: AB1234563, 3 entries" in ok.stdout and "(pinned)" in ok.stdout
    data = bytearray((tmp_path / "ab.bundle").read_bytes())
    i = data.index(b"Avery")
    data[i] ^= 0x01
    (tmp_path / "bad.bundle").write_bytes(bytes(data))
    bad = run(["verify-bundle", "bad.bundle", "--log-key", vkey], tmp_path, env, check=False)
    assert bad.returncode == 1 and "FAIL line" in bad.stderr

    run(["export", "--registrant", "AB1234563", "--seq", "1", "--out", "e1.tlog-proof"], tmp_path, env)
    one = run(["verify-bundle", "e1.tlog-proof", "--log-key", vkey], tmp_path, env)
    assert "entry 1 (staff_enrolled)" in one.stdout
    nokey = run(["verify-bundle", "e1.tlog-proof"], tmp_path, env, check=False)
    assert nokey.returncode == 1 and "--log-key" in nokey.stderr
    past = run(["export", "--registrant", "AB1234563", "--seq", "99", "--out", "x"], tmp_path, env, check=False)
    assert past.returncode == 2 and "seq" in past.stderr

    # One period rule (issue 20): the audit's days are local days, a time of day is refused...
    timed = run(["verify-bundle", "ab.bundle", "--log-key", vkey, "--audit-from", "2020-01-01T00:00:00Z"],
                tmp_path, env, check=False)
    assert timed.returncode == 2 and "--audit-from" in timed.stderr and "YYYY-MM-DD" in timed.stderr, timed.stderr
    # ... and this bundle has no count to run an audit between: said, exit 1 (the audit itself is
    # printed by tests/cli/test_cli.py::test_verify_bundle_recomputes_the_accountability_audit)
    uncounted = run(["verify-bundle", "ab.bundle", "--log-key", vkey, "--audit-from", "2020-01-01"], tmp_path, env,
                    check=False)
    assert uncounted.returncode == 1 and "FAIL audit" in uncounted.stderr and "count" in uncounted.stderr, \
        uncounted.stderr

    rot = run(["keys", "rotate", "--registrant", "AB1234563", "--reason", "scheduled"], tmp_path, env)
    assert "new log key" in rot.stdout
    assert "verified 3 entries" in run(["verify"], tmp_path, env).stdout
    garbage = tmp_path / "garbage.bundle"
    garbage.write_bytes(b"\x00\xff not a bundle")
    g = run(["verify-bundle", str(garbage)], tmp_path, env, check=False)
    assert g.returncode == 1 and "line 1" in g.stderr
    missing = run(["verify-bundle", "nope.bundle"], tmp_path, env, check=False)
    assert missing.returncode == 2


def output_of(proc) -> str:
    proc.terminate()
    return proc.communicate(timeout=10)[0]


def test_serve_serves_cosigned_checkpoints_and_warns_about_a_restored_backup(tmp_path):
    import shutil
    import subprocess
    import time
    from types import SimpleNamespace

    import httpx

    from ledger import services
    from ledger.storage.log import attach
    from ledger.storage.store import Ledger
    from tests.cli.test_cli import CSLEDGER, _free_port
    from tests.conftest import Clinic
    from tests.contract.test_ledger_contract import receipt
    from witness.server import Witness, serve_in_thread

    keys = tmp_path / "keys"
    env = {"CSLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "CSLEDGER_KEY_DIR": str(keys)}
    w = Witness.init(tmp_path / "wit", "witness.cli.test")
    wserver, wurl = serve_in_thread(w)
    try:
        # Register through Python (the fixture clinic has staff and products), signing with the
        # same key folder the CLI uses.
        lg = Ledger.open(env["CSLEDGER_DATABASE_URL"])
        from ledger.storage.store import migrate

        migrate(lg.engine)
        attach(lg, SimpleNamespace(key_dir=keys, origin_prefix="csledger.local", log_keys=""))
        clinic = Clinic(lg)
        vkey = run(["keys", "show", "--registrant", "AB1234563"], tmp_path, env).stdout.splitlines()[1].strip()
        w.add_log(vkey)
        p = run(["witnesses", "set", "--registrant", "AB1234563", "--witness", f"{w.verifier} {wurl}",
                 "--threshold", "1"], tmp_path, env)
        assert "cosigned" in p.stdout
        for suffix in ("", "-wal", "-shm"):  # last night's backup, taken while the server ran
            if (tmp_path / f"c.db{suffix}").exists():
                shutil.copy(tmp_path / f"c.db{suffix}", tmp_path / f"backup.db{suffix}")
        services.receive_stock(lg, clinic.nurse, receipt(clinic, invoice="AFTER-BACKUP"))
        lg.dispose()
        assert "1 of 1" in run(["witnesses", "push", "--registrant", "AB1234563"], tmp_path, env).stdout

        for db, expect_warning in (("c.db", False), ("backup.db", True)):
            port = _free_port()
            proc = subprocess.Popen(CSLEDGER + ["serve", "--db", f"sqlite:///{tmp_path / db}", "--port", str(port)],
                                    cwd=tmp_path, env={**__import__("os").environ, **env},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                deadline = time.time() + 30
                while True:
                    try:
                        r = httpx.get(f"http://127.0.0.1:{port}/v1/registrants/AB1234563/checkpoint", timeout=2)
                        break
                    except httpx.TransportError:
                        assert time.time() < deadline and proc.poll() is None, "server did not start"
                        time.sleep(0.2)
                assert r.status_code == 200, r.text + output_of(proc)
                assert r.headers["csledger-witnessed"] == "1/1"  # the backup's own last checkpoint was cosigned too
            finally:
                proc.terminate()
                output = proc.communicate(timeout=10)[0]
            assert ("restored from an older copy" in output) == expect_warning, output
    finally:
        wserver.shutdown()
        wserver.server_close()


def test_witnesses_push_counts_the_cosignatures_of_the_checkpoint_it_sent(tmp_path, monkeypatch):
    """Under live load a command signs a newer checkpoint while ``csledger witnesses push`` is
    talking to the witnesses. The push sent checkpoint N and got its cosignature; the command
    must report N's cosignatures, not exit 1 because checkpoint N+1 (no witness has seen it yet,
    it goes with the next push) has none. Found by tests/robustness/test_failover_sync_replica.py
    (issue 22), which had to push in-process instead."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from api.cli.main import app
    from ledger import services
    from ledger.storage import log as tlog
    from ledger.storage.store import Ledger, migrate
    from tests.conftest import Clinic
    from tests.contract.test_ledger_contract import receipt
    from witness.server import Witness, serve_in_thread

    keys = tmp_path / "keys"
    db = f"sqlite:///{tmp_path / 'c.db'}"
    monkeypatch.setenv("CSLEDGER_DATABASE_URL", db)
    monkeypatch.setenv("CSLEDGER_KEY_DIR", str(keys))
    w = Witness.init(tmp_path / "wit", "witness.cli.test")
    wserver, wurl = serve_in_thread(w)
    lg = Ledger.open(db)
    try:
        migrate(lg.engine)
        tlog.attach(lg, SimpleNamespace(key_dir=keys, origin_prefix="csledger.local", log_keys=""))
        clinic = Clinic(lg)
        runner = CliRunner()
        shown = runner.invoke(app, ["keys", "show", "--registrant", clinic.dea])
        w.add_log(shown.stdout.splitlines()[1].strip())
        set_ = runner.invoke(app, ["witnesses", "set", "--registrant", clinic.dea, "--witness",
                                   f"{w.verifier} {wurl}", "--threshold", "1"])
        assert set_.exit_code == 0, set_.output
        sent = []
        push = tlog.TransparencyLog.push

        def push_then_a_command_lands(self, registrant, **kw):
            results = push(self, registrant, **kw)
            sent.extend(r.tree_size for r in results)
            services.receive_stock(lg, clinic.nurse, receipt(clinic, invoice=f"LIVE-{len(sent)}"))  # signs N+1
            return results

        monkeypatch.setattr(tlog.TransparencyLog, "push", push_then_a_command_lands)
        services.receive_stock(lg, clinic.nurse, receipt(clinic, invoice="BEFORE-PUSH"))
        r = runner.invoke(app, ["witnesses", "push", "--registrant", clinic.dea])
        assert r.exit_code == 0, r.output
        assert f"checkpoint {sent[0]}: 1 of 1 cosignatures" in r.output, r.output
        with lg.reading() as conn:
            assert tlog.latest_checkpoint(conn, clinic.dea).tree_size > sent[0]  # the newer one exists
    finally:
        lg.dispose()
        wserver.shutdown()
