"""``csledger bench``: durable appends/s and verify entries/s, each beside a bare
``sqlite3`` + ``hashlib`` loop over rows of the same size in the same run, with the ratios.

Every figure printed is measured in this run; nothing is hard-coded.
"""

from __future__ import annotations

import hashlib
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    ReceivedLineInput,
    ReceiveStock,
    RegisterRegistrant,
)
from ledger.domain.principal import AuthMethod, Principal
from ledger.services.verify import verify
from ledger.storage.store import Ledger, entries_t, migrate

BENCH_DEA = "AB1234563"


def _seed(ledger: Ledger) -> tuple[Principal, str]:
    res = services.register_registrant(ledger, RegisterRegistrant(
        dea_number=BENCH_DEA, name="Bench Clinic", address=AddressInput("1 Main St", "Austin", "TX", "78701"),
        time_zone="America/Chicago", admin_printed_name="Bench Admin", admin_username="admin"))
    admin = Principal(BENCH_DEA, res["admin_staff_id"], "Bench Admin", AuthMethod.CONSOLE_BOOTSTRAP)
    services.add_product(ledger, admin, AddProduct("42023-0113-10", "Ketamine HCl injection", "7285", "III",
                                                  "injection", "50.00", "10.00"))
    from ledger.domain.commands import EnrollStaff

    nurse = services.enroll_staff(ledger, admin, EnrollStaff("Bench Nurse", "nurse", ("nurse",)))
    sup = services.add_supplier(ledger, admin, AddSupplier("Bench Wholesale", AddressInput("2 Depot Rd", "Dallas", "TX", "75201"), "PB1234563"))
    return Principal(BENCH_DEA, nurse["staff_id"], "Bench Nurse", AuthMethod.PASSWORD), sup["supplier_id"]


def _receipt(supplier_id: str, i: int) -> ReceiveStock:
    return ReceiveStock(supplier_id=supplier_id, invoice_number=f"INV-{i:08d}",
                        occurred_at=datetime.now(UTC) - timedelta(minutes=1),
                        lines=(ReceivedLineInput("42023-0113-10", 1, "LOT-A1", "2030-01-31"),))


def _bare_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE rows (registrant TEXT, seq INTEGER, prev TEXT, leaf TEXT, data BLOB, PRIMARY KEY (registrant, seq))")
    return conn


def bare_append(path: Path, payloads: list[bytes]) -> float:
    """Appends/s of the bare loop: hash, insert, commit per row (same durability settings)."""
    conn = _bare_db(path)
    prev = "0" * 64
    t0 = time.perf_counter()
    for i, data in enumerate(payloads):
        leaf = hashlib.sha256(b"\x00" + data).hexdigest()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO rows VALUES (?,?,?,?,?)", (BENCH_DEA, i, prev, leaf, data))
        conn.execute("COMMIT")
        prev = leaf
    dt = time.perf_counter() - t0
    conn.close()
    return len(payloads) / dt


def bare_verify(path: Path) -> float:
    """Entries/s of the bare loop: stream rows, re-hash, check the link."""
    conn = sqlite3.connect(path)
    t0 = time.perf_counter()
    prev = "0" * 64
    n = 0
    for _seq, p, leaf, data in conn.execute("SELECT seq, prev, leaf, data FROM rows WHERE registrant=? ORDER BY seq", (BENCH_DEA,)):
        h = hashlib.sha256(b"\x00" + data).hexdigest()
        if h != leaf or p != prev:
            raise AssertionError("bare loop found a bad row")
        prev = leaf
        n += 1
    dt = time.perf_counter() - t0
    conn.close()
    return n / dt


def _copy_rows(ledger: Ledger, path: Path) -> int:
    """Copy the ledger's rows into the bare table, so both loops read the same bytes."""
    conn = _bare_db(path)
    with ledger.reading() as lc:
        rows = lc.execute(entries_t.select().where(entries_t.c.registrant == BENCH_DEA).order_by(entries_t.c.seq)).mappings()
        conn.execute("BEGIN")
        n = 0
        for r in rows:
            conn.execute("INSERT INTO rows VALUES (?,?,?,?,?)", (BENCH_DEA, r["seq"], r["prev_hash"], r["leaf_hash"], bytes(r["canonical"])))
            n += 1
        conn.execute("COMMIT")
    conn.close()
    return n


def _grow(ledger: Ledger, nurse: Principal, supplier_id: str, target: int, start: int) -> int:
    """Append receipts until the log holds ``target`` entries, many per transaction (fast fill)."""
    from ledger.storage.store import tree_size

    i = start
    while True:
        with ledger.reading() as c:
            size = tree_size(c, BENCH_DEA)
        if size >= target:
            return i
        batch = min(500, target - size)

        def build(ctx, batch=batch, i0=i):
            from ledger.domain import entries as ev
            from ledger.domain.principal import Meaning

            sig = ctx.signature(nurse, Meaning.RECEIVED)
            sup = ctx.view.get("suppliers", (BENCH_DEA, supplier_id))
            product = services.product_copy(ctx, "42023-0113-10", field="ndc")
            for k in range(batch):
                ctx.append(ev.StockReceived(
                    invoice_number=f"FILL-{i0 + k:08d}",
                    supplier=ev.SupplierCopy(sup["supplier_id"], sup["name"], ev.Address(sup["street"], sup["city"], sup["state"], sup["postal_code"]), sup["dea_number"]),
                    lines=(ev.ReceivedLine(product, 1, "LOT-A1", datetime(2030, 1, 31).date(), (f"V{ctx.next_seq}-1",)),),
                ), signatures=[sig], occurred_at=ctx.now)
            return {}

        ledger.execute(BENCH_DEA, "bench_fill", {"i": i}, build, principal_id=nurse.staff_id)
        i += batch


def _timed_verify(ledger: Ledger, deep: bool) -> tuple[float, int]:
    t0 = time.perf_counter()
    report = verify(ledger, deep=deep)
    dt = time.perf_counter() - t0
    if not report.ok:
        raise AssertionError(f"verify failed in bench: {report.problems[0]}")
    return report.entries / dt, report.entries


def _peak_verify_memory(ledger: Ledger, deep: bool) -> int:
    tracemalloc.start()
    verify(ledger, deep=deep)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def run_bench(console: Console, *, entries: int, verify_entries: int, workdir: Path | None, pg_url: str | None,
              production: bool = True) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="csledger-bench-", dir=workdir))
    url = pg_url or f"sqlite:///{tmp / 'ledger.db'}"
    ledger = Ledger.open(url)
    migrate(ledger.engine)
    if production:
        # What a clinic runs: a checkpoint signed in every append transaction (issue 4) and the
        # in-transaction alert rules (issue 7), exactly as ``csledger serve`` attaches them.
        from ledger.services.alerts import attach_alert_rules
        from ledger.settings import get_settings
        from ledger.storage.log import attach

        attach(ledger, get_settings(database_url=url, key_dir=tmp / "keys"))
        attach_alert_rules(ledger)
    nurse, supplier_id = _seed(ledger)

    # 1. durable single-command appends (one receipt = one entry per command)
    per_cmd = []
    t0 = time.perf_counter()
    for i in range(entries):
        s = time.perf_counter()
        services.receive_stock(ledger, nurse, _receipt(supplier_id, i))
        per_cmd.append(time.perf_counter() - s)
    ours_append = entries / (time.perf_counter() - t0)
    with ledger.reading() as c:
        sample = [bytes(r) for r in c.execute(entries_t.select().with_only_columns(entries_t.c.canonical)
                                               .where(entries_t.c.registrant == BENCH_DEA).order_by(entries_t.c.seq.desc()).limit(entries)).scalars()]
    bare_append_rate = bare_append(tmp / "bare-append.db", list(reversed(sample)))

    # 2. verify at two sizes (memory must not grow with the log)
    results = {"dialect": ledger.dialect, "appends_per_s": ours_append, "bare_appends_per_s": bare_append_rate,
               "append_p50_ms": statistics.median(per_cmd) * 1000,
               "append_p99_ms": sorted(per_cmd)[int(len(per_cmd) * 0.99) - 1] * 1000}
    small = max(verify_entries // 4, entries + 10)
    nxt = _grow(ledger, nurse, supplier_id, small, entries)
    mem_small = (_peak_verify_memory(ledger, False), _peak_verify_memory(ledger, True))
    _grow(ledger, nurse, supplier_id, verify_entries, nxt)
    mem_large = (_peak_verify_memory(ledger, False), _peak_verify_memory(ledger, True))
    v_rate, v_n = _timed_verify(ledger, False)
    d_rate, _ = _timed_verify(ledger, True)
    _copy_rows(ledger, tmp / "bare-verify.db")  # the bare loop reads the same bytes from plain sqlite3
    bare_v = statistics.median(bare_verify(tmp / "bare-verify.db") for _ in range(3))
    results.update({"verify_entries": v_n, "verify_per_s": v_rate, "verify_deep_per_s": d_rate, "bare_verify_per_s": bare_v,
                    "verify_peak_bytes": {small: mem_small[0], verify_entries: mem_large[0]},
                    "deep_peak_bytes": {small: mem_small[1], verify_entries: mem_large[1]}})
    ledger.dispose()

    mode = "checkpoint signing + alert rules" if production else "ledger only, no checkpoints"
    t = Table(title=f"csledger bench ({ledger.dialect}, {mode}, {entries} appends, verify over {v_n} entries)")
    t.add_column("measure")
    t.add_column("csledger", justify="right")
    t.add_column("bare sqlite3+hashlib", justify="right")
    t.add_column("ratio", justify="right")
    t.add_row("durable single-command appends/s", f"{ours_append:,.0f}", f"{bare_append_rate:,.0f}", f"{ours_append / bare_append_rate:.2f}x")
    t.add_row("verify entries/s", f"{v_rate:,.0f}", f"{bare_v:,.0f}", f"{v_rate / bare_v:.2f}x")
    t.add_row("verify --deep entries/s", f"{d_rate:,.0f}", f"{bare_v:,.0f}", f"{d_rate / bare_v:.2f}x")
    console.print(t)
    console.print(f"append latency p50 {results['append_p50_ms']:.2f} ms, p99 {results['append_p99_ms']:.2f} ms")
    console.print(f"verify peak traced memory: {mem_small[0] / 1024:,.0f} KiB at {small} entries, "
                  f"{mem_large[0] / 1024:,.0f} KiB at {verify_entries} entries")
    console.print(f"verify --deep peak traced memory: {mem_small[1] / 1024:,.0f} KiB at {small} entries, "
                  f"{mem_large[1] / 1024:,.0f} KiB at {verify_entries} entries (holds rebuilt projections: one row per vial)")
    return results
