"""The migrated databases most tests get are copies of one template per test process
(``tests/support/db_templates.py``): a copy must be exactly the database the migrations make,
schema, triggers, functions, sequences, ``alembic_version`` and any seeded row alike, on both
backends, or every test that uses one would test something else than a freshly migrated ledger."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger.storage.engine import sqlite_file
from ledger.storage.store import make_engine, migrate
from tests.conftest import BACKENDS, fresh_database_url
from tests.support import db_templates


def _sqlite_dump(url: str) -> list[str]:
    path = sqlite_file(url)
    assert path is not None
    with sqlite3.connect(path) as c:
        pragmas = [f"{p}={c.execute(f'PRAGMA {p}').fetchone()[0]}" for p in (
            "journal_mode", "page_size", "auto_vacuum", "user_version", "application_id", "encoding",
            "freelist_count", "integrity_check")]
        return pragmas + list(c.iterdump())  # every table, index, trigger and view, and every row


def _pg_dump_bin() -> str:
    bin_dir = os.environ.get("CSLEDGER_PG_BIN")
    found = shutil.which("pg_dump", path=bin_dir) if bin_dir else None
    found = found or shutil.which("pg_dump")
    if not found:
        pytest.skip("pg_dump not found (set CSLEDGER_PG_BIN to PostgreSQL's bin folder)")
    return found


def _pg_dump(url: str) -> list[str]:
    u = sa.engine.make_url(url)
    out = subprocess.run(
        [_pg_dump_bin(), "--no-password", "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432),
         "-U", u.username or "postgres", "-d", u.database],
        env={**os.environ, **({"PGPASSWORD": u.password} if u.password else {})},
        capture_output=True, text=True, check=True).stdout  # schema and data: sequences' values too
    # the database as a whole: what CREATE DATABASE ... TEMPLATE would not carry over
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            db = c.exec_driver_sql(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datistemplate, datallowconn, "
                "datconnlimit, (SELECT count(*) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid) "
                "FROM pg_database d WHERE datname = current_database()").one()
    finally:
        engine.dispose()
    # (comments and the \\restrict key, new in every dump, aside)
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith(("--", "\\restrict", "\\unrestrict"))]
    return [repr(tuple(db))] + lines


def _dump(kind: str, url: str) -> list[str]:
    return _sqlite_dump(url) if kind == "sqlite" else _pg_dump(url)


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_template_copy_is_the_database_a_fresh_migration_makes(kind, tmp_path):
    (tmp_path / "fresh").mkdir()
    (tmp_path / "copy").mkdir()
    (tmp_path / "again").mkdir()
    fresh = fresh_database_url(kind, tmp_path / "fresh")
    copy = fresh_database_url(kind, tmp_path / "copy", migrated=True)
    again = fresh_database_url(kind, tmp_path / "again", migrated=True)
    try:
        fresh_url, copy_url = next(fresh), next(copy)
        assert not db_templates.is_copy(fresh_url) and db_templates.is_copy(copy_url)
        engine = make_engine(fresh_url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
        want = _dump(kind, fresh_url)
        assert any("alembic_version" in ln for ln in want) and any("TRIGGER" in ln.upper() for ln in want)
        assert _dump(kind, copy_url) == want
        if kind == "sqlite":  # created owner-only, as make_engine creates a ledger file
            assert stat.S_IMODE(Path(sqlite_file(copy_url)).stat().st_mode) == 0o600

        # A test's writes stay in its copy: the next copy is pristine again.
        engine = make_engine(copy_url)
        try:
            with engine.begin() as c:
                c.exec_driver_sql("CREATE TABLE scribble (x INTEGER)")
                c.exec_driver_sql("UPDATE alembic_version SET version_num = 'scribbled'")
        finally:
            engine.dispose()
        assert _dump(kind, next(again)) == want
    finally:
        for gen in (fresh, copy, again):
            gen.close()


def test_the_ledger_fixture_gets_a_template_copy(ledger, db_url):
    assert db_templates.is_copy(db_url)


@pytest.mark.real_migrations
def test_a_test_marked_real_migrations_gets_the_migrations_themselves(ledger, db_url):
    assert not db_templates.is_copy(db_url)
