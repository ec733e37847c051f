"""Review 19 (issue 19's cartons, kits and corrections): a unit still in its sealed package is
used or taken off the book only after the package's witnessed opening, by every service, as
``verify --deep``'s rules replay (``package-sealed``) demands. Before the fixes, one nurse alone
recorded an esketamine session from an unopened Spravato kit, and a correction took a unit out
of a sealed carton; both were accepted by the service and then failed ``verify --deep``.
SQLite only (the checks are in the services, above storage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from ledger import services
from ledger.domain.commands import (
    AddProduct,
    CorrectEntry,
    CorrectionLineInput,
    OpenPackage,
    ReceivedLineInput,
    ReceiveStock,
    RecordEsketamineSession,
)
from ledger.domain.errors import Conflict
from ledger.services.verify import verify
from tests.clinical.conftest import Ops
from tests.conftest import DEA, KETAMINE_50, an_hour_ago, entry_count

SPRAVATO_KIT = "50458-0028-02"  # a kit of 2 nasal-spray devices (the NDC reference's units per package)
INVOICES = count(1)


@pytest.fixture
def ops(ledger) -> Ops:
    return Ops(ledger)


def receive_packages(ops: Ops, ndc: str, packages: int, lot: str) -> dict:
    return services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
        supplier_id=ops.supplier_id, invoice_number=f"INV-R19-{next(INVOICES)}",
        occurred_at=datetime.now(UTC) - timedelta(hours=6),
        lines=(ReceivedLineInput(ndc, None, lot, "2028-06-30", packages=packages),)))


def session(ops: Ops, device_ids: list[str]) -> dict:
    at = datetime.now(UTC) - timedelta(hours=3)
    return services.record_esketamine_session(ops.ledger, ops.nurse, RecordEsketamineSession(
        ops.patient_id, DEA, tuple(device_ids), "56.00", at, at, at + timedelta(hours=2, minutes=5)))


def test_a_session_cannot_use_devices_of_an_unopened_kit(ops):
    services.add_product(ops.ledger, ops.admin, AddProduct(
        SPRAVATO_KIT, "Spravato (esketamine) nasal spray 28 mg", "7285", "III", "nasal spray", "140.00", "0.20"))
    res = receive_packages(ops, SPRAVATO_KIT, 1, "SPR-R19")
    (kit,) = res["package_ids"]
    devices = res["vial_ids"]
    assert len(devices) == 2
    before = entry_count(ops.ledger)
    with pytest.raises(Conflict) as exc:
        session(ops, devices)
    assert exc.value.field == "device_ids[0]" and kit in exc.value.reason and "witness" in exc.value.reason
    assert entry_count(ops.ledger) == before  # nothing recorded
    # opened before a witness, its devices are used as before, and the chain replays clean
    opened = services.open_package(ops.ledger, ops.nurse, OpenPackage(kit, 2, an_hour_ago() - timedelta(hours=3)),
                                   witness=ops.nurse2)
    assert opened["units_found"] == devices
    assert session(ops, devices)["dose_mg"] == "56.00"
    report = verify(ops.ledger, deep=True)
    assert report.ok, [str(p) for p in report.problems]


def test_a_correction_cannot_take_a_unit_out_of_its_sealed_carton(ops):
    res = receive_packages(ops, KETAMINE_50, 1, "LOT-R19")
    (carton,) = res["package_ids"]
    unit = res["vial_ids"][0]
    receipt_seq = res["entries"][0]["seq"]
    before = entry_count(ops.ledger)
    with pytest.raises(Conflict) as exc:
        services.correct_entry(ops.ledger, ops.nurse, CorrectEntry(receipt_seq, "keyed one vial too many", (
            CorrectionLineInput(unit, "remove", "10.00"),)), approver=ops.manager)
    assert exc.value.field == "lines[0].vial_id" and carton in exc.value.reason
    assert entry_count(ops.ledger) == before
    assert verify(ops.ledger, deep=True).ok


def test_a_correction_cannot_take_a_unit_an_opening_did_not_find(ops):
    res = receive_packages(ops, KETAMINE_50, 1, "LOT-R19B")
    (carton,) = res["package_ids"]
    receipt_seq = res["entries"][0]["seq"]
    opened = services.open_package(ops.ledger, ops.nurse, OpenPackage(carton, 9, an_hour_ago()), witness=ops.nurse2)
    (missing,) = opened["units_missing"]
    with pytest.raises(Conflict) as exc:
        services.correct_entry(ops.ledger, ops.nurse, CorrectEntry(receipt_seq, "never arrived", (
            CorrectionLineInput(missing, "remove", "10.00"),)), approver=ops.manager)
    assert exc.value.field == "lines[0].vial_id"
    # a unit the opening found is corrected as any loose vial
    found = opened["units_found"][0]
    services.correct_entry(ops.ledger, ops.nurse, CorrectEntry(receipt_seq, "cracked on arrival, recorded whole", (
        CorrectionLineInput(found, "remove", "1.00"),)), approver=ops.manager)
    report = verify(ops.ledger, deep=True)
    assert report.ok, [str(p) for p in report.problems]


def test_a_short_cartons_missing_units_are_not_counted_again(ops):
    """Review finding F1: a carton opened short opens its own discrepancy over the missing units;
    a count that expected them too reported the same shortfall again, and resolving both as losses
    took two vials that were on the shelf off the book. Counts now leave those units out until
    the opening's discrepancy settles them."""
    from ledger.domain.commands import CountLineInput, ResolveDiscrepancy, StartCount, SubmitCount
    from ledger.services import stock

    res = receive_packages(ops, KETAMINE_50, 1, "LOT-SHORT")
    (carton,) = res["package_ids"]
    opened = services.open_package(ops.ledger, ops.nurse, OpenPackage(carton, 8, an_hour_ago() - timedelta(hours=1)),
                                   witness=ops.pharmacist)
    assert opened["discrepancy_id"]
    session_id = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))["session_id"]
    counted = services.submit_count(ops.ledger, ops.nurse, SubmitCount(
        session_id, (CountLineInput(KETAMINE_50, 8, 0, "0.00"),), occurred_at=an_hour_ago()),
        second_counter=ops.nurse2)
    assert counted["discrepancy_ids"] == []  # the 8 found are all the count expects
    services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
        opened["discrepancy_id"], "theft_or_loss", "carton arrived two vials short; supplier told"),
        witness=ops.compliance)
    on_hand = [v for v in stock.vials(ops.ledger, ops.dea, ndc_key="67457000110") if v["state"] in ("sealed", "open")]
    assert len(on_hand) == 8  # exactly the two missing vials left the book, once
    assert verify(ops.ledger, deep=True).ok
