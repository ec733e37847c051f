"""A throwaway PostgreSQL cluster of the test's own, so a test can SIGKILL the database server
without touching the shared one. Uses the server binaries of the Debian ``postgresql`` package
(``CSLEDGER_PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin``); as root, ``initdb`` and
``pg_ctl`` run as the ``postgres`` user (``initdb`` refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa


def pg_bin() -> Path | None:
    env = os.environ.get("CSLEDGER_PG_BIN")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class Cluster:
    def __init__(self, port: int):
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

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> Cluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        return self

    def start(self) -> None:
        r = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "120",
                      "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on "
                            f"-c synchronous_commit=on -c max_connections=200", "start", check=False)
        if r.returncode != 0:
            tail = (self.root / "log").read_text(errors="replace")[-1500:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({r.returncode}): {r.stdout}{r.stderr}\n{tail}")

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
