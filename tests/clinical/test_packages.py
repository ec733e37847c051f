"""Issue 19, package hierarchy ("cartons are not vials"): a product's unit model (what a unit is,
its own NDC, units per package), checked against csledger's NDC reference; receipts in packages
(cartons), their units on the book at receipt but sealed in the carton; the witnessed opening of
a carton, its shortfall resolved through the discrepancy workflow; whole cartons moved; the rules
replayed by ``verify --deep``. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import count as _count

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain import entries as ev
from ledger.domain import gs1
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    CountLineInput,
    DestroyStock,
    LostVialInput,
    OpenPackage,
    QuarantineStock,
    ReceivedLineInput,
    ReceiveStock,
    ReportTheftOrLoss,
    ResolveDiscrepancy,
    ReturnStock,
    StartCount,
    SubmitCount,
)
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.integrity import canonical as canon
from ledger.integrity.canonical import decode
from ledger.services import audit as audit_service
from ledger.services.verify import verify
from ledger.storage.store import SqlStateView
from tests.clinical.conftest import Ops
from tests.conftest import (
    BACKENDS,
    DEA2,
    KETAMINE_10,
    KETAMINE_50,
    RECIPIENT_REGISTRATION,
    Clinic,
    an_hour_ago,
)

SPRAVATO_56 = "50458-0028-02"  # kit of 2 nasal-spray devices, 28 mg each
SPRAVATO = AddProduct(SPRAVATO_56, "Spravato (esketamine) nasal spray 28 mg", "7285", "III", "nasal spray",
                      "140.00", "0.20")

#: Issue 20: the rest of Form 106, required on every theft or loss report.
FORM_106 = {"narrative": "a carton is missing from the safe", "corrective_measures": "safe code changed",
            "contact_name": "Mia Manager", "contact_phone": "512-555-0142"}


def product(clinic: Clinic, ndc_key: str) -> dict:
    """The ``products`` projection row."""
    with clinic.ledger.engine.connect() as c:
        return SqlStateView(c).get("products", (clinic.dea, ndc_key))


def last_entry(ledger) -> dict:
    """The newest entry, decoded from its canonical bytes."""
    with ledger.engine.connect() as c:
        data = c.execute(sa.text("SELECT canonical FROM entries ORDER BY seq DESC LIMIT 1")).scalar_one()
    return decode(bytes(data))


# --- step 1: the product unit model ----------------------------------------------------------


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
class TestProductUnitModel:
    def test_omitted_figures_come_from_the_reference(self, clinic):
        p50 = product(clinic, "67457000110")
        assert (p50["unit_kind"], p50["unit_ndc"], p50["units_per_package"]) == ("vial", "67457-001-00", 10)
        p10 = product(clinic, "52584003710")  # one vial in one bag
        assert (p10["unit_kind"], p10["unit_ndc"], p10["units_per_package"]) == ("vial", None, 1)
        res = services.add_product(clinic.ledger, clinic.admin, SPRAVATO)
        assert res["warnings"] == []
        dev = product(clinic, res["ndc_key"])
        assert (dev["unit_kind"], dev["unit_ndc"], dev["units_per_package"]) == ("nasal_spray_device", "50458-028-00", 2)

    def test_the_entry_copies_the_unit_model(self, clinic):
        services.add_product(clinic.ledger, clinic.admin, SPRAVATO)
        p = last_entry(clinic.ledger)["product"]
        assert p["unit_kind"] == "nasal_spray_device" and p["units_per_package"] == 2 and p["unit_ndc"] == "50458-028-00"

    def test_true_figures_given_are_accepted(self, clinic):
        services.add_product(clinic.ledger, clinic.admin, AddProduct(
            "50458-0028-03", "Spravato (esketamine) nasal spray 28 mg", "7285", "III", "nasal spray", "140.00", "0.20",
            unit_kind="nasal_spray_device", unit_ndc="50458-0028-00", units_per_package=3))
        assert product(clinic, "50458002803")["units_per_package"] == 3

    def test_a_product_added_by_its_unit_ndc_is_one_unit(self, clinic):
        services.add_product(clinic.ledger, clinic.admin, AddProduct(
            "67457-0001-00", "Ketamine HCl injection 50 mg/mL", "7285", "III", "injection", "50.00", "10.00"))
        p = product(clinic, "67457000100")
        assert p["units_per_package"] == 1 and p["unit_kind"] == "vial"
        with pytest.raises(InvalidInput) as e:  # a unit NDC names one unit, not a carton
            services.add_product(clinic.ledger, clinic.admin, AddProduct(
                "0143-9508-01", "Ketamine HCl injection 50 mg/mL", "7285", "III", "injection", "50.00", "10.00",
                units_per_package=10))
        assert e.value.field == "units_per_package"

    @pytest.mark.parametrize(("change", "field", "says"), [
        ({"units_per_package": 25}, "units_per_package", "the product says 25 per package"),
        ({"unit_kind": "prefilled_syringe"}, "unit_kind", "the product says its unit is a prefilled syringe"),
        ({"unit_ndc": "0143-9508-02"}, "unit_ndc", "the product says unit NDC 0143-9508-02"),
    ])
    def test_other_figures_than_the_reference_are_refused_naming_them(self, clinic, change, field, says):
        with pytest.raises(InvalidInput) as e:
            services.add_product(clinic.ledger, clinic.admin, AddProduct(
                "0143-9508-10", "Ketamine HCl injection 50 mg/mL", "7285", "III", "injection", "50.00", "10.00",
                **change))
        assert e.value.field == field
        assert "NDC 0143-9508-10 is Ketamine Hydrochloride 50 mg/mL, 10 mL per vial, 10 vials per box" in e.value.reason
        assert says in e.value.reason

    @pytest.mark.parametrize(("change", "field"), [
        ({"unit_kind": "ampoule"}, "unit_kind"),
        ({"unit_kind": ""}, "unit_kind"),
        ({"units_per_package": 0}, "units_per_package"),
        ({"units_per_package": 1001}, "units_per_package"),
        ({"units_per_package": True}, "units_per_package"),
        ({"units_per_package": "10"}, "units_per_package"),
        ({"unit_ndc": "not-an-ndc"}, "unit_ndc"),
        ({"unit_ndc": "12345-6789-00"}, "unit_ndc"),  # another labeler's product
        ({"unit_ndc": "42023-2000-10", "units_per_package": 10}, "unit_ndc"),  # the package NDC itself
    ])
    def test_bad_unit_figures_are_refused(self, clinic, change, field):
        with pytest.raises(InvalidInput) as e:
            services.add_product(clinic.ledger, clinic.admin, AddProduct(
                "42023-2000-10", "Ketamine HCl injection 50 mg/mL", "7285", "III", "injection", "50.00", "10.00",
                **change))
        assert e.value.field == field

    def test_an_unknown_ndc_takes_what_is_given(self, clinic):
        res = services.add_product(clinic.ledger, clinic.admin, AddProduct(
            "42023-2000-10", "Ketamine HCl prefilled syringe 10 mg/mL", "7285", "III", "injection", "10.00", "5.00",
            unit_kind="prefilled_syringe", unit_ndc="42023-2000-01", units_per_package=25))
        assert res["warnings"]
        p = product(clinic, "42023200010")
        assert (p["unit_kind"], p["unit_ndc"], p["units_per_package"]) == ("prefilled_syringe", "42023-2000-01", 25)


# --- step 2: receipts in packages, witnessed opening ------------------------------------------

INVOICES = _count(1)
ADDR = AddressInput("9 Oak Ave", "Austin", "TX", "78702")


def receive_cartons(ops: Ops, packages: int = 2, ndc: str = KETAMINE_50, **kw) -> dict:
    """``packages`` cartons received 2 hours ago (KETAMINE_50: 10 vials of 10 mL each)."""
    return services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
        supplier_id=ops.supplier_id, invoice_number=f"INV-PK-{next(INVOICES)}",
        occurred_at=datetime.now(UTC) - timedelta(hours=2),
        lines=(ReceivedLineInput(ndc, kw.pop("containers", None), "LOT-PK1", "2028-06-30", packages=packages, **kw),)))


def open_pkg(ops: Ops, package_id: str, found: int = 10, *, by=None, witness="nurse2", **kw) -> dict:
    return services.open_package(ops.ledger, by or ops.nurse, OpenPackage(package_id, found, an_hour_ago(), **kw),
                                 witness=getattr(ops, witness) if isinstance(witness, str) else witness)


def vial(ops: Ops, vial_id: str) -> dict:
    with ops.ledger.engine.connect() as c:
        return SqlStateView(c).get("vials", (ops.dea, vial_id))


def package(ops: Ops, package_id: str) -> dict:
    with ops.ledger.engine.connect() as c:
        return SqlStateView(c).get("packages", (ops.dea, package_id))


def entry(ledger, seq: int) -> dict:
    with ledger.engine.connect() as c:
        data = c.execute(sa.text("SELECT canonical FROM entries WHERE seq = :s"), {"s": seq}).scalar_one()
    return decode(bytes(data))


def refused(exc_type, fn, *args, field: str, **kw):
    with pytest.raises(exc_type) as e:
        fn(*args, **kw)
    assert e.value.field == field, (e.value.field, e.value.reason)
    return e.value


@pytest.fixture
def ops(ledger) -> Ops:
    return Ops(ledger)


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
class TestReceiptInPackages:
    def test_cartons_put_their_units_on_the_book_sealed_in_the_carton(self, ops):
        res = receive_cartons(ops, 2, invoiced_packages=3)
        (p1, p2) = res["package_ids"]
        assert len(res["vial_ids"]) == 20 and res["vial_ids"][0] == f"{p1}:01" and res["vial_ids"][19] == f"{p2}:10"
        assert res["invoice_mismatches"] == [0] and res["total_ml"] == "200.00"
        line = last_entry(ops.ledger)["lines"][0]
        assert (line["packages"], line["units_per_package"], line["containers"], line["invoiced_packages"]) == (2, 10, 20, 3)
        assert line["package_ids"] == [p1, p2] and line["product"]["units_per_package"] == 10
        v = vial(ops, f"{p1}:03")
        assert (v["state"], bool(v["packaged"]), v["package_id"], v["ml_left"]) == ("sealed", True, p1, Decimal("10.00"))
        pk = package(ops, p1)
        assert (pk["units_per_package"], pk["opened_seq"], pk["lot"]) == (10, None, "LOT-PK1")
        assert verify(ops.ledger, deep=True).ok

    def test_scanned_cartons_are_identified_by_gtin_and_serial(self, ops):
        gtin = gs1.gtin_for_ndc10("6745700110")
        exp = date(2028, 6, 30)
        scans = tuple(gs1.datamatrix(gtin, f"CT{i}", "LOT-PK1", exp) for i in range(2))
        res = receive_cartons(ops, 2, scans=scans)
        assert res["package_ids"] == [f"(01){gtin}(21)CT0", f"(01){gtin}(21)CT1"]
        assert res["vial_ids"][10] == f"(01){gtin}(21)CT1:01"
        pk = package(ops, res["package_ids"][1])
        assert (pk["gtin"], pk["serial"]) == (gtin, "CT1")
        # the same carton again is suspect
        refused(Conflict, receive_cartons, ops, 1, scans=scans[:1], field="lines[0].serials[0]")
        # one scan per carton
        refused(InvalidInput, receive_cartons, ops, 2, scans=(gs1.datamatrix(gtin, "CT9", "LOT-PK1", exp),),
                field="lines[0].packages")

    @pytest.mark.parametrize(("kw", "field"), [
        ({"containers": 12}, "lines[0].containers"),  # 2 cartons of 10 are 20 units
        ({"invoiced_containers": 20}, "lines[0].invoiced_containers"),
        ({"packages": 0}, "lines[0].packages"),
        ({"packages": -1}, "lines[0].packages"),
        ({"packages": "two"}, "lines[0].packages"),
        ({"packages": 201}, "lines[0].packages"),
    ])
    def test_bad_package_lines_are_refused(self, ops, kw, field):
        kw = dict(kw)  # the parameter is shared by both backends' runs
        packages = kw.pop("packages", 2)
        refused(InvalidInput, receive_cartons, ops, packages, field=field, **kw)

    def test_the_units_given_as_a_check_are_accepted(self, ops):
        res = receive_cartons(ops, 2, containers=20)
        assert len(res["vial_ids"]) == 20

    def test_a_one_unit_package_is_the_unit(self, ops):
        res = receive_cartons(ops, 3, ndc=KETAMINE_10)  # one vial in one bag
        assert res["vial_ids"] == res["package_ids"] and len(res["vial_ids"]) == 3
        v = vial(ops, res["vial_ids"][0])
        assert not v["packaged"] and v["package_id"] is None
        ops.dose(res["vial_ids"][0], drawn="3.50", given="3.50")

    def test_lines_in_units_are_received_as_before(self, ops):
        vids = ops.receive(3)
        assert len(vids) == 3 and not vial(ops, vids[0])["packaged"]
        line = last_entry(ops.ledger)["lines"][0]
        assert line["packages"] is None and line["containers"] == 3


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
class TestOpeningAPackage:
    def test_a_sealed_carton_is_not_drawn_from_until_opened_before_a_witness(self, ops):
        (p1, _p2) = receive_cartons(ops, 2)["package_ids"]
        e = refused(Conflict, ops.dose, f"{p1}:01", field="draws[0].vial_id")
        assert "open the package" in e.reason
        res = open_pkg(ops, p1)
        assert res["units_found"] == [f"{p1}:{i:02d}" for i in range(1, 11)] and res["units_missing"] == []
        assert res["discrepancy_id"] is None
        e = last_entry(ops.ledger)
        assert e["kind"] == "package_opened" and e["units_per_package"] == 10 and e["receipt_seq"] > 0
        assert [(s["staff_id"], s["meaning"]) for s in e["signatures"]] == [
            (ops.nurse.staff_id, "performed"), (ops.nurse2.staff_id, "witnessed")]
        assert not vial(ops, f"{p1}:01")["packaged"] and package(ops, p1)["units_found"] == 10
        ops.dose(f"{p1}:01", drawn="3.50", given="3.50")
        assert verify(ops.ledger, deep=True).ok

    def test_refusals(self, ops):
        (p1, p2) = receive_cartons(ops, 2)["package_ids"]
        refused(InvalidInput, open_pkg, ops, p1, witness=None, field="witness")
        refused(Conflict, open_pkg, ops, p1, witness=ops.nurse, field="witness")  # the opener is no witness
        refused(Forbidden, open_pkg, ops, p1, by=ops.auditor, field="principal")
        refused(Conflict, open_pkg, ops, p1, 11, field="units_found")  # more than packed
        refused(InvalidInput, open_pkg, ops, p1, -1, field="units_found")
        refused(NotFound, open_pkg, ops, "P999-1", field="package_id")
        refused(InvalidInput, open_pkg, ops, "", field="package_id")
        open_pkg(ops, p1)
        e = refused(Conflict, open_pkg, ops, p1, field="package_id")  # twice
        assert "opened once" in e.reason
        # a quarantined carton is released before it is opened
        services.quarantine_stock(ops.ledger, ops.nurse, QuarantineStock(
            tuple(f"{p2}:{i:02d}" for i in range(1, 11)), "seal looks tampered"))
        refused(Conflict, open_pkg, ops, p2, field="package_id")
        assert verify(ops.ledger, deep=True).ok

    def test_another_registrants_package_cannot_be_opened(self, ops):
        (p1, _) = receive_cartons(ops, 2)["package_ids"]
        other = Ops.__new__(Ops)
        Clinic.__init__(other, ops.ledger, dea=DEA2)
        e = refused(NotFound, services.open_package, ops.ledger, other.nurse, OpenPackage(p1, 10, an_hour_ago()),
                    witness=other.nurse2, field="package_id")
        assert DEA2 in e.reason
        # a command runs at its actor's registrant: the other registrant's staff cannot reach it,
        refused(NotFound, open_pkg, ops, p1, by=other.nurse, field="package_id")
        # nor witness its opening here
        refused(NotFound, open_pkg, ops, p1, witness=other.nurse2, field="witness")
        assert package(ops, p1)["opened_seq"] is None

    def test_a_shortfall_opens_a_discrepancy_a_manager_resolves(self, ops):
        (p1, _p2) = receive_cartons(ops, 2)["package_ids"]
        res = open_pkg(ops, p1, 8)
        missing = [f"{p1}:09", f"{p1}:10"]
        assert res["units_missing"] == missing and res["discrepancy_id"] == f"D{res['package_opened_seq']}-P"
        d = res["discrepancy_id"]
        # the missing units stay on the book, unusable and immovable alone
        assert vial(ops, missing[0])["state"] == "sealed" and vial(ops, missing[0])["packaged"]
        refused(Conflict, ops.dose, missing[0], field="draws[0].vial_id")
        refused(Conflict, services.destroy_stock, ops.ledger, ops.pharmacist, DestroyStock(
            tuple(missing), "incinerated", "med room", "gone", an_hour_ago()), witnesses=(ops.nurse, ops.nurse2),
            field="vial_ids[0]")
        with ops.ledger.engine.connect() as c:
            row = SqlStateView(c).get("discrepancies", (ops.dea, d))
        assert (row["status"], row["difference_ml"], row["expected_sealed_containers"],
                row["counted_sealed_containers"]) == ("open", Decimal("-20.00"), 10, 8)
        # the opener and the witness counted: neither resolves it
        refused(Forbidden, services.resolve_discrepancy, ops.ledger, ops.nurse, ResolveDiscrepancy(
            d, "theft_or_loss", "x"), witness=ops.pharmacist, field="principal")
        refused(Conflict, services.resolve_discrepancy, ops.ledger, ops.manager, ResolveDiscrepancy(
            d, "theft_or_loss", "x"), witness=ops.nurse2, field="witness")
        out = services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
            d, "theft_or_loss", "carton arrived two vials short; supplier notified"), witness=ops.pharmacist)
        assert out["adjusted_ml"] == "20.00"
        adj = last_entry(ops.ledger)
        assert adj["kind"] == "loss_adjusted" and sorted(a["vial_id"] for a in adj["adjustments"]) == missing
        assert {vial(ops, v)["state"] for v in missing} == {"lost"}
        # the audit lists the adjustment, in units and mL
        now = datetime.now(UTC)
        a = audit_service.accountability(_entries(ops.ledger), now - timedelta(days=1), now + timedelta(minutes=1))
        (line,) = [p for p in a["products"] if p["ndc_key"] == "67457000110"]
        (item,) = line["adjustment_entries"]
        assert "package opening entry" in item["description"] and item["ml"] == Decimal("20.00")
        assert line["containers"]["receipts"] == Decimal("20.00")
        assert verify(ops.ledger, deep=True).ok

    def test_an_empty_carton(self, ops):
        (p1, _p2) = receive_cartons(ops, 2)["package_ids"]
        res = open_pkg(ops, p1, 0)
        assert res["units_found"] == [] and len(res["units_missing"]) == 10
        assert verify(ops.ledger, deep=True).ok


def _entries(ledger) -> list[dict]:
    with ledger.engine.connect() as c:
        rows = c.execute(sa.text("SELECT canonical FROM entries ORDER BY registrant, seq")).scalars().all()
    return [decode(bytes(r)) for r in rows]


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
class TestWholePackages:
    def test_a_sealed_carton_moves_whole(self, ops):
        (p1, p2) = receive_cartons(ops, 2)["package_ids"]
        units1 = tuple(f"{p1}:{i:02d}" for i in range(1, 11))
        ret = ReturnStock(units1[:5], "reverse_distributor", "Safe Returns Inc", ADDR, "RB1234563", "RD-1",
                          an_hour_ago(), **RECIPIENT_REGISTRATION)
        e = refused(Conflict, services.return_stock, ops.ledger, ops.pharmacist, ret, witness=ops.nurse,
                    field="vial_ids[0]")
        assert "sealed package" in e.reason
        services.return_stock(ops.ledger, ops.pharmacist, ReturnStock(
            units1, "reverse_distributor", "Safe Returns Inc", ADDR, "RB1234563", "RD-2", an_hour_ago(),
            **RECIPIENT_REGISTRATION), witness=ops.nurse)
        e = last_entry(ops.ledger)
        assert {v["package_id"] for v in e["vials"]} == {p1} and len(e["vials"]) == 10
        assert {vial(ops, v)["state"] for v in units1} == {"returned"}
        refused(Conflict, open_pkg, ops, p1, field="package_id")  # no longer on hand
        # destruction of a whole carton: Form 41 names it
        units2 = tuple(f"{p2}:{i:02d}" for i in range(1, 11))
        services.destroy_stock(ops.ledger, ops.pharmacist, DestroyStock(
            units2, "incinerated", "medication room", "recalled lot", an_hour_ago()), witnesses=(ops.nurse, ops.nurse2))
        e = last_entry(ops.ledger)
        assert {i["package_id"] for i in e["items"]} == {p2} and all(i["full_package"] for i in e["items"])
        assert verify(ops.ledger, deep=True).ok

    def test_a_stolen_carton_and_a_quarantined_one(self, ops):
        (p1, p2) = receive_cartons(ops, 2)["package_ids"]
        units1 = [f"{p1}:{i:02d}" for i in range(1, 11)]
        cmd = ReportTheftOrLoss(an_hour_ago(), "night_break_in", False, 0, "250.00",
                                lost=tuple(LostVialInput(v) for v in units1[:9]), **FORM_106)
        refused(Conflict, services.report_theft_or_loss, ops.ledger, ops.manager, cmd, witness=ops.pharmacist,
                field="lost[0].vial_id")
        services.report_theft_or_loss(ops.ledger, ops.manager, ReportTheftOrLoss(
            an_hour_ago(), "night_break_in", False, 0, "250.00", lost=tuple(LostVialInput(v) for v in units1),
            **FORM_106),
            witness=ops.pharmacist)
        refused(Conflict, services.quarantine_stock, ops.ledger, ops.nurse,
                QuarantineStock((f"{p2}:01",), "suspect"), field="vial_ids[0]")
        assert verify(ops.ledger, deep=True).ok

    def test_a_sealed_carton_is_counted_as_a_carton(self, ops):
        (p1, _p2) = receive_cartons(ops, 2)["package_ids"]
        open_pkg(ops, p1)
        ops.dose(f"{p1}:01", drawn="4.00", given="4.00")
        s = services.start_count(ops.ledger, ops.nurse, StartCount(ndcs=(KETAMINE_50,)))
        # one sealed carton (10 units, exact), 10 loose vials of which 1 opened with 6 mL
        out = services.submit_count(ops.ledger, ops.nurse, SubmitCount(s["session_id"], (
            CountLineInput(KETAMINE_50, 9, 1, "6.00", sealed_packages=1),), an_hour_ago()), second_counter=ops.nurse2)
        line = last_entry(ops.ledger)["lines"][0]
        assert out["discrepancy_ids"] == [], line
        assert (line["sealed_containers"], line["sealed_packages"], line["expected_sealed_packages"]) == (19, 1, 1)
        refused(InvalidInput, services.submit_count, ops.ledger, ops.nurse, SubmitCount(s["session_id"], (
            CountLineInput(KETAMINE_50, 8, 1, "6.00", sealed_packages=-1),), an_hour_ago()),
            second_counter=ops.nurse2, field="lines[0].sealed_packages")
        assert verify(ops.ledger, deep=True).ok


# --- verify --deep: the rules replayed ---------------------------------------------------------


def _sig(p, meaning: str, at) -> dict:
    return {"staff_id": p.staff_id, "printed_name": p.printed_name, "meaning": meaning,
            "signed_at": canon.format_time(at), "auth_method": "password"}


def _force(ops: Ops, make) -> int:
    """Append one entry through the ledger's own append path, bypassing every service check
    (what a database writer can do): hashes, movements and projections all agree."""
    out = {}

    def build(ctx):
        event, signatures = make(ctx)
        out["seq"] = ctx.append(event, signatures=signatures, occurred_at=ctx.now).seq
        return {}

    ops.ledger.execute(ops.dea, "forced_by_hand", {}, build, principal_id=None)
    return out["seq"]


def _forged_opening(ops: Ops, pid: str, receipt_seq: int, found, missing=(), *, witness=None, disc=None):
    def make(ctx):
        from ledger.services.common import product_copy
        return ev.PackageOpened(
            package_id=pid, product=product_copy(ctx, KETAMINE_50, field="ndc"), lot="LOT-PK1",
            expiry=date(2028, 6, 30), receipt_seq=receipt_seq, units_per_package=10, units_found=tuple(found),
            units_missing=tuple(missing), discrepancy_id=disc), [
            _sig(ops.nurse, "performed", ctx.now), _sig(witness or ops.nurse2, "witnessed", ctx.now)]
    return make


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
class TestVerifyDeep:
    def _setup(self, ops):
        res = receive_cartons(ops, 2)
        seq = last_entry(ops.ledger)["seq"]
        assert verify(ops.ledger, deep=True).ok
        return res["package_ids"], seq

    def test_an_opening_witnessed_by_its_opener_fails(self, ops):
        (p1, _), rseq = self._setup(ops)
        units = [f"{p1}:{i:02d}" for i in range(1, 11)]
        seq = _force(ops, _forged_opening(ops, p1, rseq, units, witness=ops.nurse))
        (problem,) = verify(ops.ledger, deep=True).problems
        assert problem.seq == seq and "breaks rule two-people:" in str(problem), str(problem)

    def test_an_opening_of_units_not_in_the_package_fails(self, ops):
        (p1, p2), rseq = self._setup(ops)
        units = [f"{p1}:{i:02d}" for i in range(1, 10)] + [f"{p2}:01"]
        seq = _force(ops, _forged_opening(ops, p1, rseq, units))
        (problem,) = verify(ops.ledger, deep=True).problems
        assert problem.seq == seq and "breaks rule package-contents:" in str(problem), str(problem)

    def test_an_opening_twice_fails(self, ops):
        (p1, _), rseq = self._setup(ops)
        open_pkg(ops, p1)
        seq = _force(ops, _forged_opening(ops, p1, rseq, [f"{p1}:{i:02d}" for i in range(1, 11)]))
        problems = verify(ops.ledger, deep=True).problems
        assert problems and problems[0].seq == seq and "package-once" in str(problems[0]), str(problems[0])

    def test_a_shortfall_without_a_discrepancy_fails(self, ops):
        (p1, _), rseq = self._setup(ops)
        seq = _force(ops, _forged_opening(ops, p1, rseq, [f"{p1}:{i:02d}" for i in range(1, 9)],
                                          [f"{p1}:09", f"{p1}:10"]))
        (problem,) = verify(ops.ledger, deep=True).problems
        assert problem.seq == seq and "package-contents" in str(problem), str(problem)

    def test_part_of_a_sealed_carton_returned_fails(self, ops):
        (p1, _), _rseq = self._setup(ops)

        def make(ctx):
            from ledger.services.common import product_copy
            p = product_copy(ctx, KETAMINE_50, field="ndc")
            return ev.StockReturned(
                recipient_type="reverse_distributor", recipient_name="Safe Returns Inc",
                recipient_address=ev.Address("9 Oak Ave", "Austin", "TX", "78702"), recipient_dea_number="RB1234563",
                invoice_number="RD-F", vials=tuple(ev.MovedVial(f"{p1}:{k:02d}", p, "LOT-PK1", date(2028, 6, 30),
                                                                Decimal("10.00")) for k in (1, 2)),
                recipient_registration=ev.DeaRegistration(date(2031, 6, 30), ("3", "3N", "4", "5"))), [
                _sig(ops.pharmacist, "performed", ctx.now), _sig(ops.nurse, "witnessed", ctx.now)]
        seq = _force(ops, make)
        (problem,) = verify(ops.ledger, deep=True).problems
        assert problem.seq == seq and "breaks rule package-sealed:" in str(problem), str(problem)

    def test_a_unit_corrected_in_its_sealed_carton_fails(self, ops):
        (p1, _), rseq = self._setup(ops)

        def make(ctx):
            from ledger.services.common import product_copy
            p = product_copy(ctx, KETAMINE_50, field="ndc")
            return ev.EntryCorrected(corrects_seq=rseq, corrects_kind="stock_received", reason="forged", lines=(
                ev.CorrectionLine(f"{p1}:01", p, "remove", Decimal("1.00")),)), [
                _sig(ops.nurse, "performed", ctx.now), _sig(ops.manager, "approved", ctx.now)]
        seq = _force(ops, make)
        (problem,) = verify(ops.ledger, deep=True).problems
        assert problem.seq == seq and "breaks rule package-sealed:" in str(problem), str(problem)


# --- Form 41: full packages and partial packages ------------------------------------------------


def test_form_41_lists_a_whole_carton_as_one_full_package_and_loose_vials_by_their_own_ndc():
    from tests.reports.handmade_entries import K50
    from tests.reports.test_clinical_reports import clinic_entries, pdf_text

    snap = clinic_entries()
    carton = {**K50, "unit_ndc": "67457-001-00", "units_per_package": 10, "unit_kind": "vial"}
    destroyed = next(e for e in snap.entries if e["kind"] == "stock_destroyed")
    destroyed["items"] = [
        *({"vial_id": f"P5-1:{k:02d}", "product": carton, "lot": "KA2", "full_package": True, "ml": "10.00",
           "mg": "500.00", "package_id": "P5-1"} for k in range(1, 11)),
        {"vial_id": "P5-2:01", "product": carton, "lot": "KA2", "full_package": True, "ml": "10.00", "mg": "500.00"},
        {"vial_id": "P5-2:02", "product": carton, "lot": "KA2", "full_package": False, "ml": "2.50", "mg": "125.00"}]
    data, pages = pdf_text("waste", snap)
    (d,) = data["figures"]["destructions"]
    assert [(i["vial_id"], i["ndc"], i["units"], i["full_package"], i["ml"]) for i in d["items"]] == [
        ("P5-1", "67457-0001-10", 10, True, "100.00"), ("P5-2:01", "67457-001-00", 1, True, "10.00"),
        ("P5-2:02", "67457-001-00", 1, False, "2.50")]
    assert (d["full_packages"], d["partial_ml"], d["total_ml"]) == (2, "2.50", "112.50")
    form = pages[-1]
    assert "10 x 10.00 mL" in form and "67457-001-00" in form and "Total 2 2.50 mL" in form, form


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_cartons_received_listed_and_opened_over_http(ledger):
    from tests.api.conftest import build_api
    from tests.api.test_auth import ptype
    from tests.api.test_clinical import witnessed

    api = build_api(ledger)
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    r = api.client.post(api.url("/receipts"), headers=api.headers("nora"), json={
        "supplier_id": api.clinic.supplier_id, "invoice_number": "INV-CT-1", "occurred_at": two_hours_ago,
        "lines": [{"ndc": KETAMINE_50, "packages": 2, "invoiced_packages": 2, "lot": "KA2611",
                   "expiry": "2028-06-30"}]})
    assert r.status_code == 201, r.text
    p1, p2 = r.json()["package_ids"]
    assert len(r.json()["vial_ids"]) == 20
    v = api.client.get(api.url(f"/vials/{p1}:01"), headers=api.headers("nora")).json()
    assert v["packaged"] is True and v["package_id"] == p1
    listed = api.client.get(api.url("/packages?sealed=true"), headers=api.headers("ari")).json()
    assert [(p["package_id"], p["state"], p["units_on_hand"]) for p in listed] == [(p1, "sealed", 10), (p2, "sealed", 10)]
    body = {"units_found": 9, "occurred_at": an_hour_ago().isoformat()}
    # no witness: refused naming it; an auditor opens nothing
    r = api.client.post(api.url(f"/packages/{p1}/openings"), json=body, headers=api.headers("nora"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "witness", r.text
    r, _ = witnessed(api, "ari", f"/packages/{p1}/openings", body, "ned")
    assert r.status_code == 403 and ptype(r) == "role-required", r.text
    r, _ = witnessed(api, "nora", f"/packages/{p1}/openings", {**body, "units_found": 11}, "ned")
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "units_found", r.text
    r, _ = witnessed(api, "nora", f"/packages/{p1}/openings", body, "ned")
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["command"] == "open_package" and out["entries"][0]["kind"] == "package_opened"
    assert out["units_missing"] == [f"{p1}:10"] and out["discrepancy_id"].endswith("-P")
    disc = api.client.get(api.url("/discrepancies"), headers=api.headers("morgan")).json()
    assert out["discrepancy_id"] in json.dumps(disc)
    r, _ = witnessed(api, "nora", f"/packages/{p1}/openings", body, "ned")
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "package_id", r.text
    r, _ = witnessed(api, "nora", "/packages/P999-9/openings", body, "ned")
    assert r.status_code == 404, r.text
    listed = api.client.get(api.url("/packages"), headers=api.headers("nora")).json()
    assert [p["state"] for p in listed] == ["opened", "sealed"] and listed[0]["units_found"] == 9
    assert verify(ledger, deep=True).ok
