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

    rot = run(["keys", "rotate", "--registrant", "AB1234563", "--reason", "scheduled"], tmp_path, env)
    assert "new log key" in rot.stdout
    assert "verified 3 entries" in run(["verify"], tmp_path, env).stdout
    garbage = tmp_path / "garbage.bundle"
    garbage.write_bytes(b"\x00\xff not a bundle")
    g = run(["verify-bundle", str(garbage)], tmp_path, env, check=False)
    assert g.returncode == 1 and "line 1" in g.stderr
    missing = run(["verify-bundle", "nope.bundle"], tmp_path, env, check=False)
    assert missing.returncode == 2
