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
