"""Backups restore into a fresh database and verify with the same roots, on both backends."""

from __future__ import annotations

import re

import pytest

from csledger.ledger import services
from csledger.ledger.store import Ledger, make_engine, migrate
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
