"""The accountability audit's arithmetic and boundaries, on hand-made entries (issue 14: mutation
testing, bench/mutation.py). Pure and fast: ``accountability`` reads decoded entries only.

Every expected figure is worked out by hand in the comments, never taken from the code: each
product's whole output (lines in mL, mg and containers, variance, flags, bases, sources,
unreconciled, series) is compared at once, so a changed key, line, sign, unit or boundary fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ledger.services import audit
from ledger.services.audit import accountability

D = Decimal
DEA = "AB1234563"
K50 = {"ndc": "67457-0001-10", "ndc_key": "67457000110", "name": "Ketamine 50", "drug_code": "7285",
       "schedule": "III", "form": "injection", "strength_mg_per_ml": "50.00", "container_ml": "10.00"}
K10 = {"ndc": "52584-0037-10", "ndc_key": "52584003710", "name": "Ketamine 10", "drug_code": "7285",
       "schedule": "III", "form": "vial", "strength_mg_per_ml": "10.00", "container_ml": "20.00"}
K99 = {"ndc": "1111-2222-33", "ndc_key": "11112222033", "name": "Never stocked", "drug_code": "7285",
       "schedule": "III", "strength_mg_per_ml": "5.00", "container_ml": "1.00"}  # no "form": read as ""
LINES = ("beginning", "receipts", "to_account_for", "administered", "wasted", "destroyed", "transferred",
         "breakage", "theft_or_loss", "ending", "accounted_for", "difference", "adjustments",
         "difference_after_adjustments")
START = datetime(2026, 9, 10, tzinfo=UTC)
END = datetime(2026, 9, 20, tzinfo=UTC)


def t(day: int, hour: int = 0) -> str:
    return f"2026-09-{day:02d}T{hour:02d}:00:00.000000Z"


class Log:
    """Entries in seq order, each with its event time (recorded when it happened)."""

    def __init__(self) -> None:
        self.entries: list[dict] = []

    def add(self, kind: str, at: str, *, recorded_at: str | None = None, **fields) -> dict:
        e = {"registrant": DEA, "seq": len(self.entries), "kind": kind, "occurred_at": at,
             "recorded_at": recorded_at or at, "signatures": [], **fields}
        self.entries.append(e)
        return e

    def products(self, *products: dict) -> None:
        self.add("registrant_registered", t(1), dea_number=DEA, name="Calm", address={}, time_zone="UTC", log_id="x")
        for p in products:
            self.add("product_added", t(1), product=p)

    def source(self, e: dict) -> dict:
        out = {"seq": e["seq"], "kind": e["kind"], "occurred_at": e["occurred_at"]}
        if e["kind"] == "inventory_taken":
            out.update(inventory_type=e["inventory_type"], taken_at=e["taken_at"])
        return out


def item(vial: str, p: dict, ml: str) -> dict:
    return {"vial_id": vial, "product": p, "ml": ml}


def received(p: dict, *vials: str) -> dict:
    return {"product": p, "containers": len(vials), "lot": "L", "expiry": "2028-01-01", "vial_ids": list(vials)}


def lines(**ml: str) -> dict[str, Decimal]:
    """Audit lines, zero unless given; the difference after adjustments, unless given, is by
    definition the difference plus the adjustments (issue 15)."""
    out = dict.fromkeys(LINES, D("0.00"))
    out.update({k: D(v) for k, v in ml.items()})
    if "difference_after_adjustments" not in ml:
        out["difference_after_adjustments"] = out["difference"] + out["adjustments"]
    return out


def product_out(p: dict, ml: dict, mg: dict, containers: dict, **rest) -> dict:
    rest.setdefault("variance_after_adjustments_percent", rest.get("variance_percent"))
    rest.setdefault("adjustment_entries", [])
    return {"ndc": p["ndc"], "ndc_key": p["ndc_key"], "name": p["name"],
            "strength_mg_per_ml": D(p["strength_mg_per_ml"]), "container_ml": D(p["container_ml"]),
            "ml": ml, "mg": mg, "containers": containers, "form": p.get("form", ""), **rest}


def main_period() -> tuple[Log, dict]:
    """Two products stocked, a third never; every line of the audit non-zero for K50."""
    log = Log()
    log.products(K50, K10, K99)
    log.add("policy_set", t(1), variance_threshold_percent="2.50")
    # before the period: K50 book 10 + 10 + 10 = 30 mL, then counted 29 mL with nothing moving after
    log.add("inventory_taken", t(2), inventory_type="initial", taken_at="opening_of_business",
            items=[item("V1", K50, "10.00"), item("V2", K50, "10.00"), item("W1", K10, "20.00")])
    log.add("stock_counted", t(3), session_id="C0", blind=True, lines=[{"product": K10, "counted_ml": "19.00"}])
    # K10 moves after its count: its beginning is the book, 20 - 2 = 18 mL
    log.add("dose_administered", t(4), draws=[item("W1", K10, "2.00")], ml_drawn="2.00", ml_given="2.00")
    log.add("stock_received", t(5), invoice_number="I0", supplier={}, lines=[received(K50, "V3")])
    k50_begin = log.add("stock_counted", t(8), session_id="C1", blind=True,
                        lines=[{"product": K50, "counted_ml": "29.00"}])
    # the period
    log.add("stock_received", t(11), invoice_number="I1", supplier={},
            lines=[received(K50, "V4", "V5"), received(K10, "W2")])
    log.add("dose_administered", t(12), draws=[item("V1", K50, "4.00"), item("V2", K50, "2.00")],
            ml_drawn="6.00", ml_given="5.00")
    log.add("dose_wasted", t(12, 1), product=K50, ml="0.50", mg="25.00")
    log.add("stock_destroyed", t(13), items=[item("V3", K50, "10.00")])
    log.add("stock_transferred", t(14), vials=[item("V4", K50, "10.00")])
    log.add("stock_returned", t(14, 1), vials=[item("W2", K10, "20.00")])
    adjusted = log.add("loss_adjusted", t(15), discrepancy_id="D0", category="theft_or_loss",
                       adjustments=[item("V5", K50, "1.00")])
    log.add("theft_or_loss_reported", t(15, 1), lost=[item("V5", K50, "2.00")])
    corrected = log.add("entry_corrected", t(16), corrects_seq=12, corrects_kind="dose_administered",
                        reason="drawn 0.30 mL more from V1, 0.10 mL less from V2",
                        lines=[{**item("V1", K50, "0.30"), "direction": "remove"},
                               {**item("V2", K50, "0.10"), "direction": "add"}])
    log.add("dose_administered", t(16, 2), draws=[item("W1", K10, "3.00")], ml_drawn="3.00", ml_given="3.00")
    k10_end = log.add("stock_counted", t(17), session_id="C2", blind=True,
                      lines=[{"product": K10, "counted_ml": "14.50"}])
    k50_end = log.add("stock_counted", t(18), session_id="C3", blind=False,
                      lines=[{"product": K50, "counted_ml": "18.00"}])
    # after K50's ending count, inside the period: in its series, not in its lines
    log.add("dose_administered", t(19), draws=[item("V2", K50, "1.00")], ml_drawn="1.00", ml_given="1.00")
    log.add("dose_wasted", t(19, 1), product=K50, ml="0.20", mg="10.00")
    # after the period, and a policy recorded after it: neither counts
    log.add("stock_received", t(25), invoice_number="I2", supplier={}, lines=[received(K50, "V6")])
    log.add("dose_administered", t(25, 1), draws=[item("W1", K10, "1.00")], ml_drawn="1.00", ml_given="1.00")
    log.add("policy_set", t(26), variance_threshold_percent="0.10")
    return log, {"k50_begin": k50_begin, "k10_end": k10_end, "k50_end": k50_end, "adjusted": adjusted,
                 "corrected": corrected}


def test_every_line_of_two_products_by_hand():
    log, at = main_period()
    a = accountability(log.entries, START, END)
    # K50: beginning counted 29 (no movement after the count); receipts 2 x 10 = 20; to account for 49.
    # Administered 5 (given, not the 6 drawn); wasted 0.50; destroyed 10; transferred 10; theft or
    # loss (Form 106) 2; ending counted 18. Accounted for 5 + 0.5 + 10 + 10 + 2 + 18 = 45.50;
    # difference before adjustments -3.50; -350/49 = -7.1428 -> -7.14 % (> 2.50: flagged).
    # Adjustments after it: the loss adjusted 1 + the correction's 0.30 removed - 0.10 added back
    # = 1.20; difference after them -2.30; -230/49 = -4.6938 -> -4.69 %.
    # mg = mL x 50; containers = mL / 10. Book at the count: 30 + 20 - 6 - 10 - 10 - 3 - 0.2 = 20.80.
    k50 = product_out(
        K50,
        lines(beginning="29.00", receipts="20.00", to_account_for="49.00", administered="5.00", wasted="0.50",
              destroyed="10.00", transferred="10.00", theft_or_loss="2.00", ending="18.00",
              accounted_for="45.50", difference="-3.50", adjustments="1.20", difference_after_adjustments="-2.30"),
        lines(beginning="1450.00", receipts="1000.00", to_account_for="2450.00", administered="250.00",
              wasted="25.00", destroyed="500.00", transferred="500.00", theft_or_loss="100.00",
              ending="900.00", accounted_for="2275.00", difference="-175.00", adjustments="60.00",
              difference_after_adjustments="-115.00"),
        lines(beginning="2.90", receipts="2.00", to_account_for="4.90", administered="0.50", wasted="0.05",
              destroyed="1.00", transferred="1.00", theft_or_loss="0.20", ending="1.80",
              accounted_for="4.55", difference="-0.35", adjustments="0.12", difference_after_adjustments="-0.23"),
        variance_percent=D("-7.14"), variance_after_adjustments_percent=D("-4.69"),
        adjustment_entries=[
            {"seq": at["adjusted"]["seq"], "kind": "loss_adjusted", "occurred_at": t(15), "recorded_at": t(15),
             "ml": D("1.00"), "mg": D("50.00"), "signatures": [], "in_counted_beginning": False,
             "category": "theft_or_loss", "discrepancy_id": "D0", "count_seq": None, "resolution_seq": None,
             "description": "loss adjustment for discrepancy D0, resolved as theft or loss"},
            {"seq": at["corrected"]["seq"], "kind": "entry_corrected", "occurred_at": t(16), "recorded_at": t(16),
             "ml": D("0.20"), "mg": D("10.00"), "signatures": [], "in_counted_beginning": False,
             "corrects_seq": 12, "corrects_kind": "dose_administered",
             "reason": "drawn 0.30 mL more from V1, 0.10 mL less from V2",
             "description": "correction of entry 12 (dose_administered): drawn 0.30 mL more from V1, 0.10 mL "
                            "less from V2"}],
        flagged=True, beginning_basis="counted", ending_basis="counted",
        ending_as_of=t(18), book_at_end_ml=D("20.80"),
        beginning_source=log.source(at["k50_begin"]), ending_source=log.source(at["k50_end"]),
        # drawn 6 - given 5 - wasted 0.50 (the waste after the count is not in the period)
        unreconciled={"ml": D("0.50"), "mg": D("25.00"), "containers": D("0.05")},
    )
    # K10: moved after its count before the start, so the beginning is the book 20 - 2 = 18; receipts
    # 20; returned 20 (transferred line); administered 3; ending counted 14.50; to account for 38;
    # accounted for 3 + 20 + 14.5 = 37.50; difference -0.50; -50/38 = -1.3157 -> -1.32 % (not > 2.50).
    # containers = mL / 20, half to even: 14.50 -> 0.725 -> 0.72; 37.50 -> 1.875 -> 1.88; -0.025 -> -0.02.
    # Book at its count: 18 + 20 - 20 - 3 = 15.00.
    k10 = product_out(
        K10,
        lines(beginning="18.00", receipts="20.00", to_account_for="38.00", administered="3.00",
              transferred="20.00", ending="14.50", accounted_for="37.50", difference="-0.50"),
        lines(beginning="180.00", receipts="200.00", to_account_for="380.00", administered="30.00",
              transferred="200.00", ending="145.00", accounted_for="375.00", difference="-5.00"),
        lines(beginning="0.90", receipts="1.00", to_account_for="1.90", administered="0.15",
              transferred="1.00", ending="0.72", accounted_for="1.88", difference="-0.02"),
        variance_percent=D("-1.32"), flagged=False, beginning_basis="book", ending_basis="counted",
        ending_as_of=t(17), book_at_end_ml=D("15.00"), beginning_source=None, ending_source=log.source(at["k10_end"]),
        unreconciled={"ml": D("0.00"), "mg": D("0.00"), "containers": D("0.00")},
    )
    assert a["start"] == "2026-09-10T00:00:00.000000Z" and a["end"] == "2026-09-20T00:00:00.000000Z"
    assert a["variance_threshold_percent"] == D("2.50")  # the policy recorded by the end, not the later one
    # sorted by NDC key (5258... before 6745...); K99 never stocked: no line
    assert a["products"] == [k10, k50]
    total = a["total"]
    assert total["ml"] == {x: k50["ml"][x] + k10["ml"][x] for x in LINES}
    assert total["mg"] == {x: k50["mg"][x] + k10["mg"][x] for x in LINES}
    assert total["containers"] == {x: k50["containers"][x] + k10["containers"][x] for x in LINES}
    assert total["ml"]["difference"] == D("-4.00") and total["containers"]["ending"] == D("2.52")
    assert total["ml"]["difference_after_adjustments"] == D("-2.80")
    # in mg: before adjustments -180 / 2,830 = -6.3604 -> -6.36 %; after -120 / 2,830 = -4.2402 -> -4.24 %
    assert total["variance_percent"] == D("-6.36") and total["flagged"] is True
    assert total["variance_after_adjustments_percent"] == D("-4.24")
    assert set(total) == {"ml", "mg", "containers", "variance_percent", "flagged", "variance_after_adjustments_percent"}
    assert set(a) == {"start", "end", "variance_threshold_percent", "products", "total"}


def test_series_is_the_book_after_each_entry_to_the_end():
    log, _ = main_period()
    a = accountability(log.entries, START, END, series=True)
    k10, k50 = a["products"]
    # K50's book: 30 at the start (the book, not the count of 29), then per entry (both draws of one
    # dose are one point, the correction's remove and add are one point), through the dose after
    # its ending count (the series runs to the end of the period).
    assert k50["series"] == [
        (t(10), D("30.00")), (t(11), D("50.00")), (t(12), D("44.00")), (t(13), D("34.00")), (t(14), D("24.00")),
        (t(15), D("23.00")), (t(15, 1), D("21.00")), (t(16), D("20.80")), (t(19), D("19.80"))]
    assert k10["series"] == [(t(10), D("18.00")), (t(11), D("38.00")), (t(14, 1), D("18.00")), (t(16, 2), D("15.00"))]
    plain = accountability(log.entries, START, END)
    assert [{k: v for k, v in p.items() if k != "series"} for p in a["products"]] == plain["products"]
    assert all("series" not in p for p in plain["products"])


def test_an_initial_inventory_inside_the_period_begins_it_and_never_ends_it():
    log = Log()
    log.products(K50, K10)
    log.add("stock_received", t(5), invoice_number="I0", supplier={}, lines=[received(K10, "W1")])
    inv = log.add("inventory_taken", t(12), inventory_type="initial", taken_at="close_of_business",
                  items=[item("V1", K50, "10.00"), item("V2", K50, "4.00")])
    log.add("dose_administered", t(13), draws=[item("V1", K50, "2.50")], ml_drawn="2.50", ml_given="2.00")
    a = accountability(log.entries, START, END)
    k10, k50 = a["products"]
    # K50: the inventory brings 10 + 4 = 14 under account; 2.00 given of 2.50 drawn (0.50
    # unreconciled); no count: ending the book 14 - 2.5 = 11.50; accounted for 2 + 11.5 = 13.50;
    # difference -0.50; -50/14 = -3.5714 -> -3.57 % > 1.00 (the default threshold: no policy).
    assert k50 == product_out(
        K50,
        lines(beginning="14.00", to_account_for="14.00", administered="2.00", ending="11.50",
              accounted_for="13.50", difference="-0.50"),
        lines(beginning="700.00", to_account_for="700.00", administered="100.00", ending="575.00",
              accounted_for="675.00", difference="-25.00"),
        lines(beginning="1.40", to_account_for="1.40", administered="0.20", ending="1.15",
              accounted_for="1.35", difference="-0.05"),
        variance_percent=D("-3.57"), flagged=True, beginning_basis="book", ending_basis="book",
        ending_as_of=t(20), book_at_end_ml=D("11.50"), beginning_source=log.source(inv), ending_source=None,
        unreconciled={"ml": D("0.50"), "mg": D("25.00"), "containers": D("0.05")},
    )
    # K10: 20 mL before the period, nothing since: beginning = ending = 20, no difference
    assert k10["ml"] == lines(beginning="20.00", to_account_for="20.00", ending="20.00", accounted_for="20.00")
    assert k10["beginning_source"] is None and k10["variance_percent"] == D("0.00") and k10["flagged"] is False
    assert a["variance_threshold_percent"] == D("1.00")
    # in mg: -25 / (700 + 20 x 10) = -2.7777 -> -2.78 %
    assert a["total"]["variance_percent"] == D("-2.78") and a["total"]["flagged"] is True


def test_a_biennial_inventory_ends_the_period_for_every_product():
    log = Log()
    log.products(K50, K10)
    initial = log.add("inventory_taken", t(2), inventory_type="initial", taken_at="opening_of_business",
                      items=[item("V1", K50, "10.00"), item("V2", K50, "10.00"), item("V3", K50, "10.00"),
                             item("W1", K10, "20.00")])
    # a biennial inventory moves nothing; it counts every product (one absent from it: 0 mL)
    inv = log.add("inventory_taken", t(15), inventory_type="biennial", taken_at="close_of_business",
                  items=[item("V1", K50, "10.00"), item("V2", K50, "9.50")])
    log.add("dose_administered", t(16), draws=[item("V3", K50, "1.00")], ml_drawn="1.00", ml_given="1.00")
    a = accountability(log.entries, START, END)
    k10, k50 = a["products"]
    # K50: beginning counted 30 (the initial inventory before the start is a physical count, and
    # nothing moved after it); ending counted 10 + 9.50 = 19.50 at the biennial inventory (the dose
    # after it is not in the period);
    # difference -10.50; -1050/30 = -35.00 %. Book at the inventory: 30.
    assert k50["ml"] == lines(beginning="30.00", to_account_for="30.00", ending="19.50", accounted_for="19.50",
                              difference="-10.50")
    assert k50["variance_percent"] == D("-35.00") and k50["book_at_end_ml"] == D("30.00")
    assert k50["ending_basis"] == "counted" and k50["ending_as_of"] == t(15)
    assert k50["ending_source"] == log.source(inv) and k50["beginning_basis"] == "counted"
    assert k50["beginning_source"] == log.source(initial) == k10["beginning_source"]
    # K10: absent from the inventory: counted 0 of 20; -100.00 %
    assert k10["ml"] == lines(beginning="20.00", to_account_for="20.00", difference="-20.00")
    assert k10["variance_percent"] == D("-100.00") and k10["ending_source"] == log.source(inv)


def test_boundaries_start_is_before_the_period_end_is_in_it():
    """An entry at exactly ``start`` is before the period (in the beginning), one at exactly
    ``end`` is inside it; a count at exactly ``start`` is what the beginning may rest on."""
    log = Log()
    log.products(K50)
    log.add("stock_received", t(9), invoice_number="I0", supplier={}, lines=[received(K50, "V1")])
    log.add("stock_received", t(10), invoice_number="I1", supplier={}, lines=[received(K50, "V2")])
    # a dose at exactly the start is before the period: neither administered nor wasted in it
    log.add("dose_administered", t(10), draws=[item("V1", K50, "1.00")], ml_drawn="1.00", ml_given="0.50")
    log.add("dose_wasted", t(10), product=K50, ml="0.50", mg="25.00")
    at_start = log.add("stock_counted", t(10), session_id="C1", blind=True,
                       lines=[{"product": K50, "counted_ml": "19.00"}])
    log.add("stock_received", t(20), invoice_number="I2", supplier={}, lines=[received(K50, "V3")])
    log.add("stock_received", "2026-09-20T00:00:00.000001Z", invoice_number="I3", supplier={},
            lines=[received(K50, "V4")])
    (p,) = accountability(log.entries, START, END)["products"]
    # beginning: counted 19 at the start (nothing moved after it); receipts: V3 at the end only;
    # ending the book 10 + 10 - 1 + 10 = 29
    assert p["ml"] == lines(beginning="19.00", receipts="10.00", to_account_for="29.00", ending="29.00",
                            accounted_for="29.00")
    assert p["beginning_basis"] == "counted" and p["beginning_source"] == log.source(at_start)
    assert p["book_at_end_ml"] == D("29.00") and p["ending_as_of"] == t(20)
    assert p["unreconciled"]["ml"] == D("0.00")
    assert p["variance_percent"] == D("0.00") and p["flagged"] is False


def test_a_count_after_a_movement_at_the_same_instant_still_begins_the_period():
    """Entries are ordered by event time, then seq: a count recorded after a receipt at the same
    instant comes after it, so nothing moved after the count."""
    log = Log()
    log.products(K50)
    log.add("stock_received", t(9), invoice_number="I0", supplier={}, lines=[received(K50, "V1")])
    log.add("stock_counted", t(9), session_id="C1", blind=True, lines=[{"product": K50, "counted_ml": "9.00"}])
    (p,) = accountability(log.entries, START, END)["products"]
    assert p["beginning_basis"] == "counted" and p["ml"]["beginning"] == D("9.00")
    # the other way round (count first, then the receipt at the same instant): the book
    log = Log()
    log.products(K50)
    log.add("stock_counted", t(9), session_id="C1", blind=True, lines=[{"product": K50, "counted_ml": "0.00"}])
    log.add("stock_received", t(9), invoice_number="I0", supplier={}, lines=[received(K50, "V1")])
    (p,) = accountability(log.entries, START, END)["products"]
    assert p["beginning_basis"] == "book" and p["ml"]["beginning"] == D("10.00")


def test_variance_threshold_is_strict_and_an_argument_overrides_the_policy():
    log = Log()
    log.products(K50)
    log.add("policy_set", t(1), variance_threshold_percent="3.00")
    log.add("policy_set", t(5), recorded_at=t(20), variance_threshold_percent="1.00")  # recorded at the very end
    for i in range(10):
        log.add("stock_received", t(11), invoice_number=f"I{i}", supplier={}, lines=[received(K50, f"V{i}")])
    log.add("stock_counted", t(12), session_id="C1", blind=True, lines=[{"product": K50, "counted_ml": "99.00"}])
    a = accountability(log.entries, START, END)
    (p,) = a["products"]
    assert a["variance_threshold_percent"] == D("1.00")
    # 100 received, 99 counted: exactly -1.00 %, not above the 1.00 % threshold
    assert p["variance_percent"] == D("-1.00") and p["flagged"] is False
    assert a["total"]["variance_percent"] == D("-1.00") and a["total"]["flagged"] is False
    b = accountability(log.entries, START, END, variance_threshold=D("0.99"))
    assert b["variance_threshold_percent"] == D("0.99") and b["products"][0]["flagged"] is True
    assert b["total"]["flagged"] is True


def test_nothing_to_account_for_is_no_variance():
    """Stock found where none was on the book: a difference, but no base for a percentage."""
    log = Log()
    formless = {k: v for k, v in K50.items() if k != "form"}
    log.products(formless)
    log.add("stock_counted", t(12), session_id="C1", blind=True, lines=[{"product": formless, "counted_ml": "5.00"}])
    a = accountability(log.entries, START, END)
    (p,) = a["products"]
    assert p["form"] == ""
    assert p["ml"] == lines(ending="5.00", accounted_for="5.00", difference="5.00")
    assert p["variance_percent"] == D("0.00") and p["flagged"] is False
    assert a["total"]["variance_percent"] == D("0.00")


def test_a_kind_that_moves_stock_without_a_line_is_refused(monkeypatch):
    log = Log()
    log.products(K50)
    log.add("mystery_moved", t(12))

    def moves(e):
        if e["kind"] == "mystery_moved":
            yield "V1", K50["ndc_key"], D("-1.00")

    monkeypatch.setattr(audit, "movements", moves)
    with pytest.raises(ValueError, match="entry kind 'mystery_moved' moves stock but has no audit line"):
        accountability(log.entries, START, END)
    # outside the period it is not looked at
    accountability(log.entries, datetime(2026, 9, 13, tzinfo=UTC), END)


def test_audit_reads_the_store(clinic):
    """``audit`` is ``accountability`` over the registrant's stored entries, with its options."""
    from datetime import timedelta

    from ledger import services
    from ledger.domain.commands import ReceivedLineInput, ReceiveStock
    from tests.conftest import DEA2, KETAMINE_50

    now = datetime.now(UTC)
    services.receive_stock(clinic.ledger, clinic.nurse, ReceiveStock(
        clinic.supplier_id, "INV-M-1", now - timedelta(hours=1), (ReceivedLineInput(KETAMINE_50, 2, "KA1", "2028-06-30"),)))
    start, end = now - timedelta(hours=2), now
    a = audit.audit(clinic.ledger, clinic.dea, start, end, variance_threshold=D("-1"), series=True)
    (p,) = a["products"]
    # 2 vials x 10 mL received, nothing else: no difference, and 0.00 % is above a -1 % threshold
    assert p["ml"] == lines(receipts="20.00", to_account_for="20.00", ending="20.00", accounted_for="20.00")
    assert a["variance_threshold_percent"] == D("-1") and p["flagged"] is True
    assert [ml for _, ml in p["series"]] == [D("0.00"), D("20.00")]
    plain = audit.audit(clinic.ledger, clinic.dea, start, end)
    assert plain["variance_threshold_percent"] == D("1.00") and "series" not in plain["products"][0]
    assert audit.audit(clinic.ledger, DEA2, start, end)["products"] == []  # another registrant: nothing


def test_a_counted_beginning_adds_an_initial_inventory_taken_inside_the_period():
    """Stock counted before the start plus an initial inventory inside the period (a product's
    records begun again): both are under account."""
    log = Log()
    log.products(K50)
    log.add("stock_received", t(5), invoice_number="I0", supplier={}, lines=[received(K50, "V1")])
    count = log.add("stock_counted", t(6), session_id="C1", blind=True, lines=[{"product": K50, "counted_ml": "9.00"}])
    log.add("inventory_taken", t(12), inventory_type="initial", taken_at="opening_of_business",
            items=[item("V9", K50, "4.00")])
    (p,) = accountability(log.entries, START, END)["products"]
    # beginning 9 counted + 4 inventoried; ending the book 10 + 4 = 14; difference +1
    assert p["ml"] == lines(beginning="13.00", to_account_for="13.00", ending="14.00", accounted_for="14.00",
                            difference="1.00")
    assert p["beginning_basis"] == "counted" and p["beginning_source"] == log.source(count)


def test_a_line_of_a_product_never_added_does_not_hide_the_next():
    """A movement of a product the log never added is left out, and only that one."""
    log = Log()
    log.products(K50)
    log.add("stock_received", t(12), invoice_number="I1", supplier={},
            lines=[received(K10, "W1"), received(K50, "V1", "V2")])
    a = accountability(log.entries, START, END)
    assert [p["ndc_key"] for p in a["products"]] == [K50["ndc_key"]]
    assert a["products"][0]["ml"]["receipts"] == D("20.00")


def test_losses_already_counted_out_of_the_beginning_are_not_counted_twice():
    """Two counts before the start found 1 mL and then 3 mL missing (two discrepancies); the
    beginning rests on the second. Both losses adjusted in the period were already out of that
    count: neither is a loss of the period. A loss of a discrepancy raised in the period is."""
    log = Log()
    log.products(K50)
    log.add("stock_received", t(2), invoice_number="I0", supplier={}, lines=[received(K50, "V1", "V2", "V3")])
    log.add("stock_counted", t(3), session_id="C1", blind=True,
            lines=[{"product": K50, "counted_ml": "29.00", "discrepancy_id": "D1"}])
    log.add("stock_counted", t(4), session_id="C2", blind=True,
            lines=[{"product": K50, "counted_ml": "27.00", "discrepancy_id": "D2"}])
    log.add("loss_adjusted", t(11), discrepancy_id="D1", category="theft_or_loss",
            adjustments=[item("V1", K50, "1.00")])
    log.add("loss_adjusted", t(12), discrepancy_id="D2", category="theft_or_loss",
            adjustments=[item("V2", K50, "3.00")])
    (p,) = accountability(log.entries, START, END)["products"]
    # beginning counted 27; both losses listed as adjustments but already out of the count, so
    # not summed: adjustments 0; ending the book 30 - 4 = 26; accounted for 26; difference -1
    # before and after adjustments (the two counts overlap by 1 mL)
    assert p["ml"] == lines(beginning="27.00", to_account_for="27.00", ending="26.00", accounted_for="26.00",
                            difference="-1.00", difference_after_adjustments="-1.00")
    assert [(x["discrepancy_id"], x["ml"], x["in_counted_beginning"]) for x in p["adjustment_entries"]] == [
        ("D1", D("1.00"), True), ("D2", D("3.00"), True)]
    log.add("stock_counted", t(13), session_id="C3", blind=True,
            lines=[{"product": K50, "counted_ml": "25.00", "discrepancy_id": "D3"}])
    log.add("loss_adjusted", t(14), discrepancy_id="D3", category="theft_or_loss",
            adjustments=[item("V3", K50, "1.00")])
    log.add("stock_counted", t(15), session_id="C4", blind=True, lines=[{"product": K50, "counted_ml": "24.00"}])
    (p,) = accountability(log.entries, START, END)["products"]
    # D3 was raised inside the period (after the beginning's count): its 1 mL is an adjustment of
    # the period; the period ends at C4 (counted 24): accounted for 24, difference 24 - 27 = -3
    # before adjustments, -3 + 1 = -2 after
    assert p["ml"] == lines(beginning="27.00", to_account_for="27.00", ending="24.00", accounted_for="24.00",
                            difference="-3.00", adjustments="1.00", difference_after_adjustments="-2.00")
    assert [(x["discrepancy_id"], x["in_counted_beginning"]) for x in p["adjustment_entries"]] == [
        ("D1", True), ("D2", True), ("D3", False)]
