"""Backups that can be restored and proved equal: SQLite's online backup API (a consistent
snapshot while the clinic keeps recording) and ``pg_dump``/``pg_restore`` for PostgreSQL.

A restore goes only into an empty database, so a backup can never overwrite a ledger, and is
verified before it is reported as restored. Backups and restored SQLite databases are created
0600 (owner only) before a byte is written into them. Restoring an OLD backup produces a ledger that is
behind what witnesses have cosigned; the verifiable-ledger layer detects that at start.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa

from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.services.verify import verify
from ledger.storage.engine import create_private_file, keep_private
from ledger.storage.store import Ledger, normalize_url


def _sqlite_path(url: str) -> Path:
    u = sa.engine.make_url(url)
    if not u.database or u.database == ":memory:":
        raise InvalidInput("a SQLite backup needs a database file", field="database_url")
    return Path(u.database)


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise NotFound(f"{name} not found; install PostgreSQL client tools", field="database_url")
    return str(candidates[-1])


def _libpq_url(url: str) -> str:
    return sa.engine.make_url(normalize_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


def roots(url: str) -> dict[str, tuple[int, str]]:
    """Tree size and root of every registrant (a fast verify of the whole database)."""
    ledger = Ledger.open(url)
    try:
        report = verify(ledger)
    finally:
        ledger.dispose()
    if not report.ok:
        raise Conflict(f"the ledger does not verify: {report.problems[0]}", field="database_url")
    return {reg: (n, report.roots.get(reg, "")) for reg, n in report.registrants.items()}


def _supported(url: str) -> str:
    url = normalize_url(url)
    if not url.startswith(("sqlite", "postgresql")):
        raise InvalidInput("only sqlite:/// and postgresql:// URLs are supported", field="database_url")
    return url


def _new_backup_file(out: Path) -> None:
    """Create the backup file empty, 0600, before anything is written into it (SQLite's backup
    and ``pg_dump`` would create it with the umask's mode, often readable by everyone)."""
    try:
        made = create_private_file(out)
    except OSError as exc:
        raise InvalidInput(f"cannot write {out}: {exc.strerror or exc}", field="out") from None
    if not made:
        raise Conflict(f"{out} exists; a backup never overwrites a file", field="out")


def backup_database(url: str, out: Path) -> dict[str, tuple[int, str]]:
    """Write a consistent backup of the database at ``url`` to ``out``; return its roots."""
    url = _supported(url)
    if out.exists():
        raise Conflict(f"{out} exists; a backup never overwrites a file", field="out")
    if not out.parent.is_dir():
        raise NotFound(f"no folder {out.parent} to write the backup in", field="out")
    if url.startswith("sqlite"):
        source = _sqlite_path(url)
        if not source.is_file():
            raise NotFound(f"no database file {source}", field="database_url")
        _new_backup_file(out)
        src = sqlite3.connect(source)
        dst = sqlite3.connect(out)
        try:
            src.backup(dst)  # page-by-page copy of one consistent snapshot, writers keep going
        except sqlite3.Error as exc:
            dst.close()
            out.unlink(missing_ok=True)
            raise InvalidInput(f"cannot back up {source}: {exc}", field="database_url") from None
        finally:
            dst.close()
            src.close()
        return roots(f"sqlite:///{out}")
    pg_dump = _pg_tool("pg_dump")
    _new_backup_file(out)  # pg_dump writes into it (truncating), keeping its mode
    try:
        subprocess.run([pg_dump, "--format=custom", "--no-owner", "--file", str(out), _libpq_url(url)],
                       check=True, capture_output=True, timeout=3600)
    except subprocess.CalledProcessError as exc:
        out.unlink(missing_ok=True)
        raise InvalidInput(f"pg_dump failed: {_first_line(exc.stderr)}", field="database_url") from None
    return roots(url)


def _first_line(data: bytes | str | None) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
    return next((x.strip() for x in text.splitlines() if x.strip()), "no message")


def _check_sqlite_backup(backup: Path) -> None:
    """A SQLite backup file holds a csledger ledger, checked read-only before anything is copied."""
    try:
        con = sqlite3.connect(backup.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
        try:
            ok = con.execute("PRAGMA quick_check").fetchone()
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise InvalidInput(f"{backup} is not a csledger SQLite backup ({exc})", field="from") from None
    if not ok or ok[0] != "ok":
        raise InvalidInput(f"{backup} is a damaged SQLite file ({ok[0] if ok else 'no answer'})", field="from")
    if "entries" not in tables:
        raise InvalidInput(f"{backup} is not a csledger backup: it holds no ledger", field="from")


def _is_empty(url: str) -> bool:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as c:
            return not sa.inspect(c).get_table_names()
    finally:
        engine.dispose()


def restore_database(backup: Path, url: str) -> dict[str, tuple[int, str]]:
    """Restore ``backup`` into the empty database at ``url``, verify it, return its roots."""
    url = _supported(url)
    if not backup.is_file():
        raise NotFound(f"no backup file {backup}", field="from")
    if url.startswith("sqlite"):
        path = _sqlite_path(url)
        if path.exists() and path.stat().st_size > 0:
            raise Conflict(f"{path} exists; restore only into a new database file", field="database_url")
        if not path.parent.is_dir():
            raise NotFound(f"no folder {path.parent} for the restored database", field="database_url")
        _check_sqlite_backup(backup)
        try:
            if not create_private_file(path):  # the new database is the owner's only, as `init` makes it
                keep_private(path)
        except OSError as exc:
            raise InvalidInput(f"cannot create {path}: {exc.strerror or exc}", field="database_url") from None
        src = sqlite3.connect(backup.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
        dst = sqlite3.connect(path)
        try:
            src.backup(dst)
        except sqlite3.Error as exc:
            dst.close()
            path.unlink(missing_ok=True)
            raise InvalidInput(f"cannot restore {backup}: {exc}", field="from") from None
        finally:
            dst.close()
            src.close()
        try:
            return roots(url)
        except Exception:
            path.unlink(missing_ok=True)  # a restore that does not verify leaves no database behind
            raise
    if not _is_empty(url):
        raise Conflict("the target PostgreSQL database is not empty; restore only into a new database", field="database_url")
    # One transaction: a damaged or truncated dump leaves the target database as empty as it was.
    try:
        subprocess.run([_pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction",
                        "--dbname", _libpq_url(url), str(backup)], check=True, capture_output=True, timeout=3600)
    except subprocess.CalledProcessError as exc:
        raise InvalidInput(f"{backup} could not be restored (pg_restore: {_first_line(exc.stderr)})",
                           field="from") from None
    return roots(url)
