"""``csledger verify --checkpoint FILE``: the ledger held against a signed checkpoint kept
outside the database (a witness's copy, an inspector's saved one), run as a subprocess.

The forged-history and restored-backup cases, where this check is the one that matters, are in
tests/robustness/test_tampering.py and test_backup_restore.py; here: a genuine checkpoint passes
(also once the log has grown past it), and every wrong file gets a one-line answer naming it.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

from tests.cli.test_cli import INIT, run

SECOND = ["init", "--dea", "BC7000021", "--name", "Still Point Infusions", "--street", "2 Elm St",
          "--city", "Austin", "--state", "TX", "--zip", "78702", "--time-zone", "America/Chicago",
          "--admin-name", "Blair Admin", "--admin-username", "blair"]


def _latest_note(db: Path, dea: str) -> str:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT note FROM checkpoints WHERE registrant = ? ORDER BY tree_size DESC LIMIT 1",
                         (dea,)).fetchone()[0]


def _clinic(folder: Path) -> tuple[Path, dict]:
    folder.mkdir()
    env = {"CSLEDGER_DATABASE_URL": f"sqlite:///{folder / 'ledger.db'}", "CSLEDGER_KEY_DIR": str(folder / "keys")}
    run(INIT, folder, env)
    return folder / "ledger.db", env


def test_a_genuine_checkpoint_passes_and_keeps_passing_as_the_log_grows(tmp_path):
    db, env = _clinic(tmp_path / "clinic")
    held = tmp_path / "held.checkpoint"
    held.write_text(_latest_note(db, "AB1234563"))
    ok = run(["verify", "--checkpoint", str(held)], tmp_path, env)
    assert f"ok --checkpoint {held}: the entries reach its root (AB1234563 size 3)" in ok.stdout, ok.stdout

    run(SECOND, tmp_path, env)  # the log of another registrant in the same database; ours is unchanged
    run(["verify", "--checkpoint", str(held), "--deep"], tmp_path, env)
    run(["verify", "--checkpoint", str(held), "--registrant", "AB1234563"], tmp_path, env)


def test_a_checkpoint_of_another_registrant_or_log_is_refused(tmp_path):
    db, env = _clinic(tmp_path / "clinic")
    run(SECOND, tmp_path / "clinic", env)
    held = tmp_path / "held.checkpoint"
    held.write_text(_latest_note(db, "AB1234563"))

    # Asked to verify only the other registrant: a usage error, exit 2.
    p = run(["verify", "--checkpoint", str(held), "--registrant", "BC7000021"], tmp_path, env, check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"--checkpoint {held}: is AB1234563's checkpoint; that registrant is not being verified" in p.stderr

    # Another database whose registrant has the same DEA number but its own log (key and origin):
    # the checkpoint cannot be checked against it, which is a failure, not a pass.
    _, other_env = _clinic(tmp_path / "elsewhere")
    p = run(["verify", "--checkpoint", str(held)], tmp_path, other_env, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"--checkpoint {held}: no registrant in this database has the log origin" in p.stderr


def test_an_edited_checkpoint_fails_its_signature(tmp_path):
    db, env = _clinic(tmp_path / "clinic")
    note = _latest_note(db, "AB1234563")
    origin, size, root, rest = note.split("\n", 3)
    forged_root = base64.b64encode(bytes(32)).decode()
    held = tmp_path / "edited.checkpoint"
    held.write_text("\n".join([origin, size, forged_root, rest]))
    p = run(["verify", "--checkpoint", str(held)], tmp_path, env, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"AB1234563: --checkpoint {held}: not signed by any log key recorded for this registrant" in p.stderr


def test_unreadable_or_malformed_files_are_one_line_errors(tmp_path):
    _, env = _clinic(tmp_path / "clinic")
    garbage = tmp_path / "garbage.txt"
    garbage.write_bytes(b"\x00\xffnot a checkpoint")
    text = tmp_path / "text.txt"
    text.write_text("hello\n")
    for path, says in ((tmp_path / "missing.checkpoint", "cannot read"), (tmp_path, "cannot read"),
                       (garbage, "not a signed checkpoint note"), (text, "not a signed checkpoint note")):
        p = run(["verify", "--checkpoint", str(path)], tmp_path, env, check=False)
        assert p.returncode == 2, (path, p.stdout, p.stderr)
        assert f"--checkpoint {path}: {says}" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
