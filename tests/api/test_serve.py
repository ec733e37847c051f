"""The API as a deployment meets it: ``csledger init``, ``csledger staff set-password`` at the
console, ``csledger serve`` as a subprocess, and a login over real HTTP on loopback."""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import pyotp
import pytest

from tests.cli.test_cli import CSLEDGER, INIT, _free_port, run

PASSWORD = "four quiet harbor lamps"


def test_console_bootstrap_then_login_over_http(tmp_path):
    db = f"sqlite:///{tmp_path / 'srv.db'}"
    env = {"CSLEDGER_KEY_DIR": str(tmp_path / "keys")}
    run(INIT + ["--db", db], tmp_path, env)
    p = subprocess.run(CSLEDGER + ["staff", "set-password", "--dea", "AB1234563", "--username", "avery",
                                   "--password-stdin", "--db", db],
                       input=PASSWORD + "\n", capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**__import__("os").environ, **env})
    assert p.returncode == 0, p.stderr
    secret = re.search(r"TOTP secret \(shown once; add it to an authenticator app\): ([A-Z2-7]+)", p.stdout).group(1)
    bad = subprocess.run(CSLEDGER + ["staff", "set-password", "--dea", "AB1234563", "--username", "avery",
                                     "--password-stdin", "--db", db],
                         input="short\n", capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "at least 12 characters" in bad.stderr and "Traceback" not in bad.stderr

    port = _free_port()
    proc = subprocess.Popen(CSLEDGER + ["serve", "--db", db, "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, **env})
    base = f"http://127.0.0.1:{port}/v1/registrants/AB1234563"
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail(f"server did not start: {proc.stdout.read() if proc.poll() is not None else ''}")
                time.sleep(0.2)
        r = httpx.post(f"{base}/sessions", json={"username": "avery", "password": PASSWORD,
                                                 "totp": pyotp.TOTP(secret).now()})
        assert r.status_code == 201, r.text
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        me = httpx.get(f"{base}/me", headers=h)
        assert me.json()["roles"] == ["administrator"] and me.json()["auth_method"] == "password+totp"
        r = httpx.post(f"{base}/staff", headers={**h, "Idempotency-Key": "enroll-nora"},
                       json={"printed_name": "Nora Nurse", "username": "nora", "roles": ["nurse"]})
        assert r.status_code == 201, r.text
        assert httpx.delete(f"{base}/sessions/current", headers=h).status_code == 204
        assert httpx.get(f"{base}/me", headers=h).status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert PASSWORD not in out and "csl_" not in out  # no secrets in the server's log
    assert '"route": "/v1/registrants/{dea}/sessions"' in out  # structured access log, route templates


def test_demo_logins_let_each_demo_role_log_in(tmp_path):
    from fastapi.testclient import TestClient

    from api.http.app import create_app
    from ledger.settings import Settings
    from ledger.storage.store import Ledger

    db = f"sqlite:///{tmp_path / 'demo.db'}"
    run(["demo", "--db", db], tmp_path)
    p = run(["staff", "demo-logins", "--db", db], tmp_path)
    secrets_ = dict(re.findall(r"AB1234563 (\w+) .*TOTP secret ([A-Z2-7]+)", p.stdout))
    assert set(secrets_) == {"avery", "morgan"}
    ledger = Ledger.open(db)
    try:
        # The server reads the TOTP key where `staff demo-logins` wrote it (the key folder of its cwd).
        client = TestClient(create_app(ledger, Settings(database_url=db, key_dir=tmp_path / "csledger-keys")))
        for user in ("avery", "morgan", "nora", "ned", "pia", "casey", "dana"):
            body = {"username": user, "password": "calm waters demo 2026"}
            if user in secrets_:
                body["totp"] = pyotp.TOTP(secrets_[user]).now()
            r = client.post("/v1/registrants/AB1234563/sessions", json=body)
            assert r.status_code == 201, (user, r.text)
    finally:
        ledger.dispose()
    # Not on a database whose staff were enrolled by real logins.
    real = f"sqlite:///{tmp_path / 'real.db'}"
    run(INIT + ["--db", real], tmp_path)
    assert run(["staff", "demo-logins", "--db", real], tmp_path, check=False).returncode == 2


@pytest.mark.slow
def test_bench_http_runs_and_reports_a_ratio(tmp_path):
    from rich.console import Console

    from bench.bench_http import run_http_bench

    for command, clients in (("receipt", (1, 2)), ("infusion", (1,))):
        rows = run_http_bench(Console(file=open(tmp_path / f"{command}.txt", "w")), clients=clients, per_client=2,
                              workdir=tmp_path / command, command=command)
        assert [r["clients"] for r in rows] == list(clients)
        assert all(r["http_per_s"] > 0 and r["service_per_s"] > 0 and r["ratio"] > 0 for r in rows)
