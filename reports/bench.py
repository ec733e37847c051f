"""``csledger report-bench``: time and peak memory of building and verifying a long report.

Seeds a fresh SQLite ledger with one clinic-year of receipts (one entry, one row each, spread
over a simulated year), then runs ``csledger report`` and ``csledger verify-report`` as child
processes, so each one's peak resident memory is its own (``RUSAGE_CHILDREN``), not the seeding's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    EnrollStaff,
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    RegisterRegistrant,
    TakeInventory,
)
from ledger.domain.principal import AuthMethod, Principal
from ledger.storage.store import Ledger, migrate

DEA = "AB1234563"


class _Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def seed(url: str, receipts: int) -> tuple[str, str]:
    """A registrant with an initial inventory and ``receipts`` one-line receipts over a year;
    returns the report period (first and last day)."""
    start = datetime(2025, 1, 1, 14, 0, tzinfo=UTC)
    clock = _Clock(start)
    ledger = Ledger.open(url, clock=clock)
    migrate(ledger.engine)
    res = services.register_registrant(ledger, RegisterRegistrant(
        DEA, "Bench Ketamine Clinic", AddressInput("1 Main St", "Austin", "TX", "78701"), "America/Chicago",
        "Avery Admin", "avery"))
    admin = Principal(DEA, res["admin_staff_id"], "Avery Admin", AuthMethod.DEMO_SEED)
    # Reports are signed (issue 18): the report key, in the key folder the child processes use.
    from ledger.services.report_key import certify_report_key

    certify_report_key(ledger, admin, key_dir_of(url))
    sid = services.enroll_staff(ledger, admin, EnrollStaff("Pia Pharmacist", "pia", ("pharmacist",)))["staff_id"]
    pia = Principal(DEA, sid, "Pia Pharmacist", AuthMethod.DEMO_SEED)
    services.add_product(ledger, admin, AddProduct("67457-0001-10", "Ketamine HCl injection 50 mg/mL", "7285", "III",
                                                   "injection", "50.00", "10.00"))
    sup = services.add_supplier(ledger, admin, AddSupplier(
        "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"), "PB1234563",
        registration_expires_on="2099-12-31", schedules=("3", "3N"), authorized_trading_partner=True))["supplier_id"]
    services.take_inventory(ledger, pia, TakeInventory("initial", "opening_of_business", start, items=(
        InventoryItemInput("67457-0001-10", "KA2601", "2028-03-31", sealed=True, containers=4),)))
    step = timedelta(days=365) / receipts
    for i in range(receipts):
        clock.now = start + timedelta(minutes=5) + step * i
        services.receive_stock(ledger, pia, ReceiveStock(
            supplier_id=sup, invoice_number=f"GMS-{i:06d}", occurred_at=clock.now - timedelta(minutes=1),
            lines=(ReceivedLineInput("67457-0001-10", 1 + i % 10, f"KA{i % 97:04d}", "2028-06-30"),)))
    ledger.dispose()
    return "2025-01-01", "2025-12-31"


def key_dir_of(url: str) -> Path:
    """The key folder of a bench database (beside it), passed to the child processes."""
    return Path(url.removeprefix("sqlite:///")).parent / "csledger-keys"


def _child(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS in KiB of one child process.

    CPU time is reported beside wall time because the machine is shared: wall time moves with
    the load, CPU time much less. Peak RSS comes from ``wait4`` on this child alone."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {err or out}")
    return took, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def run_report_bench(console: Console, *, receipts: int, workdir: Path | None, paper: str = "letter",
                     reuse: bool = False) -> dict:
    """Seed, build the receiving log, verify it; print and return the figures."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix="csledger-report-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db = tmp / f"report-bench-{receipts}.db"
    url = f"sqlite:///{db}"
    if db.exists() and reuse:
        start, end = "2025-01-01", "2025-12-31"
        console.print(f"reusing {db}")
    else:
        if db.exists():
            db.unlink()
        t0 = time.perf_counter()
        start, end = seed(url, receipts)
        console.print(f"seeded {receipts:,} receipts in {time.perf_counter() - t0:.1f} s ({db})")
    out = tmp / f"receiving-{receipts}.pdf"
    keys = {"CSLEDGER_KEY_DIR": str(key_dir_of(url))}
    build_s, build_cpu, build_kib = _child(["report", "receiving", "--registrant", DEA, "--from", start, "--to", end,
                                    "--out", str(out), "--paper", paper, "--db", url], tmp, keys)
    from pypdf import PdfReader

    pages = len(PdfReader(out).pages)
    verify_s, verify_cpu, verify_kib = _child(["verify-report", str(out), "--db", url], tmp, keys)
    figures = {"rows": receipts, "pages": pages, "bytes": out.stat().st_size, "build_s": round(build_s, 1),
               "build_cpu_s": round(build_cpu, 1), "build_peak_mib": round(build_kib / 1024),
               "verify_s": round(verify_s, 1), "verify_cpu_s": round(verify_cpu, 1),
               "verify_peak_mib": round(verify_kib / 1024)}
    console.print(f"receiving log, {receipts:,} rows: {pages:,} pages, {figures['bytes']:,} bytes; "
                  f"build {build_s:.1f} s wall, {build_cpu:.1f} s CPU, peak RSS {figures['build_peak_mib']} MiB; "
                  f"verify-report {verify_s:.1f} s wall, {verify_cpu:.1f} s CPU, peak RSS {figures['verify_peak_mib']} MiB")
    return figures
