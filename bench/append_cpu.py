"""CPU and statements per command on the append path (issue 22): one receipt per command, one
writer, as ``csledger bench`` appends them (checkpoint signing and alert rules attached).

usage: python bench/append_cpu.py [--db URL] [--commands 2000] [--warm 200]

Prints the wall time and the process CPU time per command (``time.process_time``: what the
Python work costs, less sensitive than wall time to other load on the machine), then the SQL
statements one receipt runs, counted by wrapping the hand-written statements (``RawSql``) and
SQLAlchemy's cursor events. To compare two versions, run this script from each checkout in
turn (``PYTHONPATH=<checkout> python <checkout>/bench/append_cpu.py``), alternating, in one
sitting. Every figure printed is measured in this run.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from api.cli.bench import _receipt, _seed  # noqa: E402
from ledger import services  # noqa: E402
from ledger.services.alerts import attach_alert_rules  # noqa: E402
from ledger.settings import get_settings  # noqa: E402
from ledger.storage import store  # noqa: E402
from ledger.storage.log import attach  # noqa: E402
from ledger.storage.store import Ledger, migrate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="an empty database's URL (default: a new SQLite file)")
    ap.add_argument("--commands", type=int, default=2000)
    ap.add_argument("--warm", type=int, default=200, help="receipts recorded first, untimed")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="csledger-append-cpu-"))
    url = args.db or f"sqlite:///{tmp / 'ledger.db'}"
    ledger = Ledger.open(url)
    migrate(ledger.engine)
    attach(ledger, get_settings(database_url=url, key_dir=tmp / "keys"))
    attach_alert_rules(ledger)
    nurse, supplier = _seed(ledger)
    for i in range(args.warm):
        services.receive_stock(ledger, nurse, _receipt(supplier, i))
    n, start = args.commands, args.warm
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(start, start + n):
        services.receive_stock(ledger, nurse, _receipt(supplier, i))
    wall, cpu = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    print(f"{ledger.dialect}: {n} receipts, wall {wall * 1000:.3f} ms and CPU {cpu * 1000:.3f} ms per command")

    seen: list[str] = []
    real = store.RawSql._cursor

    def spy(self, conn, text, params):
        seen.append(" ".join(text.split())[:100])
        return real(self, conn, text, params)

    def sqlalchemy_statement(_conn, _cursor, statement, _params, _context, _many):
        seen.append("(SQLAlchemy) " + " ".join(statement.split())[:90])

    store.RawSql._cursor = spy
    sa.event.listen(ledger.engine, "before_cursor_execute", sqlalchemy_statement)
    sample = 10
    for i in range(start + n, start + n + sample):
        services.receive_stock(ledger, nurse, _receipt(supplier, i))
    store.RawSql._cursor = real
    print(f"statements per receipt: {len(seen) / sample:.1f}")
    for text, count in collections.Counter(seen).most_common():
        print(f"  {count / sample:4.1f}  {text}")
    ledger.dispose()


if __name__ == "__main__":
    main()
