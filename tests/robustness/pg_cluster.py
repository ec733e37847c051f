"""A throwaway PostgreSQL cluster of the test's own, so a test can SIGKILL the database server
without touching the shared one. Uses the server binaries of the Debian ``postgresql`` package
(``CSLEDGER_PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin``); as root, ``initdb`` and
``pg_ctl`` run as the ``postgres`` user (``initdb`` refuses root).

For the failover test (issue 22) a cluster can also be a primary with a synchronous standby:
``Cluster(port, settings=PRIMARY_SETTINGS)`` then ``primary.make_replication_user()`` and
``primary.standby(port2)`` (``pg_basebackup -R`` with ``application_name=standby1``);
``standby.promote()`` turns the standby into the primary and ``fence()`` makes a dead primary
unable to come back as a writer."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

#: The standby's name (``application_name`` in its ``primary_conninfo``) that the primary waits for.
STANDBY_NAME = "standby1"
REPLICATION_USER = "replicator"
#: A primary that acknowledges a commit only once its WAL is flushed on the synchronous standby
#: (``synchronous_commit=on``: remote flush; ``remote_apply`` would also wait for the standby to
#: replay it, which only matters to whoever reads from the standby, and csledger reads from the
#: primary). Given on the primary's command line, not in its files, so ``pg_basebackup`` does not
#: copy them to the standby: a promoted standby must not wait for a standby it does not have.
PRIMARY_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "synchronous_standby_names": f"FIRST 1 ({STANDBY_NAME})",
    "synchronous_commit": "on",
    "wal_sender_timeout": "5s",
}


def pg_bin() -> Path | None:
    env = os.environ.get("CSLEDGER_PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class Cluster:
    def __init__(self, port: int, settings: dict[str, str] | None = None):
        self.bin = pg_bin()
        if self.bin is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb); install the Debian package postgresql")
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="csledger-own-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.settings = dict(settings or {})  # extra -c name=value options of every start

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> Cluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        return self

    def start(self) -> None:
        r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "120",
                      "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on "
                            f"-c synchronous_commit=on -c max_connections=200" + self._extra_options(), "start",
                   check=False)
        if r.returncode != 0:
            tail = (self.root / "log").read_text(errors="replace")[-1500:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({r.returncode}): {r.stdout}{r.stderr}\n{tail}")

    def _extra_options(self) -> str:
        # pg_ctl hands -o to /bin/sh: a value with spaces or parentheses is quoted for it.
        return "".join(f" -c {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items())

    def postgres_pids(self) -> list[int]:
        """The postmaster and every process it forked (backends, checkpointer, WAL writer...)."""
        try:
            master = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        pids = [master]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                pids.append(int(stat.split("/")[2]))
        return pids

    def kill(self) -> None:
        """SIGKILL the whole server at once, as a power cut to the database host would (minus
        the OS cache: committed data are already fsynced)."""
        pids = self.postgres_pids()
        if pids:  # stop the postmaster first so it forks no backend between listing and killing
            try:
                os.kill(pids[0], signal.SIGSTOP)
            except ProcessLookupError:
                pass
            pids = [pids[0]] + [p for p in self.postgres_pids() if p != pids[0]]
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids):
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL processes survived SIGKILL")
            time.sleep(0.05)
        # A killed postmaster may linger as a zombie where nothing reaps orphans (a container
        # without an init); PostgreSQL takes a zombie's PID for a live server, so the stale lock
        # file goes, exactly as an operator would remove it after checking no process is left.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        (self.root / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, *statements: str) -> list[tuple]:
        """Run statements on one connection to the ``postgres`` database (autocommit) and return
        the last one's rows."""
        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as c:
                for query in statements:
                    result = c.exec_driver_sql(query)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    # -- streaming replication (issue 22) -----------------------------------------------------------
    def make_replication_user(self) -> None:
        """A login that may only stream WAL, allowed from loopback (trust: a test cluster; a
        clinic's uses scram-sha-256 or certificates). Reloads the primary's pg_hba.conf."""
        # Made before any standby exists: this one commit must not wait for the synchronous standby.
        self.sql("SET synchronous_commit = local", f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN")
        hba = self.data / "pg_hba.conf"  # rewritten in place: it keeps its owner (postgres)
        hba.write_text(f"host replication {REPLICATION_USER} 127.0.0.1/32 trust\n" + hba.read_text())
        self.sql("SELECT pg_reload_conf()")

    def standby(self, port: int, name: str = STANDBY_NAME) -> Cluster:
        """A streaming standby of this (running) primary, copied by ``pg_basebackup -R`` (which
        writes ``standby.signal`` and ``primary_conninfo``, here with ``application_name=name`` so
        the primary's ``synchronous_standby_names`` can name it), started on ``port``."""
        sb = Cluster(port)
        conninfo = f"host=127.0.0.1 port={self.port} user={REPLICATION_USER} application_name={name}"
        # --no-sync: a throwaway copy on the same machine; a clinic's standby is fsynced (the default).
        sb._run(str(self.bin / "pg_basebackup"), "-d", conninfo, "-D", str(sb.data), "-R", "-X", "stream",
                "-c", "fast", "--no-sync")
        sb.start()
        return sb

    def replication(self) -> list[tuple[str, str, str]]:
        """(application_name, state, sync_state) of every standby streaming from this primary."""
        return [tuple(r) for r in self.sql("SELECT application_name, state, sync_state FROM pg_stat_replication")]

    def wait_for_sync_standby(self, name: str = STANDBY_NAME, timeout: float = 60.0) -> None:
        """Until ``pg_stat_replication`` shows ``name`` streaming as the synchronous standby."""
        deadline = time.monotonic() + timeout
        while (name, "streaming", "sync") not in self.replication():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no synchronous standby {name}: {self.replication()}")
            time.sleep(0.1)

    def process(self, title: str) -> int | None:
        """The pid of this server's process whose title has ``title`` (e.g. ``walreceiver``)."""
        for pid in self.postgres_pids()[1:]:
            try:
                if title.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
        return None

    def in_recovery(self) -> bool:
        return bool(self.sql("SELECT pg_is_in_recovery()")[0][0])

    def promote(self) -> None:
        """End recovery: this standby becomes a primary (a new timeline) and takes writes."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote")

    def fence(self) -> None:
        """Make this (stopped) former primary unable to come back as a writer: ``standby.signal``
        in its data folder means that a start, by a person, a service manager or a reboot, brings
        it up in recovery, read-only, never accepting a write (it has no ``primary_conninfo`` to
        follow). Its WAL may hold commits no client was told about; it is rebuilt from the new
        primary (``pg_basebackup`` or ``pg_rewind``), never promoted back."""
        if self.postgres_pids():
            raise RuntimeError("fence a stopped server: it is still running")
        self._run("touch", str(self.data / "standby.signal"))

    def create_database(self, name: str) -> str:
        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"
