"""``csledger demo``: a deterministic demo data set built through the same services as
everything else, as the demo's seeded staff (``auth_method: demo_seed``), then ``verify --deep``.

The demo simulates weeks of clinic history, so its ledger runs on a simulated clock: each
command is recorded a few minutes after the event it describes.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from .ledger import services
from .ledger.commands import (
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
from .ledger.errors import Conflict
from .ledger.log import attach
from .ledger.principal import AuthMethod, Principal
from .ledger.store import Ledger, migrate, tree_size
from .ledger.verify import verify
from .settings import Settings
from .witness import run_demo_witness

LOCATIONS = [
    ("AB1234563", "Calm Waters Ketamine Clinic - Austin", AddressInput("100 Harbor Way", "Austin", "TX", "78701"), "America/Chicago"),
    ("FB7654329", "Calm Waters Ketamine Clinic - Denver", AddressInput("2200 Larimer St", "Denver", "CO", "80205"), "America/Denver"),
]
STAFF = [("Morgan Manager", "morgan", ("manager",)), ("Nora Nurse", "nora", ("nurse",)),
         ("Ned Nurse", "ned", ("nurse",)), ("Pia Pharmacist", "pia", ("pharmacist",)),
         ("Casey Compliance", "casey", ("compliance_officer",)), ("Dr. Dana Prescriber", "dana", ("prescriber",))]
PRODUCTS = [("42023-0113-10", "Ketamine HCl injection 50 mg/mL", "50.00", "10.00"),
            ("0409-2051-05", "Ketamine HCl injection 10 mg/mL", "10.00", "20.00")]


class SimClock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def run_demo(settings: Settings, *, seed: int, console: Console) -> dict:
    rng = random.Random(seed)
    start = datetime(2026, 9, 1, 14, 0, tzinfo=UTC)
    clock = SimClock(start)
    ledger = Ledger.open(settings.database_url, clock=clock)
    migrate(ledger.engine)
    log = attach(ledger, settings)  # issue 4: checkpoints signed in every append transaction
    for dea, *_ in LOCATIONS:
        with ledger.reading() as c:
            if tree_size(c, dea):
                raise Conflict(f"the database already holds {dea}; run the demo on a fresh database (--db)", field="database_url")
    summary = {}
    for dea, name, addr, tz in LOCATIONS:
        res = services.register_registrant(ledger, RegisterRegistrant(dea, name, addr, tz, "Avery Admin", "avery"))
        admin = Principal(dea, res["admin_staff_id"], "Avery Admin", AuthMethod.DEMO_SEED)
        people = {}
        for printed, user, roles in STAFF:
            sid = services.enroll_staff(ledger, admin, EnrollStaff(printed, user, roles))["staff_id"]
            people[user] = Principal(dea, sid, printed, AuthMethod.DEMO_SEED)
        for ndc, pname, strength, container in PRODUCTS:
            services.add_product(ledger, admin, AddProduct(ndc, pname, "7285", "III", "injection", strength, container))
        sup = services.add_supplier(ledger, admin, AddSupplier(
            "Gulf Medical Supply", AddressInput("5 Depot Rd", "Houston", "TX", "77002"), "PB1234563"))["supplier_id"]
        clock.now = start + timedelta(minutes=30)
        services.take_inventory(ledger, people["pia"], TakeInventory(
            "initial", "opening_of_business", clock.now - timedelta(minutes=10), items=(
                InventoryItemInput(PRODUCTS[0][0], "KA2601", "2028-03-31", sealed=True, containers=4),
                InventoryItemInput(PRODUCTS[0][0], "KA2601", "2028-03-31", sealed=False, ml="6.00"),
            )))
        for week in range(8):
            clock.now = start + timedelta(days=7 * week + 1, hours=rng.randint(1, 5))
            services.receive_stock(ledger, people[rng.choice(["nora", "ned", "pia"])], ReceiveStock(
                supplier_id=sup, invoice_number=f"GMS-{dea[-4:]}-{week + 1:04d}", occurred_at=clock.now - timedelta(minutes=20),
                lines=(ReceivedLineInput(PRODUCTS[0][0], rng.randint(5, 10), f"KA26{week + 10:02d}", "2028-06-30"),)),
                idempotency_key=f"demo-{dea}-receipt-{week}")
        with ledger.reading() as c:
            summary[dea] = tree_size(c, dea)
    run_demo_witness(log, summary, Path(settings.key_dir).with_name("csledger-demo-witness"), console)  # issue 4
    report = verify(ledger, deep=True)
    ledger.dispose()
    for dea, n in summary.items():
        console.print(f"{dea}: {n} entries")
    if not report.ok:
        raise RuntimeError(f"demo data failed verify --deep: {report.problems[0]}")
    console.print(f"verify --deep: OK ({report.entries} entries)")
    return summary
