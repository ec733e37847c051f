"""Stock leaves only to a registrant allowed to receive it (issue 19).

A transfer goes to another practitioner (21 CFR 1307.11) and a return to the supplier or a
reverse distributor (21 CFR Part 1317); either is refused, naming the problem and the field, when
the recipient's DEA registration has expired on the clinic's local day or does not cover the
product's schedule (III: 3 or 3N). The transfer carries the receiver's registration; a return to
a supplier recorded here is checked against the supplier's recorded registration and DSCSA status
(looked up by its DEA number); a reverse distributor's is carried. The entry copies what it was
checked against; ``verify --deep`` replays the rule, and entries recorded before keep verifying.
Through the services, over HTTP, and as an attacker writing entries by hand; SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import (
    AddressInput,
    RecordSupplierRegistration,
    ReturnStock,
    TransferStock,
)
from ledger.domain.errors import Conflict, InvalidInput
from ledger.domain.principal import Meaning, Role
from ledger.integrity import canonical as canon
from ledger.services.common import sign_witness
from ledger.services.disposal import STOCK_HANDLERS, _moved
from ledger.services.verify import verify
from tests.api.conftest import build_api
from tests.api.test_clinical import witnessed
from tests.clinical.conftest import Ops
from tests.conftest import (
    BACKENDS,
    DEA,
    DEA2,
    RECEIVER_REGISTRATION,
    RECIPIENT_REGISTRATION,
    an_hour_ago,
)

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

ADDR = AddressInput("2 Oak St", "Austin", "TX", "78702")
REVERSE_DISTRIBUTOR = "RB1234563"
SUPPLIER_DEA = "PB1234563"  # Gulf Medical Supply, recorded by the Clinic fixture


def last_entry(ledger) -> dict:
    with ledger.reading() as conn:
        data = conn.execute(sa.text("SELECT canonical FROM entries ORDER BY registrant, seq DESC LIMIT 1")).scalar_one()
    return canon.decode(bytes(data))


def count_entries(ledger) -> int:
    with ledger.reading() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM entries")).scalar_one()


def refused(ops: Ops, exc: type, field: str, fn, *args, **kw):
    before = count_entries(ops.ledger)
    with pytest.raises(exc) as e:
        fn(*args, **kw)
    assert e.value.field == field, (e.value.field, e.value.reason)
    assert count_entries(ops.ledger) == before  # nothing recorded
    return e.value


def transfer(vial_id: str, receiver: str = DEA2, **registration) -> TransferStock:
    return TransferStock((vial_id,), receiver, "Harbor Ketamine Partners", ADDR, "TR-1", an_hour_ago(),
                         **(registration or RECEIVER_REGISTRATION))


def a_return(vial_id: str, recipient_type: str = "reverse_distributor", dea: str = REVERSE_DISTRIBUTOR,
             **registration) -> ReturnStock:
    return ReturnStock((vial_id,), recipient_type, "Safe Returns Inc", ADDR, dea, "RD-1", an_hour_ago(),
                       **registration)


@pytest.fixture
def ops(ledger) -> Ops:
    return Ops(ledger)


def test_a_transfer_to_an_expired_or_uncovering_registration_is_refused(ops):
    [vid] = ops.receive(1)
    send = services.transfer_stock
    e = refused(ops, InvalidInput, "receiver_registration_expires_on", send, ops.ledger, ops.pharmacist,
                transfer(vid, receiver_registration_expires_on="2026-01-31", receiver_schedules=("3N",)),
                witness=ops.nurse)
    assert "DEA registration FB7654329 expired on 2026-01-31" in e.reason and "1307.11" in e.reason
    e = refused(ops, InvalidInput, "receiver_schedules", send, ops.ledger, ops.pharmacist,
                transfer(vid, receiver_registration_expires_on="2031-06-30", receiver_schedules=("2", "2N", "4", "5")),
                witness=ops.nurse)
    assert "covers schedules 2, 2N, 4, 5, not Schedule III" in e.reason
    e = refused(ops, InvalidInput, "receiver_registration_expires_on", send, ops.ledger, ops.pharmacist,
                TransferStock((vid,), DEA2, "Harbor", ADDR, "TR-1", an_hour_ago()), witness=ops.nurse)
    assert "required" in e.reason
    refused(ops, InvalidInput, "receiver_schedules[0]", send, ops.ledger, ops.pharmacist,
            transfer(vid, receiver_registration_expires_on="2031-06-30", receiver_schedules=("7",)), witness=ops.nurse)
    refused(ops, InvalidInput, "receiver_registration_expires_on", send, ops.ledger, ops.pharmacist,
            transfer(vid, receiver_registration_expires_on="June 2031", receiver_schedules=("3",)), witness=ops.nurse)
    # A distributor's number is not a practitioner's: stock goes back to it by a return.
    e = refused(ops, InvalidInput, "receiver_dea_number", send, ops.ledger, ops.pharmacist,
                transfer(vid, receiver=SUPPLIER_DEA), witness=ops.nurse)
    assert "return" in e.reason


def test_a_transfer_copies_the_registration_it_was_checked_against(ops):
    vids = ops.receive(21)
    for v in vids[1:20]:  # 19 containers dispensed: one more transferred is 1 in 20, 5%
        ops.dose(v, drawn="10.00", given="10.00")
    # Expiring today (the clinic's local day) is still current.
    today = datetime.now(UTC).astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago")).date()
    services.transfer_stock(ops.ledger, ops.pharmacist, transfer(
        vids[0], receiver_registration_expires_on=today.isoformat(), receiver_schedules=("3n", "4")), witness=ops.nurse)
    e = last_entry(ops.ledger)
    assert e["kind"] == "stock_transferred"
    assert e["receiver_registration"] == {"expires_on": today.isoformat(), "schedules": ["3N", "4"]}
    assert verify(ops.ledger, deep=True).ok


def test_a_return_to_a_reverse_distributor_carries_its_registration(ops):
    vids = ops.receive(2)
    send = services.return_stock
    e = refused(ops, InvalidInput, "recipient_registration_expires_on", send, ops.ledger, ops.pharmacist,
                a_return(vids[0]), witness=ops.nurse)
    assert "reverse distributor's DEA registration" in e.reason
    e = refused(ops, InvalidInput, "recipient_registration_expires_on", send, ops.ledger, ops.pharmacist,
                a_return(vids[0], recipient_registration_expires_on="2025-12-31", recipient_schedules=("3",)),
                witness=ops.nurse)
    assert "expired on 2025-12-31" in e.reason and "Part 1317" in e.reason
    e = refused(ops, InvalidInput, "recipient_schedules", send, ops.ledger, ops.pharmacist,
                a_return(vids[0], recipient_registration_expires_on="2031-06-30", recipient_schedules=("2", "4")),
                witness=ops.nurse)
    assert "not Schedule III" in e.reason
    send(ops.ledger, ops.pharmacist, a_return(vids[0], **RECIPIENT_REGISTRATION), witness=ops.nurse)
    e = last_entry(ops.ledger)
    assert e["recipient_registration"] == {"expires_on": "2031-06-30", "schedules": ["2", "2N", "3", "3N", "4", "5"]}
    assert e["supplier_id"] is None and e["authorized_trading_partner"] is None
    assert verify(ops.ledger, deep=True).ok


def test_a_return_to_a_recorded_supplier_is_checked_against_its_record(ops):
    vids = ops.receive(4)
    send = services.return_stock
    # Nothing carried: the supplier's recorded registration and DSCSA status are copied.
    send(ops.ledger, ops.pharmacist, a_return(vids[0], "supplier", SUPPLIER_DEA), witness=ops.nurse)
    e = last_entry(ops.ledger)
    assert e["supplier_id"] == ops.supplier_id and e["authorized_trading_partner"] is True
    assert e["recipient_registration"] == {"expires_on": "2031-06-30", "schedules": ["2", "2N", "3", "3N", "4", "5"]}
    # Carried and differing from the record: refused, the record is what counts.
    e = refused(ops, Conflict, "recipient_registration_expires_on", send, ops.ledger, ops.pharmacist,
                a_return(vids[1], "supplier", SUPPLIER_DEA, recipient_registration_expires_on="2032-01-31",
                         recipient_schedules=("3",)), witness=ops.nurse)
    assert "record its renewed registration first" in e.reason
    # The supplier's registration lapses (recorded as such): no more returns to it.
    services.record_supplier_registration(ops.ledger, ops.admin, RecordSupplierRegistration(
        ops.supplier_id, "2026-01-31", ("3", "3N"), True))
    e = refused(ops, Conflict, "recipient_registration_expires_on", send, ops.ledger, ops.pharmacist,
                a_return(vids[1], "supplier", SUPPLIER_DEA), witness=ops.nurse)
    assert "expired on 2026-01-31" in e.reason and ops.supplier_id in e.reason
    # Renewed, but not an authorized trading partner under DSCSA: refused.
    services.record_supplier_registration(ops.ledger, ops.admin, RecordSupplierRegistration(
        ops.supplier_id, "2031-06-30", ("3", "3N"), False))
    e = refused(ops, Conflict, "recipient_dea_number", send, ops.ledger, ops.pharmacist,
                a_return(vids[1], "supplier", SUPPLIER_DEA), witness=ops.nurse)
    assert "not an authorized trading partner" in e.reason
    # A supplier not recorded here is treated like any recipient: its registration is carried.
    refused(ops, InvalidInput, "recipient_registration_expires_on", send, ops.ledger, ops.pharmacist,
            a_return(vids[1], "supplier", "PB7654329"), witness=ops.nurse)
    assert verify(ops.ledger, deep=True).ok


def test_over_http(ledger):
    api = build_api(ledger)
    from tests.api.test_clinical import setup_floor

    vials, _ = setup_floor(api)
    body = {"vial_ids": [vials[0]], "receiver_dea_number": DEA2, "receiver_name": "Dr. Other",
            "receiver_address": {"street": "2 Oak St", "city": "Austin", "state": "TX", "postal_code": "78702"},
            "invoice_number": "TR-9", "occurred_at": an_hour_ago().isoformat(),
            "receiver_registration_expires_on": "2026-01-31", "receiver_schedules": ["3N"]}
    r, _ = witnessed(api, "pia", "/transfers", body, "nora")
    assert r.status_code == 422 and "expired on 2026-01-31" in r.text, r.text
    assert r.json()["errors"][0]["field"] == "receiver_registration_expires_on"
    body.update(receiver_registration_expires_on="2031-06-30", receiver_schedules=["4"])
    r, _ = witnessed(api, "pia", "/transfers", body, "nora")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "receiver_schedules", r.text
    body.update(receiver_schedules=["9"])
    r = api.client.post(api.url("/transfers"), json=body, headers=api.headers("pia"))
    assert r.status_code == 422, r.text
    ret = {"vial_ids": [vials[0]], "recipient_type": "reverse_distributor", "recipient_name": "Safe Returns Inc",
           "recipient_address": body["receiver_address"], "recipient_dea_number": REVERSE_DISTRIBUTOR,
           "invoice_number": "RD-9", "occurred_at": an_hour_ago().isoformat()}
    r, _ = witnessed(api, "pia", "/returns", ret, "nora")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "recipient_registration_expires_on", r.text
    ret.update(recipient_registration_expires_on="2031-06-30", recipient_schedules=["3", "3N"])
    r, _ = witnessed(api, "pia", "/returns", ret, "nora")
    assert r.status_code == 201, r.text
    assert verify(ledger, deep=True).ok


def _forged(ops: Ops, kind: str, **fields) -> None:
    """An attacker with database access writes a transfer or return by hand, signed as if real."""
    [vid] = ops.receive(1)

    def build(ctx):
        sig = ctx.signature(ops.pharmacist, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        wsig = sign_witness(ctx, ops.pharmacist, ops.nurse)
        vials = tuple(_moved(ctx, (vid,), sealed_only=False))
        if kind == "stock_transferred":
            event = ev.StockTransferred(receiver_dea_number=DEA2, receiver_name="Harbor", receiver_address=ev.Address(
                "2 Oak St", "Austin", "TX", "78702"), invoice_number="TR-X", vials=vials,
                year_transfer_units=Decimal("1.00"), year_total_units=Decimal("20.00"), **fields)
        else:
            event = ev.StockReturned(recipient_type=fields.pop("recipient_type", "reverse_distributor"),
                                     recipient_name="Safe Returns Inc", recipient_address=ev.Address(
                                         "2 Oak St", "Austin", "TX", "78702"),
                                     recipient_dea_number=fields.pop("dea", REVERSE_DISTRIBUTOR), invoice_number="RD-X",
                                     vials=vials, **fields)
        ctx.append(event, signatures=[sig, wsig], occurred_at=ctx.now - timedelta(minutes=5))
        return {}

    ops.ledger.execute(ops.dea, "forged", {"kind": kind}, build, principal_id=ops.pharmacist.staff_id)


@pytest.mark.parametrize("kind, fields, words", [
    ("stock_transferred", {"receiver_registration": ev.DeaRegistration(date(2026, 1, 31), ("3N",))}, "expired on 2026-01-31"),
    ("stock_transferred", {"receiver_registration": ev.DeaRegistration(date(2031, 6, 30), ("4",))}, "not Schedule III"),
    ("stock_transferred", {}, "copies no registration"),
    ("stock_returned", {}, "copies no registration"),
    ("stock_returned", {"recipient_registration": ev.DeaRegistration(date(2025, 1, 31), ("3",))}, "expired on 2025-01-31"),
    ("stock_returned", {"recipient_type": "supplier", "dea": SUPPLIER_DEA,
                        "recipient_registration": ev.DeaRegistration(date(2035, 1, 31), ("3",))},
     "not checked against that supplier's registration"),
    ("stock_returned", {"recipient_type": "supplier", "dea": SUPPLIER_DEA, "supplier_id": "SUP5",
                        "authorized_trading_partner": True,
                        "recipient_registration": ev.DeaRegistration(date(2035, 1, 31), ("3",))},
     "registration as"),
], ids=["expired transfer", "transfer without III", "transfer copying none", "return copying none",
        "expired return", "supplier bypassed", "supplier's registration altered"])
def test_verify_deep_names_a_forged_transfer_or_return(ops, kind, fields, words):
    if fields.get("supplier_id") == "SUP5":
        fields["supplier_id"] = ops.supplier_id
    _forged(ops, kind, **fields)
    report = verify(ops.ledger, deep=True)
    assert not report.ok
    text = " ".join(str(p) for p in report.problems)
    assert "recipient-registered" in text and words in text, text


@dataclass(frozen=True)
class OldStockTransferred(ev.Event):
    """``stock_transferred`` as it was written before issue 19 (no registration key at all)."""

    kind: ClassVar[str] = "stock_transferred"
    receiver_dea_number: str
    receiver_name: str
    receiver_address: ev.Address
    invoice_number: str
    vials: tuple[ev.MovedVial, ...]
    year_transfer_units: Decimal
    year_total_units: Decimal
    late_reason: str | None = None


@dataclass(frozen=True)
class OldStockReturned(ev.Event):
    """``stock_returned`` as it was written before issue 19."""

    kind: ClassVar[str] = "stock_returned"
    recipient_type: str
    recipient_name: str
    recipient_address: ev.Address
    recipient_dea_number: str
    invoice_number: str
    vials: tuple[ev.MovedVial, ...]
    late_reason: str | None = None


def test_entries_recorded_before_keep_verifying(ledger):
    """A chain from before issue 19 (no supplier, prescriber or recipient registration recorded):
    its transfers and returns carry no registration key, and verify as they did."""
    from ledger.domain.commands import (
        AddProduct,
        InventoryItemInput,
        RegisterRegistrant,
        TakeInventory,
    )
    from ledger.domain.principal import AuthMethod, Principal
    from tests.conftest import CLINIC_TZ, KETAMINE_50, Clinic

    res = services.register_registrant(ledger, RegisterRegistrant(
        dea_number=DEA, name="Calm Waters Ketamine Clinic", address=AddressInput("100 Harbor Way", "Austin", "TX", "78701"),
        time_zone=CLINIC_TZ, admin_printed_name="Avery Admin", admin_username="avery"))
    old = object.__new__(Clinic)  # the fixture's people, without its issue-19 registrations
    old.ledger, old.dea = ledger, DEA
    old.admin = Principal(DEA, res["admin_staff_id"], "Avery Admin", AuthMethod.CONSOLE_BOOTSTRAP)
    old.staff_admins = [old.admin]
    nurse = old.enroll("Nora Nurse", "nora", "nurse")
    pharmacist = old.enroll("Pia Pharmacist", "pia", "pharmacist")
    services.add_product(ledger, old.admin, AddProduct(KETAMINE_50, "Ketamine HCl injection 50 mg/mL", "7285", "III",
                                                       "injection", "50.00", "10.00"))

    def build(ctx):
        admin_sig = ctx.signature(old.admin, Meaning.PERFORMED, roles=frozenset({Role.ADMINISTRATOR}))
        addr = ev.Address("5 Depot Rd", "Houston", "TX", "77002")
        ctx.append(ev.SupplierAdded(supplier_id="SUP-OLD", name="Old Supply", address=addr, dea_number=SUPPLIER_DEA),
                   signatures=[admin_sig], occurred_at=ctx.now)
        return {}

    ledger.execute(DEA, "add_supplier", {"name": "Old Supply"}, build, principal_id=old.admin.staff_id)

    def build_old(ctx):
        sig = ctx.signature(pharmacist, Meaning.PERFORMED, roles=STOCK_HANDLERS)
        wsig = sign_witness(ctx, pharmacist, nurse)
        vials = _moved(ctx, ctx.request["vials"], sealed_only=False)
        addr = ev.Address("2 Oak St", "Austin", "TX", "78702")
        if ctx.request["kind"] == "transfer":
            event = OldStockTransferred(receiver_dea_number=DEA2, receiver_name="Harbor", receiver_address=addr,
                                        invoice_number="TR-OLD", vials=tuple(vials),
                                        year_transfer_units=Decimal("1.00"), year_total_units=Decimal("20.00"))
        else:
            event = OldStockReturned(recipient_type="supplier", recipient_name="Old Supply", recipient_address=addr,
                                     recipient_dea_number=SUPPLIER_DEA, invoice_number="RET-OLD", vials=tuple(vials))
        ctx.append(event, signatures=[sig, wsig], occurred_at=ctx.now - timedelta(minutes=30))
        return {}

    vids = services.take_inventory(ledger, pharmacist, TakeInventory(
        "initial", "opening_of_business", an_hour_ago() - timedelta(hours=2),
        (InventoryItemInput(KETAMINE_50, "L1", "2028-06-30", True, containers=2),)), witness=nurse)["vial_ids"]
    ledger.execute(DEA, "transfer_stock", {"kind": "transfer", "vials": [vids[0]]}, build_old,
                   principal_id=pharmacist.staff_id)
    ledger.execute(DEA, "return_stock", {"kind": "return", "vials": [vids[1]]}, build_old,
                   principal_id=pharmacist.staff_id)
    with ledger.reading() as conn:
        rows = [canon.decode(bytes(c)) for c in conn.execute(sa.text("SELECT canonical FROM entries ORDER BY seq")).scalars()]
    moved = [e for e in rows if e["kind"] in ("stock_transferred", "stock_returned")]
    assert len(moved) == 2 and not any("receiver_registration" in e or "recipient_registration" in e for e in moved)
    report = verify(ledger, deep=True)
    assert report.ok, report.problems
