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
from decimal import Decimal
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
    nora = Principal(DEA, services.enroll_staff(ledger, admin, EnrollStaff("Nora Nurse", "nora", ("nurse",)))["staff_id"],
                     "Nora Nurse", AuthMethod.DEMO_SEED)
    # Issue 20: every inventory is witnessed by a second person.
    services.take_inventory(ledger, pia, TakeInventory("initial", "opening_of_business", start, items=(
        InventoryItemInput("67457-0001-10", "KA2601", "2028-03-31", sealed=True, containers=4),)), witness=nora)
    step = timedelta(days=365) / receipts
    for i in range(receipts):
        clock.now = start + timedelta(minutes=5) + step * i
        services.receive_stock(ledger, pia, ReceiveStock(
            supplier_id=sup, invoice_number=f"GMS-{i:06d}", occurred_at=clock.now - timedelta(minutes=1),
            lines=(ReceivedLineInput("67457-0001-10", 1 + i % 10, f"KA{i % 97:04d}", "2028-06-30"),)))
    ledger.dispose()
    return "2025-01-01", "2025-12-31"


def _no_fsync(ledger: Ledger) -> None:
    """A throwaway benchmark database is seeded without fsync (``PRAGMA synchronous=OFF`` after
    the engine's own ``FULL``): seeding 200,000 infusions is then bound by the CPU, not the disk.
    What is measured (the report build) only reads."""
    import sqlalchemy as sa

    if ledger.engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(ledger.engine, "connect")
    def _off(dbapi_conn, _record):  # registered after the engine's own listener: runs after it
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()

    ledger.engine.dispose()  # connections made before the listener reconnect with it


#: The prescriber every benchmark infusion names (a fictitious DEA number with a valid check digit).
PRESCRIBER_DEA = "BP2345672"


def seed_administrations(url: str, rows: int, *, patients: int = 50) -> tuple[str, str]:
    """A registrant with an initial inventory and ``rows`` infusions over a year, each drawing
    1.00 mL of a 10 mL vial, giving 0.80 mL and wasting 0.20 mL before a witness in the same
    command (two entries, one administration-log row); vials are received 2,000 at a time as the
    stock runs out. Returns the report period (first and last day)."""
    import base64
    import secrets

    from ledger.domain.commands import (
        AdministerDose,
        DrawInput,
        RegisterPatient,
        RegisterPrescriber,
        WasteInput,
    )
    from ledger.storage.patient_keys import PatientKeys

    start = datetime(2025, 1, 1, 14, 0, tzinfo=UTC)
    clock = _Clock(start)
    ledger = Ledger.open(url, clock=clock)
    _no_fsync(ledger)
    migrate(ledger.engine)
    res = services.register_registrant(ledger, RegisterRegistrant(
        DEA, "Bench Ketamine Clinic", AddressInput("1 Main St", "Austin", "TX", "78701"), "America/Chicago",
        "Avery Admin", "avery"))
    admin = Principal(DEA, res["admin_staff_id"], "Avery Admin", AuthMethod.DEMO_SEED)
    from ledger.services.report_key import certify_report_key

    certify_report_key(ledger, admin, key_dir_of(url))

    def staff(name: str, user: str, role: str) -> Principal:
        sid = services.enroll_staff(ledger, admin, EnrollStaff(name, user, (role,)))["staff_id"]
        return Principal(DEA, sid, name, AuthMethod.DEMO_SEED)

    pia, nora, ned = (staff("Pia Pharmacist", "pia", "pharmacist"), staff("Nora Nurse", "nora", "nurse"),
                      staff("Ned Nurse", "ned", "nurse"))
    dana = staff("Dr. Dana Prescriber", "dana", "prescriber")
    services.add_product(ledger, admin, AddProduct("67457-0001-10", "Ketamine HCl injection 50 mg/mL", "7285", "III",
                                                   "injection", "50.00", "10.00"))
    sup = services.add_supplier(ledger, admin, AddSupplier(
        "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"), "PB1234563",
        registration_expires_on="2099-12-31", schedules=("3", "3N"), authorized_trading_partner=True))["supplier_id"]
    services.register_prescriber(ledger, admin, RegisterPrescriber(
        "Dr. Dana Prescriber", PRESCRIBER_DEA, "TX", ("3", "3N"), "2099-12-31", "TX-Q4821", "TX", dana.staff_id))
    services.take_inventory(ledger, pia, TakeInventory("initial", "opening_of_business", start, items=(
        InventoryItemInput("67457-0001-10", "KA2601", "2028-03-31", sealed=True, containers=4),)), witness=nora)
    keys = PatientKeys.from_base64(base64.b64encode(secrets.token_bytes(32)).decode())
    pids = [services.register_patient(ledger, nora, RegisterPatient(
        f"Bench Patient {i}", AddressInput(f"{10 + i} Cedar St", "Austin", "TX", "78704")), keys=keys)["patient_id"]
        for i in range(patients)]
    step = (timedelta(days=364) - timedelta(hours=1)) / rows
    vials: list[str] = []
    left = 0  # mL left in vials[0]
    receipts = 0
    for i in range(rows):
        began = start + timedelta(minutes=30) + step * i
        clock.now = began + timedelta(minutes=2)
        if not vials:
            receipts += 1
            vials = services.receive_stock(ledger, pia, ReceiveStock(
                supplier_id=sup, invoice_number=f"GMS-{receipts:06d}", occurred_at=began,
                lines=tuple(ReceivedLineInput("67457-0001-10", 10, f"KA{receipts:04d}", "2028-06-30")
                            for _ in range(200))))["vial_ids"]
            left = 10
        nurse, witness = (nora, ned) if i % 2 else (ned, nora)
        services.administer_dose(ledger, nurse, AdministerDose(
            pids[i % patients], PRESCRIBER_DEA, f"{60 + i % 50}.00", "0.50", (DrawInput(vials[0], "1.00"),), "0.80",
            began, began + timedelta(minutes=1), waste=WasteInput("0.20", "expelled into drug disposal container")),
            witness=witness)
        left -= 1
        if left == 0:
            vials.pop(0)
            left = 10
    ledger.dispose()
    return "2025-01-01", "2025-12-31"


def add_closing_count(url: str) -> None:
    """End the seeded year with a count of every product (two counters, what the book holds),
    so an accountability audit has a window: from the initial inventory to this count (issue 20).
    Taken on 2025-12-31 at 20:00 UTC, after the last seeded entry."""
    from ledger.domain.commands import CountLineInput, StartCount, SubmitCount
    from ledger.services.counts import start_count, submit_count
    from ledger.storage.store import Ledger

    at = datetime(2025, 12, 31, 20, 0, tzinfo=UTC)
    ledger = Ledger.open(url, clock=_Clock(at))
    _no_fsync(ledger)
    with ledger.reading() as conn:
        import sqlalchemy as sa

        rows = conn.execute(sa.text("SELECT staff_id, printed_name, username FROM staff WHERE registrant = :r"),
                            {"r": DEA}).mappings().all()
    who = {r["username"]: Principal(DEA, r["staff_id"], r["printed_name"], AuthMethod.DEMO_SEED) for r in rows}
    pia, nora = who["pia"], who["nora"]
    session = start_count(ledger, pia, StartCount(blind=False))
    lines = []
    for p in session["products"]:
        opened, ml = int(p["expected_open_containers"]), Decimal(p["expected_ml"])
        sealed = int(p["expected_sealed_containers"])
        lines.append(CountLineInput(p["ndc"], sealed, opened, str(ml - sealed * Decimal(p["container_ml"]))))
    submit_count(ledger, pia, SubmitCount(session["session_id"], tuple(lines), at), second_counter=nora)
    ledger.dispose()


def key_dir_of(url: str) -> Path:
    """The key folder of a bench database (beside it, one per database: two sizes seeded in one
    folder would otherwise replace each other's key), passed to the child processes."""
    db = Path(url.removeprefix("sqlite:///"))
    return db.parent / f"{db.name}-keys"


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


#: What the bench builds: the receiving log (a receipt a row), the administration log (an
#: infusion with its witnessed waste a row) and the accountability audit of the same infusions
#: (the seeded year closed by a count, so the audit has a window).
KINDS = ("receiving", "administrations", "audit")

#: Issue 22's targets for a report build: 10x the rows within 11x the time, and peak memory
#: flat, a 200,000-row administration log within 300 MiB of resident memory.
LINEAR_TARGET = 11.0
RSS_CAP_MIB = 300


def _seeded(console: Console, tmp: Path, kind: str, rows: int, reuse: bool) -> tuple[str, str, str]:
    """The database URL of a ledger seeded for ``kind`` with ``rows`` report rows, and the period."""
    db = tmp / (f"report-bench-{rows}.db" if kind == "receiving" else f"report-bench-{kind}-{rows}.db")
    url = f"sqlite:///{db}"
    if db.exists() and reuse:
        console.print(f"reusing {db}")
        return url, "2025-01-01", "2025-12-31"
    for old in tmp.glob(db.name + "*"):
        old.unlink()
    t0 = time.perf_counter()
    start, end = seed(url, rows) if kind == "receiving" else seed_administrations(url, rows)
    if kind == "audit":
        add_closing_count(url)
    console.print(f"seeded {rows:,} {kind} rows in {time.perf_counter() - t0:.1f} s ({db})")
    return url, start, end


def _measure(console: Console, tmp: Path, kind: str, rows: int, *, paper: str, reuse: bool,
             verify: bool) -> dict:
    """Build (and verify) the ``kind`` report of ``rows`` rows in child processes."""
    url, start, end = _seeded(console, tmp, kind, rows, reuse)
    out = tmp / f"{kind}-{rows}.pdf"
    keys = {"CSLEDGER_KEY_DIR": str(key_dir_of(url))}
    build_s, build_cpu, build_kib = _child(["report", kind, "--registrant", DEA, "--from", start, "--to", end,
                                            "--out", str(out), "--paper", paper, "--db", url], tmp, keys)
    from pypdf import PdfReader

    pages = len(PdfReader(out).pages)
    figures = {"kind": kind, "rows": rows, "pages": pages, "bytes": out.stat().st_size,
               "build_s": round(build_s, 1), "build_cpu_s": round(build_cpu, 1),
               "build_peak_mib": round(build_kib / 1024)}
    line = (f"{'audit of the administrations' if kind == 'audit' else f'{kind} log'}, {rows:,} rows: {pages:,} pages, {figures['bytes']:,} bytes; build {build_s:.1f} s wall, "
            f"{build_cpu:.1f} s CPU, peak RSS {figures['build_peak_mib']} MiB")
    if verify:
        verify_s, verify_cpu, verify_kib = _child(["verify-report", str(out), "--db", url], tmp, keys)
        figures.update(verify_s=round(verify_s, 1), verify_cpu_s=round(verify_cpu, 1),
                       verify_peak_mib=round(verify_kib / 1024))
        line += (f"; verify-report {verify_s:.1f} s wall, {verify_cpu:.1f} s CPU, "
                 f"peak RSS {figures['verify_peak_mib']} MiB")
    console.print(line)
    return figures


def run_report_bench(console: Console, *, receipts: int, workdir: Path | None, paper: str = "letter",
                     reuse: bool = False, kind: str = "receiving", scale: int = 1, verify: bool = True) -> dict:
    """Seed, build the ``kind`` report (the receiving or administration log of ``receipts`` rows,
    or the audit of that many administrations: ``KINDS``) and, with
    ``scale`` > 1, of ``scale`` times as many, each in its own child process (separate peaks);
    verify each (``verify``). Prints the figures and, for two sizes, the ratios against issue
    22's targets: time linear in rows (CPU ratio within 1.1 x ``scale``) and the peak within
    ``RSS_CAP_MIB``. Returns the figures (one size: that size's; two: ``small``, ``large`` and the
    ratios)."""
    if kind not in KINDS:
        raise ValueError(f"the report bench builds one of {', '.join(KINDS)}")
    tmp = Path(workdir or tempfile.mkdtemp(prefix="csledger-report-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    small = _measure(console, tmp, kind, receipts, paper=paper, reuse=reuse, verify=verify)
    if scale <= 1:
        return small
    large = _measure(console, tmp, kind, receipts * scale, paper=paper, reuse=reuse, verify=verify)
    cpu = large["build_cpu_s"] / small["build_cpu_s"] if small["build_cpu_s"] else float("inf")
    wall = large["build_s"] / small["build_s"] if small["build_s"] else float("inf")
    target = LINEAR_TARGET * scale / 10
    growth = (large["build_peak_mib"] - small["build_peak_mib"]) / (large["rows"] - small["rows"]) * 1000
    console.print(f"{kind} build, {scale}x the rows ({small['rows']:,} -> {large['rows']:,}): "
                  f"{cpu:.2f}x the CPU time ({wall:.2f}x wall), target within {target:.1f}x: "
                  f"{'MET' if cpu <= target else 'NOT MET'}")
    console.print(f"{kind} build peak RSS: {small['build_peak_mib']} MiB -> {large['build_peak_mib']} MiB "
                  f"({growth:+.2f} MiB per 1,000 rows), cap {RSS_CAP_MIB} MiB at {large['rows']:,} rows: "
                  f"{'MET' if large['build_peak_mib'] <= RSS_CAP_MIB else 'NOT MET'}")
    result = {"small": small, "large": large, "cpu_ratio": round(cpu, 2), "wall_ratio": round(wall, 2),
              "target_ratio": target, "peak_growth_mib_per_1000": round(growth, 2), "rss_cap_mib": RSS_CAP_MIB}
    if verify:  # issue 22: verify-report has the same targets as the build
        v_cpu = large["verify_cpu_s"] / small["verify_cpu_s"] if small["verify_cpu_s"] else float("inf")
        v_wall = large["verify_s"] / small["verify_s"] if small["verify_s"] else float("inf")
        console.print(f"{kind} verify-report, {scale}x the rows: {v_cpu:.2f}x the CPU time ({v_wall:.2f}x wall), "
                      f"target within {target:.1f}x: {'MET' if v_cpu <= target else 'NOT MET'}")
        console.print(f"{kind} verify-report peak RSS: {small['verify_peak_mib']} MiB -> {large['verify_peak_mib']} MiB, "
                      f"cap {RSS_CAP_MIB} MiB at {large['rows']:,} rows: "
                      f"{'MET' if large['verify_peak_mib'] <= RSS_CAP_MIB else 'NOT MET'}")
        result.update(verify_cpu_ratio=round(v_cpu, 2), verify_wall_ratio=round(v_wall, 2))
    return result
