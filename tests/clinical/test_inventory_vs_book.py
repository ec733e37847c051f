"""Issue 20: every inventory is witnessed by a second person, and a biennial or other inventory is
compared with the book at that instant; each difference opens a discrepancy through the one
discrepancy workflow (the same projection, alert and resolution as a count's).

The inspector's finding: "A biennial inventory listing 3 of the 10 vials on hand was accepted with
no discrepancy and no alert." SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import ClassVar

import pytest

from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import InventoryItemInput, ResolveDiscrepancy, TakeInventory
from ledger.domain.errors import Conflict, Forbidden, InvalidInput
from ledger.domain.principal import Meaning
from ledger.services import stock
from ledger.services.alerts import list_alerts
from ledger.services.common import product_of_vial
from ledger.services.verify import verify
from tests.clinical.conftest import Ops
from tests.clinical.test_clinical_contract import last_entries
from tests.conftest import BACKENDS, DEA, KETAMINE_50, an_hour_ago

both = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def sealed(vid: str) -> InventoryItemInput:
    return InventoryItemInput(KETAMINE_50, "x", "2028-06-30", sealed=True, vial_id=vid)


def opened(vid: str, ml: str) -> InventoryItemInput:
    return InventoryItemInput(KETAMINE_50, "x", "2028-06-30", sealed=False, ml=ml, vial_id=vid)


def biennial(ops: Ops, *items: InventoryItemInput, witness=None, who=None, kind="biennial", reason=None) -> dict:
    return services.take_inventory(ops.ledger, who or ops.pharmacist, TakeInventory(
        kind, "close_of_business", an_hour_ago(), tuple(items), reason=reason),
        witness=witness if witness is not None else ops.nurse)


def entries(ops: Ops) -> int:
    with ops.ledger.reading() as c:
        return c.exec_driver_sql("SELECT count(*) FROM entries").scalar()


@both
def test_three_of_ten_listed_opens_a_discrepancy_for_the_seven_and_a_loss_takes_exactly_them(ops):
    vids = ops.receive(10)
    out = biennial(ops, *(sealed(v) for v in vids[:3]))
    [d] = out["discrepancy_ids"]
    [line] = out["lines"]
    assert line["expected_sealed_containers"] == 10 and line["found_sealed_containers"] == 3
    assert line["expected_ml"] == "100.00" and line["found_ml"] == "30.00" and line["difference_ml"] == "-70.00"
    assert sorted(line["vials_not_found"]) == sorted(vids[3:]) and line["discrepancy_id"] == d
    e = last_entries(ops.ledger)[0]
    assert [s["meaning"] for s in e["signatures"]] == ["performed", "witnessed"]
    assert e["lines"][0]["discrepancy_id"] == d and sorted(e["lines"][0]["vials_not_found"]) == sorted(vids[3:])
    # the alert a count's discrepancy raises, raised for the inventory's
    [alert] = [a for a in list_alerts(ops.ledger, DEA, rule="count_discrepancy") if a["alert_id"] == d]
    assert alert["status"] == "open" and alert["severity"] == "high" and "-70.00" in alert["summary"]
    assert set(alert["subjects"]) == {ops.pharmacist.staff_id, ops.nurse.staff_id}
    # the one resolution: not by the taker or the witness of the inventory
    with pytest.raises(Conflict) as exc:
        services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "searched"),
                                     witness=ops.nurse)
    assert exc.value.field == "witness"
    out = services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
        d, "theft_or_loss", "seven vials not found after a search of the safe"), witness=ops.nurse2)
    assert out["adjusted_ml"] == "70.00"
    adj = last_entries(ops.ledger)[0]
    assert adj["kind"] == "loss_adjusted"
    assert sorted(a["vial_id"] for a in adj["adjustments"]) == sorted(vids[3:])
    assert all(a["whole_vial"] for a in adj["adjustments"])
    on_hand = sorted(v["vial_id"] for v in stock.vials(ops.ledger, ops.dea) if v["state"] in ("sealed", "open"))
    assert on_hand == sorted(vids[:3])
    [alert] = [a for a in list_alerts(ops.ledger, DEA, rule="count_discrepancy") if a["alert_id"] == d]
    assert alert["status"] == "resolved"
    assert verify(ops.ledger, deep=True).ok


@both
def test_an_inventory_needs_a_witness_who_is_someone_else(ops):
    vids = ops.receive(2)
    n = entries(ops)
    for kind, items in (("biennial", (sealed(vids[0]), sealed(vids[1]))), ("other", ())):
        cmd = TakeInventory(kind, "close_of_business", an_hour_ago(), items, reason="newly controlled" if kind == "other"
                            else None)
        with pytest.raises(InvalidInput) as exc:
            services.take_inventory(ops.ledger, ops.pharmacist, cmd)
        assert exc.value.field == "witness"
        with pytest.raises(Conflict) as exc:
            services.take_inventory(ops.ledger, ops.pharmacist, cmd, witness=ops.pharmacist)
        assert exc.value.field == "witness"
    assert entries(ops) == n  # nothing written


@both
def test_an_initial_inventory_is_witnessed_and_compares_nothing(ledger):
    from tests.conftest import Clinic

    c = Clinic(ledger)
    cmd = TakeInventory("initial", "opening_of_business", an_hour_ago(), (
        InventoryItemInput(KETAMINE_50, "L1", "2028-06-30", sealed=True, containers=2),))
    with pytest.raises(InvalidInput) as exc:
        services.take_inventory(ledger, c.pharmacist, cmd)
    assert exc.value.field == "witness"
    out = services.take_inventory(ledger, c.pharmacist, cmd, witness=c.nurse)
    assert out["discrepancy_ids"] == [] and out["lines"] == [] and len(out["vial_ids"]) == 2
    e = last_entries(ledger)[0]
    assert e["lines"] == [] and [s["meaning"] for s in e["signatures"]] == ["performed", "witnessed"]
    assert verify(ledger, deep=True).ok


@both
def test_found_more_than_the_book_opens_a_discrepancy_too_and_is_not_a_loss(ops):
    v1, v2 = ops.receive(2)
    ops.dose(v1, drawn="4.00", given="4.00")  # v1: 6.00 mL on the book
    out = biennial(ops, opened(v1, "8.00"), sealed(v2))
    [d] = out["discrepancy_ids"]
    assert out["lines"][0]["difference_ml"] == "2.00" and out["lines"][0]["vials_not_found"] == []
    with pytest.raises(Conflict) as exc:
        services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "?"),
                                     witness=ops.nurse2)
    assert exc.value.field == "category"
    services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
        d, "other", "the estimate of the opened vial was read at the wrong graduation"), witness=ops.nurse2)
    # the same figures as the book: nothing opened
    assert biennial(ops, opened(v1, "6.00"), sealed(v2))["discrepancy_ids"] == []
    assert verify(ops.ledger, deep=True).ok


@both
def test_an_opened_vial_found_lower_is_resolved_with_the_missing_vial(ops):
    v1, v2, v3 = ops.receive(3)
    ops.dose(v1, drawn="4.00", given="4.00")  # v1: 6.00 mL on the book
    out = biennial(ops, opened(v1, "5.00"), sealed(v2))  # v3 not found, v1 1.00 mL short
    [d] = out["discrepancy_ids"]
    assert out["lines"][0]["difference_ml"] == "-11.00" and out["lines"][0]["vials_not_found"] == [v3]
    services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(
        d, "theft_or_loss", "vial not found; the opened vial holds less"), witness=ops.nurse2)
    adj = {a["vial_id"]: a["ml"] for a in last_entries(ops.ledger)[0]["adjustments"]}
    assert adj == {v3: "10.00", v1: "1.00"}
    assert verify(ops.ledger, deep=True).ok


@both
def test_an_other_inventory_gives_its_reason(ops):
    vids = ops.receive(1)
    with pytest.raises(InvalidInput) as exc:
        biennial(ops, sealed(vids[0]), kind="other")
    assert exc.value.field == "reason"
    with pytest.raises(InvalidInput) as exc:
        biennial(ops, sealed(vids[0]), reason="why not")
    assert exc.value.field == "reason"
    out = biennial(ops, sealed(vids[0]), kind="other", reason="change of ownership (21 CFR 1304.11(d))")
    assert out["discrepancy_ids"] == []
    e = last_entries(ops.ledger)[0]
    assert e["inventory_type"] == "other" and e["reason"].startswith("change of ownership")
    assert verify(ops.ledger, deep=True).ok


@both
def test_the_taker_of_the_inventory_does_not_resolve_its_discrepancy(ops):
    vids = ops.receive(2)
    [d] = biennial(ops, sealed(vids[0]), who=ops.manager, witness=ops.nurse)["discrepancy_ids"]
    with pytest.raises(Forbidden):
        services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "gone"),
                                     witness=ops.nurse2)
    services.resolve_discrepancy(ops.ledger, ops.manager2, ResolveDiscrepancy(d, "theft_or_loss", "gone"),
                                 witness=ops.nurse2)
    assert verify(ops.ledger, deep=True).ok


# --- verify --deep: the comparison replayed -------------------------------------------------------


def _forced_inventory(ops: Ops, vids: list[str], *, lines, with_lines: bool = True) -> int:
    """A biennial inventory written by hand through the append path (every hash agrees)."""
    from tests.integrity.test_rules_replay import force, sig

    def make(ctx):
        items = []
        for vid in vids:
            v = ctx.view.get("vials", (DEA, vid))
            items.append(ev.InventoryItem(vid, product_of_vial(ctx, v), v["lot"], date.fromisoformat(v["expiry"]), True,
                                          v["ml_left"], False))
        product = product_of_vial(ctx, ctx.view.get("vials", (DEA, vids[0])))
        sigs = [sig(ops.pharmacist, Meaning.PERFORMED.value, ctx.now), sig(ops.nurse, Meaning.WITNESSED.value, ctx.now)]
        if not with_lines:
            return OldInventoryTaken("biennial", "close_of_business", tuple(items)), sigs[:1]
        return ev.InventoryTaken("biennial", "close_of_business", tuple(items), lines=lines(product, ctx.next_seq)), sigs

    return force(ops.ledger, make)


@both
def test_a_forged_inventory_claiming_no_difference_fails_verify_deep(ops):
    vids = ops.receive(10)
    assert verify(ops.ledger, deep=True).ok

    def no_difference(product, seq):  # three listed, "the book held three"
        return (ev.InventoryLine(product, 3, 0, Decimal("30.00"), 3, 0, Decimal("30.00"), Decimal("0.00"), (), None),)

    seq = _forced_inventory(ops, vids[:3], lines=no_difference)
    report = verify(ops.ledger, deep=True)
    assert not report.ok
    text = " ".join(str(p) for p in report.problems)
    assert "inventory-vs-book" in text and f"{seq}" in text, text


@both
def test_a_forged_inventory_with_the_book_right_but_no_discrepancy_fails_verify_deep(ops):
    vids = ops.receive(10)

    def silent(product, seq):  # the true figures, but no discrepancy and nothing "not found"
        return (ev.InventoryLine(product, 10, 0, Decimal("100.00"), 3, 0, Decimal("30.00"), Decimal("-70.00"), (),
                                 None),)

    _forced_inventory(ops, vids[:3], lines=silent)
    report = verify(ops.ledger, deep=True)
    assert not report.ok and "inventory-vs-book" in " ".join(str(p) for p in report.problems)


@dataclass(frozen=True)
class OldInventoryTaken(ev.Event):
    """``inventory_taken`` as it was written before issue 20 (no ``lines``, no ``reason``)."""

    kind: ClassVar[str] = "inventory_taken"
    inventory_type: str
    taken_at: str
    items: tuple[ev.InventoryItem, ...]
    late_reason: str | None = None
    documents: tuple[str, ...] = ()


@both
def test_inventories_recorded_before_issue_20_still_verify_but_not_after_a_compared_one(ops):
    vids = ops.receive(10)
    _forced_inventory(ops, vids[:3], lines=None, with_lines=False)  # the old 3-of-10, unwitnessed
    e = last_entries(ops.ledger)[0]
    assert "lines" not in e and len(e["signatures"]) == 1
    report = verify(ops.ledger, deep=True)
    assert report.ok, [str(p) for p in report.problems]
    assert [a for a in list_alerts(ops.ledger, DEA, rule="count_discrepancy")] == []  # nothing opened then
    biennial(ops, *(sealed(v) for v in vids))  # a compared inventory ...
    assert verify(ops.ledger, deep=True).ok
    _forced_inventory(ops, vids[:3], lines=None, with_lines=False)  # ... then an "old" one is a forgery
    report = verify(ops.ledger, deep=True)
    assert not report.ok and "inventory-vs-book" in " ".join(str(p) for p in report.problems)


# --- HTTP -------------------------------------------------------------------------------------------


@both
def test_post_inventories_needs_a_witness_and_answers_the_discrepancies(ledger):
    from tests.api.conftest import build_api
    from tests.api.test_clinical import witnessed
    from tests.api.test_commands import receipt

    api = build_api(ledger)
    rec = api.client.post(api.url("/receipts"), json=receipt(api, containers=10), headers=api.headers("nora"))
    assert rec.status_code == 201, rec.text
    vids = rec.json()["vial_ids"]
    body = {"inventory_type": "biennial", "taken_at": "close_of_business",
            "occurred_at": (an_hour_ago() + timedelta(minutes=30)).isoformat(),
            "items": [{"ndc": KETAMINE_50, "lot": "KA2611", "expiry": "2028-06-30", "sealed": True, "vial_id": v}
                      for v in vids[:3]]}
    alone = api.client.post(api.url("/inventories"), json=body, headers=api.headers("nora"))
    assert alone.status_code == 422 and "witness" in alone.text, alone.text
    with pytest.raises(AssertionError, match="a witness must be a second person"):  # refused at the assertion
        witnessed(api, "nora", "/inventories", body, "nora")
    r, _ = witnessed(api, "nora", "/inventories", body, "pia")
    assert r.status_code == 201, r.text
    out = r.json()
    [d] = out["discrepancy_ids"]
    [line] = out["lines"]
    assert line["discrepancy_id"] == d and sorted(line["vials_not_found"]) == sorted(vids[3:])
    assert line["expected_ml"] == "100.00" and line["found_ml"] == "30.00"
    alerts = api.client.get(api.url("/alerts"), params={"status": "all"}, headers=api.headers("morgan")).json()
    assert d in [a["alert_id"] for a in alerts["items"] if a["rule"] == "count_discrepancy"]
    assert verify(ledger, deep=True).ok


# --- the inventory record -----------------------------------------------------------------------


@both
def test_the_inventory_record_prints_the_book_found_difference_and_discrepancy(ops, tmp_path):
    import os

    from reports.base import build_report
    from tests.conftest import clinic_today

    first = services.take_inventory(ops.ledger, ops.pharmacist, TakeInventory(
        "initial", "opening_of_business", an_hour_ago() - timedelta(hours=2),
        (InventoryItemInput(KETAMINE_50, "KA1", "2028-06-30", sealed=True, containers=10),)), witness=ops.nurse)
    vids = first["vial_ids"]
    [d] = biennial(ops, *(sealed(v) for v in vids[:3]))["discrepancy_ids"]
    today = clinic_today()
    pdf, data = build_report(ops.ledger, "inventory", DEA, (today - timedelta(days=1)).isoformat(),
                             (today + timedelta(days=1)).isoformat())
    initial, later = data["figures"]["inventories"]
    assert initial["compared"] == [] and later["inventory_type"] == "biennial"
    [c] = later["compared"]
    assert c["expected_sealed"] == 10 and c["found_sealed"] == 3 and c["difference_ml"] == "-70.00"
    assert c["discrepancy_id"] == d and sorted(c["vials_not_found"]) == sorted(vids[3:])
    from reports.inventory import KIND

    assert KIND.layout == 2  # issue 20: the comparison is printed
    if os.environ.get("CSLEDGER_INVENTORY_PDF"):  # to look at it: pdftoppm -png -r 60
        with open(os.environ["CSLEDGER_INVENTORY_PDF"], "wb") as f:
            f.write(pdf)


@both
def test_a_sealed_carton_is_counted_whole_and_a_loss_takes_it_whole(ops):
    from ledger.domain.commands import ReceivedLineInput, ReceiveStock

    units = services.receive_stock(ops.ledger, ops.nurse, ReceiveStock(
        ops.supplier_id, "INV-CARTON", an_hour_ago() - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, None, "LOT-PK1", "2028-06-30", packages=1),)))["vial_ids"]
    assert len(units) == 10
    with pytest.raises(InvalidInput) as exc:  # three units of a sealed carton: what is inside is not known
        biennial(ops, *(sealed(v) for v in units[:3]))
    assert exc.value.field == "items[0].vial_id" and "counted whole" in exc.value.reason
    with pytest.raises(InvalidInput):  # nor is a unit in it "opened"
        biennial(ops, *(sealed(v) for v in units[:9]), opened(units[9], "5.00"))
    assert biennial(ops, *(sealed(v) for v in units))["discrepancy_ids"] == []
    [d] = biennial(ops)["discrepancy_ids"]  # the carton not found
    services.resolve_discrepancy(ops.ledger, ops.manager, ResolveDiscrepancy(d, "theft_or_loss", "carton gone"),
                                 witness=ops.nurse2)
    assert sorted(a["vial_id"] for a in last_entries(ops.ledger)[0]["adjustments"]) == sorted(units)
    report = verify(ops.ledger, deep=True)
    assert report.ok, [str(p) for p in report.problems]
