"""Freshly migrated test databases, copied from one migration per test process.

Running every Alembic migration for each test cost 0.1-0.35 s a test (most of a short test's
set-up). Instead each process (each xdist worker) migrates one template database per backend the
first time a test asks for one, and every test that wants a migrated database gets a copy:

* SQLite: the template is migrated through ``make_engine`` (WAL, as every ledger file is), then
  checkpointed and closed, so its main file alone holds the whole database; its bytes are kept
  and written to the test's own path, created 0600 as ``make_engine`` creates a database file.
* PostgreSQL: ``CREATE DATABASE <test> TEMPLATE <template>``. PostgreSQL copies the template
  database as it is (tables, indexes, sequences, functions, triggers, ``alembic_version``); the
  template is only ever connected to while it is migrated, as a copy needs.

The copy is the same database a fresh migration makes: ``tests/test_db_templates.py`` compares
each backend's copy with a fresh migration (SQLite's full dump and pragmas, ``pg_dump``).
Tests of the migrations themselves (a revision at a time, downgrades, ``csledger init``) keep
using empty databases and the real migrations (``fresh_database_url(..., migrated=False)``).
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import socket
import sqlite3
import tempfile
import threading
import uuid
from pathlib import Path

import sqlalchemy as sa

from ledger.storage.engine import PRIVATE_MODE, make_engine, migrate, normalize_url

_lock = threading.Lock()
_sqlite_image: bytes | None = None
_sqlite_dir: Path | None = None
#: PostgreSQL server URL -> (admin engine, template database name) of this process.
_pg: dict[str, tuple[sa.Engine, str | None]] = {}
#: URLs handed out as copies of a migrated template (their ``ledger`` fixture skips migrate).
_copies: set[str] = set()


def sqlite_image() -> bytes:
    """The bytes of a freshly migrated SQLite ledger file (migrated once per process)."""
    global _sqlite_image, _sqlite_dir
    with _lock:
        if _sqlite_image is None:
            _sqlite_dir = Path(tempfile.mkdtemp(prefix="csledger-template-"))
            path = _sqlite_dir / "template.db"
            engine = make_engine(f"sqlite:///{path}")
            try:
                migrate(engine)
            finally:
                engine.dispose()
            c = sqlite3.connect(path)  # everything into the main file: the copy is that file alone
            try:
                busy, _, _ = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                assert busy == 0, "the SQLite template's WAL could not be checkpointed"
            finally:
                c.close()
            for suffix in ("-wal", "-shm"):
                wal = Path(f"{path}{suffix}")
                if wal.exists() and wal.stat().st_size:
                    raise RuntimeError(f"the SQLite template left a non-empty {wal.name} behind")
            _sqlite_image = path.read_bytes()
        return _sqlite_image


def copy_sqlite(path: Path) -> None:
    """Write a migrated ledger to ``path`` (which must not exist), mode 0600 like ``make_engine``'s."""
    image = sqlite_image()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        os.write(fd, image)  # a few hundred KB: one write
    finally:
        os.close(fd)


def admin_engine(base: str) -> sa.Engine:
    """An AUTOCOMMIT engine on the server's maintenance database (kept for the process)."""
    with _lock:
        got = _pg.get(base)
        if got is None:
            engine = sa.create_engine(normalize_url(base), isolation_level="AUTOCOMMIT", pool_size=1,
                                      max_overflow=2, pool_pre_ping=True)
            got = _pg[base] = (engine, None)
        return got[0]


def database_url(base: str, name: str) -> str:
    return sa.engine.make_url(normalize_url(base)).set(database=name).render_as_string(hide_password=False)


def postgres_template(base: str) -> str:
    """The name of this process's migrated template database on ``base``'s server."""
    admin = admin_engine(base)
    with _lock:
        name = _pg[base][1]
        if name is None:
            prefix = f"cst_template_{_HOST}_"
            name = f"{prefix}{os.getpid()}_{uuid.uuid4().hex[:8]}"
            with admin.connect() as c:
                _drop_stale_templates(c, prefix)
                c.exec_driver_sql(f'CREATE DATABASE "{name}"')
            engine = make_engine(database_url(base, name))
            try:
                migrate(engine)
            except BaseException:
                engine.dispose()
                with admin.connect() as c:
                    c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                raise
            engine.dispose()  # no connection may stay open on a template while it is copied
            _pg[base] = (admin, name)
        return name


#: This machine, in the template's name: only its own processes' templates are its to clean up.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _drop_stale_templates(c: sa.Connection, prefix: str) -> None:
    """Drop the templates a test process of this machine left behind when it was killed (its
    session's end never came): those whose process is gone."""
    names = c.exec_driver_sql("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
    for (stale,) in names.all():
        try:
            pid = int(stale[len(prefix):].split("_")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
        except (ValueError, PermissionError):
            continue  # not a name of ours, or a live process of another user


def create_postgres(base: str, name: str, *, migrated: bool) -> None:
    template = postgres_template(base) if migrated else None
    with admin_engine(base).connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def drop_postgres(base: str, name: str) -> None:
    """Drop a test's database: at once, or under xdist by this process's dropper thread.

    Each DROP DATABASE makes PostgreSQL 15 run an immediate checkpoint and wait for it (its
    fsyncs: 0.1-1 s with two workers writing); a test has no need to wait for that. The thread
    takes the drops in order, at most ``_DROP_BACKLOG`` behind (then the next drop waits), and
    the session's end waits for all of them (``drop_templates``). The database's connections
    are ended at once either way (``WITH (FORCE)`` then, ``pg_terminate_backend`` now), so
    nothing of a test outlives it. Without xdist (CI's ``serial`` pass: timing-sensitive tests
    alone on the cores) every drop is done before the next test starts, as before."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        _drop(base, name)
        return
    if _drop_errors:  # an earlier test's drop failed: say so here, as its own teardown would have
        errors, _drop_errors[:] = list(_drop_errors), []
        raise RuntimeError(f"dropping earlier tests' databases failed: {errors}")
    with admin_engine(base).connect() as c:
        c.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    global _dropper
    with _lock:
        if _dropper is None:
            _dropper = threading.Thread(target=_drop_in_order, name="csledger-test-db-dropper", daemon=True)
            _dropper.start()
    _drops.put((base, name))


def _drop(base: str, name: str) -> None:
    with admin_engine(base).connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_DROP_BACKLOG = 4
_drops: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=_DROP_BACKLOG)
_dropper: threading.Thread | None = None
_drop_errors: list[str] = []


def _drop_in_order() -> None:
    while (item := _drops.get()) is not None:
        try:
            _drop(*item)
        except Exception as e:  # noqa: BLE001 - reported at the session's end
            _drop_errors.append(f"{item[1]}: {e}")


def wait_for_drops() -> list[str]:
    """Wait until every queued drop is done; the drops that failed."""
    global _dropper
    with _lock:
        dropper, _dropper = _dropper, None
    if dropper is not None:
        _drops.put(None)
        dropper.join()
    errors, _drop_errors[:] = list(_drop_errors), []
    return errors


def mark_copy(url: str) -> None:
    _copies.add(url)


def is_copy(url: str) -> bool:
    """True if ``url`` was handed out as a copy of a migrated template (and not yet released)."""
    return url in _copies


def release(url: str) -> None:
    _copies.discard(url)


def drop_templates() -> list[str]:
    """At the end of the session: wait for the queued drops, then drop this process's PostgreSQL
    templates and the SQLite one. Returns the drops that failed."""
    global _sqlite_image, _sqlite_dir
    errors = wait_for_drops()
    with _lock:
        for admin, name in list(_pg.values()):
            try:
                if name is not None:
                    with admin.connect() as c:
                        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except sa.exc.SQLAlchemyError:
                pass  # the server is gone (a test stopped it): nothing left to drop
            admin.dispose()
        _pg.clear()
        if _sqlite_dir is not None:
            shutil.rmtree(_sqlite_dir, ignore_errors=True)
        _sqlite_image = _sqlite_dir = None
    return errors
