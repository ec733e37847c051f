"""The database engine: URLs (SQLite by default, PostgreSQL for clinic networks), the engine's
durability and isolation settings on each backend, and the Alembic migrations (never
``create_all``).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ledger.domain.errors import InvalidInput

T = TypeVar("T")


def _migrations_dir() -> Path:
    """The Alembic folder: the top-level ``migrations`` package, found by name without importing
    it (the core never imports the migrations; they import the core's tables)."""
    import importlib.util

    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the csledger migrations package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


MIGRATIONS_DIR = _migrations_dir()


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


#: The database file, its WAL and shared-memory files and every backup: readable and writable by
#: their owner only. They hold the whole record (staff, patients' ids, password hashes, sessions).
PRIVATE_MODE = 0o600


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600, atomically (``O_EXCL``): True if this call made it,
    False if it already existed. Made with its final mode, so there is no moment, whatever the
    umask, when it is readable by others; SQLite then gives its WAL and ``-shm`` files the
    database file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_MODE)  # a umask that takes the owner's own bits away cannot either
    finally:
        os.close(fd)
    return True


def keep_private(path: Path) -> None:
    """Tighten ``path`` and its ``-wal``/``-shm``/``-journal`` files to 0600 when they are ours
    and readable by others (a database left 0644 by an older csledger). A file we do not own
    is left alone: its owner decides."""
    for p in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))):
        try:
            st = p.stat()
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.chmod(p, PRIVATE_MODE)
        except OSError:
            continue  # no such file (the usual case for -journal), or not ours to change


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names; None for memory, ``file:`` URIs and non-SQLite URLs."""
    u = sa.engine.make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:" \
            or u.database.startswith("file:") or u.query.get("uri"):
        return None
    return Path(u.database)


def make_engine(url: str) -> Engine:
    """An engine configured for durability and for the registrant write lock.

    SQLite: WAL, ``synchronous=FULL``, foreign keys on, and the driver's own transaction
    handling turned off so that every write transaction starts with ``BEGIN IMMEDIATE`` (the
    SQLAlchemy documentation's recipe; the stock driver delays BEGIN, so two writers could both
    read the same head). Read-only transactions start with a plain deferred ``BEGIN``. The
    database file is created 0600 (owner only), and with it its WAL and ``-shm`` files.
    PostgreSQL: ``synchronous_commit=on`` on every connection; read-only transactions are
    ``REPEATABLE READ, READ ONLY`` so that every statement of one read sees one snapshot.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise InvalidInput("an in-memory SQLite database cannot hold a ledger; give a file", field="database_url")
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=20, max_overflow=20
        )
        path = sqlite_file(url)
        if path is not None:

            @event.listens_for(engine, "do_connect")
            def _sqlite_private_file(_dialect, _record, _cargs, _cparams):
                # Before SQLite opens the file, which it would create with the umask's mode
                # (often 0644, readable by every local user): create it 0600 here, or tighten
                # one an older csledger left open. Then SQLite connects as usual.
                try:
                    if not create_private_file(path):
                        keep_private(path)
                except OSError:
                    pass  # no such folder, or no right to create there: SQLite's own open says so


        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            read_only = conn.get_execution_options().get("csledger_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    if url.startswith("postgresql"):
        engine = sa.create_engine(
            url,
            connect_args={"options": "-c synchronous_commit=on"},
            pool_size=20,
            max_overflow=20,
            # The connection used last is handed out first, so under steady traffic the same few
            # stay warm (and skip the ping below) while the rest sit idle and are pinged.
            pool_use_lifo=True,
        )

        # A pooled connection is pinged before use only when it has sat idle for a while. Why:
        # ``pool_pre_ping`` pinged on every checkout, a round trip (and 7 % of an append's
        # time) for a connection used a millisecond before. A connection that dies while idle
        # (the database restarted, a standby promoted) is still found by the ping and replaced
        # before the command runs; one that dies within the window fails its command, which
        # SQLAlchemy reports as a disconnect (the pool is invalidated) and the caller retries.
        # The window is HikariCP's ``aliveBypassWindowMs`` default.
        @event.listens_for(engine, "connect")
        @event.listens_for(engine, "checkin")
        def _stamp_idle(_dbapi_connection, record):
            # (On connect too: a connection just made needs no ping, and ``record.info`` starts
            # empty on every reconnect.)
            record.info[_IDLE_SINCE] = time.monotonic()

        @event.listens_for(engine, "checkout")
        def _ping_if_idle(dbapi_connection, record, _proxy):
            since = record.info.get(_IDLE_SINCE)
            if since is not None and time.monotonic() - since < PING_AFTER_IDLE_S:
                return
            try:
                engine.dialect.do_ping(dbapi_connection)
            except engine.dialect.dbapi.Error as exc:
                # As ``pool_pre_ping`` did: the whole pool is replaced (after a restart or a
                # failover every idle connection is dead, and each would wait on its own ping),
                # and the pool retries the checkout with a new connection.
                raise sa.exc.InvalidatePoolError(f"pooled connection failed its ping ({type(exc).__name__})") from exc

        @event.listens_for(engine, "after_cursor_execute")
        def _sync_pipeline(conn, _cursor, _statement, _parameters, _context, _executemany):
            # Inside an append transaction in pipeline mode (``store._pipeline``): SQLAlchemy
            # reads a statement's result description right after executing it, which pipeline
            # mode only delivers at a sync, so sync here (a round trip, as without the pipeline).
            pipe = conn.info.get(PIPELINE_INFO_KEY)
            if pipe is not None:
                pipe.sync()

        @event.listens_for(engine, "begin")
        def _postgres_begin(conn):
            # A read is one snapshot, as it is on SQLite: under the default READ COMMITTED each
            # statement sees what committed before it, so a proof could pair the entry count from
            # before an append with the checkpoint signed after it, or an audit mix two states.
            # Read-only snapshots never fail serialization; writers keep READ COMMITTED and the
            # registrant's advisory lock.
            if conn.get_execution_options().get("csledger_read_only", False):
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

        return engine
    raise InvalidInput("only sqlite:/// and postgresql:// URLs are supported", field="database_url")


#: Seconds a pooled PostgreSQL connection may sit idle and still be used without a ping.
PING_AFTER_IDLE_S = 0.5
_IDLE_SINCE = "csledger_idle_since"


def per_engine(factory: Callable[[], T]) -> Callable[[Engine], T]:
    """A getter of one ``factory()`` object per engine, made on first use (thread-safe) and
    dropped with the engine: the caches the append path keeps per database."""
    made: weakref.WeakKeyDictionary[Engine, T] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def get(engine: Engine) -> T:
        with lock:
            obj = made.get(engine)
            if obj is None:
                obj = made[engine] = factory()
            return obj

    return get


#: ``Connection.info`` key of the psycopg pipeline an append transaction runs in (PostgreSQL).
PIPELINE_INFO_KEY = "csledger_pipeline"


def alembic_config():
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic migrations (never ``create_all``)."""
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def durability_settings(engine: Engine) -> dict[str, str]:
    """What the database says about durability, for tests and ``csledger verify``."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return {
                "journal_mode": str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()),
                "synchronous": str(conn.exec_driver_sql("PRAGMA synchronous").scalar()),
                "foreign_keys": str(conn.exec_driver_sql("PRAGMA foreign_keys").scalar()),
            }
        return {"synchronous_commit": str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())}
