"""``verify`` needs trust from outside the database (issue 16).

A writer of the database who re-signs the whole history with a key of their own and puts that
key into ``log_keys`` makes the database agree with itself: ``verify`` passes, and now says on
its last line that the result is self-attested. With ``--pinned-keys FILE`` (the output of
``csledger keys show`` saved outside the database) every stored checkpoint must be signed by a
pinned key: the re-signed database fails, naming the checkpoint and the key that signed it.
Run as a user would, ``csledger`` as a subprocess, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.integrity.checkpoints import Signer, parse_checkpoint, sign_checkpoint, split_note
from ledger.services.trust import check_pinned, load_pinned_keys
from ledger.services.verify import verify
from ledger.storage import log as tl
from ledger.storage.log import attach
from ledger.storage.store import Ledger
from tests.conftest import BACKENDS, DEA, Clinic
from tests.contract.test_ledger_contract import receipt
from tests.integrity.conftest import settings_for

CSLEDGER = [sys.executable, "-m", "api.cli"]
both = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CSLEDGER_KEY_DIR": str(tmp / "keys")}
    env.pop("CSLEDGER_PINNED_KEYS_FILE", None)
    return subprocess.run(CSLEDGER + [str(a) for a in args], cwd=tmp, capture_output=True, text=True, env=env,
                          timeout=300)


def last_line(p: subprocess.CompletedProcess) -> str:
    return p.stdout.strip().splitlines()[-1]


def drop_triggers(ledger: Ledger, tables: tuple[str, ...]) -> None:
    """What a database writer with full SQL access does first."""
    with ledger.engine.begin() as c:
        for t in tables:
            if ledger.dialect == "sqlite":
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_update")
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_delete")
            else:
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}")


def resign_history(ledger: Ledger) -> Signer:
    """Generate a new key under the log's own name, re-sign every stored checkpoint with it and
    replace the ``log_keys`` row: afterwards every key and signature in the database agree."""
    with ledger.reading() as c:
        key = tl.log_keys(c, DEA)[0]
        rows = c.execute(sa.text("SELECT tree_size, note FROM checkpoints WHERE registrant = :r ORDER BY tree_size"),
                         {"r": DEA}).mappings().all()
    forger = Signer.generate(key.origin)
    drop_triggers(ledger, ("checkpoints", "log_keys"))
    with ledger.engine.begin() as c:
        for row in rows:
            note = sign_checkpoint(parse_checkpoint(split_note(row["note"])[0]), forger).decode()
            c.execute(sa.text("UPDATE checkpoints SET note = :n WHERE registrant = :r AND tree_size = :s"),
                      {"n": note, "r": DEA, "s": row["tree_size"]})
        c.execute(sa.text("DELETE FROM log_keys WHERE registrant = :r"), {"r": DEA})
        c.execute(sa.text("INSERT INTO log_keys (registrant, generation, origin, verifier_key, first_size, created_at, "
                          "reason) VALUES (:r, 1, :o, :v, 1, :c, :why)"),
                  {"r": DEA, "o": key.origin, "v": forger.verifier().to_string(), "c": key.created_at,
                   "why": key.reason})
    return forger


@pytest.fixture
def signed(ledger, tmp_path):
    """A clinic whose every command signs a checkpoint, with three receipts."""
    log = attach(ledger, settings_for(tmp_path))
    clinic = Clinic(ledger)
    for i in range(3):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, f"INV-{i}"))
    return log, clinic


@both
def test_resigned_history_with_a_replaced_key_fails_verify_with_pinned_keys(signed, ledger, db_url, tmp_path):
    shown = cli(tmp_path, "keys", "show", "--registrant", DEA, "--db", db_url)
    assert shown.returncode == 0, shown.stderr
    pinned = tmp_path / "pinned.keys"  # kept outside the database: the inspector's copy
    pinned.write_text(shown.stdout)

    ok = cli(tmp_path, "verify", "--pinned-keys", pinned, "--db", db_url)
    assert ok.returncode == 0, ok.stderr
    assert last_line(ok).startswith(f"trust: every checkpoint is signed by a key pinned in {pinned}"), ok.stdout
    plain = cli(tmp_path, "verify", "--db", db_url)
    assert plain.returncode == 0 and last_line(plain).startswith("self-attested:"), plain.stdout

    with ledger.reading() as c:
        first = c.execute(sa.text("SELECT MIN(tree_size) FROM checkpoints WHERE registrant = :r"), {"r": DEA}).scalar()
        entries_before = c.execute(sa.text("SELECT COUNT(*) FROM entries")).scalar()
    forger = resign_history(ledger)

    # The database agrees with itself: verify passes, and says on which authority.
    plain = cli(tmp_path, "verify", "--db", db_url)
    assert plain.returncode == 0, plain.stderr
    assert "self-attested" in last_line(plain) and "from this database itself" in last_line(plain)
    # Against the keys pinned outside it, the first re-signed checkpoint fails, naming its signer.
    bad = cli(tmp_path, "verify", "--pinned-keys", pinned, "--db", db_url)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    assert f"{DEA}: checkpoint at size {first} is not signed by a pinned key" in bad.stderr, bad.stderr
    assert f"{forger.name}+{forger.key_id:08x}" in bad.stderr
    assert "log keys recorded in this database were replaced" in bad.stderr
    # The setting does the same as the option.
    env_bad = subprocess.run(CSLEDGER + ["verify", "--db", db_url], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "CSLEDGER_PINNED_KEYS_FILE": str(pinned)}, timeout=300)
    assert env_bad.returncode == 1 and f"checkpoint at size {first} is not signed by a pinned key" in env_bad.stderr
    with ledger.reading() as c:  # verify wrote nothing
        assert c.execute(sa.text("SELECT COUNT(*) FROM entries")).scalar() == entries_before


@both
def test_pinned_key_file_that_is_not_a_key_list_is_refused_by_line(signed, db_url, tmp_path):
    typo = tmp_path / "typo.keys"
    typo.write_text("# the clinic's log key\nclinic.test+0000zzzz+AAAA\n")
    p = cli(tmp_path, "verify", "--pinned-keys", typo, "--db", db_url)
    assert p.returncode == 2 and f"{typo} line 2: not a verifier key" in p.stderr and "Traceback" not in p.stderr
    checkpoint = tmp_path / "witnessed.checkpoint"
    with signed[0].ledger.reading() as c:
        checkpoint.write_text(tl.latest_checkpoint(c, DEA).note)
    p = cli(tmp_path, "verify", "--pinned-keys", checkpoint, "--db", db_url)
    assert p.returncode == 2 and "is a signed checkpoint, not a list of verifier keys" in p.stderr
    missing = cli(tmp_path, "verify", "--pinned-keys", tmp_path / "nowhere.keys", "--db", db_url)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


@both
def test_rotated_key_needs_the_new_key_pinned_and_an_unsigned_tail_fails(signed, ledger, tmp_path):
    """After `keys rotate` a file holding only the old key fails at the first checkpoint the new
    key signed; the file `keys show` prints after the rotation (both keys) passes. Entries no
    checkpoint covers (appended without the signing hook) are not vouched for by a pinned key."""
    log, clinic = signed
    with ledger.reading() as c:
        old = [k.verifier_key for k in tl.log_keys(c, DEA)]
    (tmp_path / "old.keys").write_text("\n".join(old) + "\n")
    new, _ = log.rotate(DEA, reason="scheduled")
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-AFTER-ROTATION"))
    report = verify(ledger)
    assert report.ok
    [p] = check_pinned(ledger, load_pinned_keys(tmp_path / "old.keys"), report.registrants, report.roots)
    assert f"checkpoint at size {report.registrants[DEA]} is not signed by a pinned key" in str(p)
    (tmp_path / "both.keys").write_text(f"{new.verifier_key}\n" + "\n".join(old) + "\n")
    both_keys = load_pinned_keys(tmp_path / "both.keys")
    assert check_pinned(ledger, both_keys, report.registrants, report.roots) == []

    unsigned = Ledger(ledger.engine)  # no signing hook: the entries are right, the checkpoint lags
    services.receive_stock(unsigned, clinic.nurse, receipt(clinic, "INV-UNSIGNED"))
    report = verify(ledger)
    assert report.ok  # the latest checkpoint is a consistent prefix
    [p] = check_pinned(ledger, both_keys, report.registrants, report.roots)
    with ledger.reading() as c:
        signed_size = tl.latest_checkpoint(c, DEA).tree_size
    size = report.registrants[DEA]
    assert signed_size < size
    assert f"entries {signed_size}..{size - 1} are covered by no checkpoint signed by a pinned key" in str(p)
