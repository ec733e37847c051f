"""The load run of issue 8: a clinic network's mixed workload over HTTP for a fixed time.

    python bench/load_network.py --db postgresql://postgres@127.0.0.1:5432/postgres \\
        --clinics 20 --workstations 2 --seconds 600 --json load.json

For a PostgreSQL URL a fresh database ``csledger_load_<random>`` is created on that server (and
dropped afterwards unless ``--keep``); without ``--db`` a fresh SQLite file is used. One
``csledger serve`` process serves every clinic; each workstation is a client thread in this
process (see ``bench/loadtest.py`` for the mix). Prints throughput, p50/p99 per operation,
errors and the server's memory over time, then runs ``verify --deep``; exits 1 if any request
failed or verification did not pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadtest import run_load  # noqa: E402


def fresh_postgres_database(admin_url: str) -> tuple[str, str]:
    name = f"csledger_load_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return str(sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)), name


def drop_postgres_database(admin_url: str, name: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="PostgreSQL server URL (a fresh database is created on it); default SQLite")
    ap.add_argument("--clinics", type=int, default=20)
    ap.add_argument("--workstations", type=int, default=2, help="concurrent workstations per clinic")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--think-ms", type=float, default=0,
                    help="mean pause of a workstation between operations (default 0: as fast as answered)")
    ap.add_argument("--sample-every", type=float, default=30, help="seconds between memory samples")
    ap.add_argument("--workdir", type=Path, help="folder for keys, logs and the SQLite file")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL database afterwards")
    args = ap.parse_args()
    out = Console()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="csledger-load-"))
    pg_name = None
    if args.db and args.db.startswith("postgresql"):
        url, pg_name = fresh_postgres_database(args.db)
    elif args.db:
        out.print("[red]--db must be a postgresql:// server URL (omit it for SQLite)[/]")
        return 2
    else:
        url = f"sqlite:///{folder / 'load.db'}"
    try:
        res = run_load(url, folder, clinics=args.clinics, workstations=args.workstations, seconds=args.seconds,
                       sample_every=args.sample_every, think_ms=args.think_ms, progress=lambda m: out.print(m, highlight=False))
    finally:
        if pg_name and not args.keep:
            drop_postgres_database(args.db, pg_name)
    res["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    res["machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                      "platform": platform.platform()}
    t = Table(title=f"{res['clinics']} clinics x {res['workstations_per_clinic']} workstations, {res['backend']}, "
                    f"{res['wall_s']:.0f} s" + (f", think {res['think_ms']:.0f} ms" if res["think_ms"] else ", no think time"))
    for col in ("operation", "count", "per s", "p50 ms", "p99 ms", "max ms", "after 1st min: p50 / p99 ms"):
        t.add_column(col, justify="right")
    for op, o in res["ops"].items():
        s = res["after_first_minute"].get(op)
        t.add_row(op, f"{o['count']:,}", f"{o['per_s']:.1f}", f"{o['p50_ms']:.0f}", f"{o['p99_ms']:.0f}", f"{o['max_ms']:.0f}",
                  f"{s['p50_ms']:.0f} / {s['p99_ms']:.0f}" if s else "-")
    t.add_row("all", f"{res['requests']:,}", f"{res['requests_per_s']:.1f}", "", "", "")
    out.print(t)
    out.print(f"commands (infusions + receipts): {res['commands']:,} = {res['commands_per_s']:.1f}/s")
    out.print("server memory (RSS MiB) over time: " + ", ".join(
        f"{m['t_s']:.0f}s {m['server_rss_mib']:.0f}" for m in res["memory"]))
    out.print(f"errors: {res['errors'] or 'none'}; client failures: {res['client_failures'] or 'none'}; "
              f"retries: {res['retries'] or 'none'}")
    out.print(f"verify --deep: exit {res['verify_deep']['exit']}: {res['verify_deep']['output'][-300:]}", highlight=False)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    ok = not res["errors"] and not res["client_failures"] and res["verify_deep"]["exit"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
