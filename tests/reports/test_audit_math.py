"""The accountability audit on DOMAIN.md's worked example, computed by hand, on entries built
as issue 3 records them (pure: no database)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from csledger.reports import audit
from csledger.reports.fmt import Period
from csledger.reports.source import LedgerState, Snapshot

K50 = {"ndc": "42023-0113-10", "ndc_key": "42023011310", "name": "Ketamine HCl injection 50 mg/mL",
       "drug_code": "7285", "schedule": "III", "form": "injection", "strength_mg_per_ml": "50.00",
       "container_ml": "10.00"}


def entry(seq: int, kind: str, at: str, **fields) -> dict:
    return {"registrant": "AB1234563", "seq": seq, "kind": kind, "occurred_at": at, "recorded_at": at,
            "signatures": [], **fields}


def draws(*mls: str) -> list[dict]:
    return [{"vial_id": f"V{i}", "product": K50, "ml": ml} for i, ml in enumerate(mls)]


def worked_example(count_day: str = "2026-09-30") -> Snapshot:
    items = [{"vial_id": f"V1-{i}", "product": K50, "lot": "KA1", "expiry": "2028-01-01", "sealed": True,
              "ml": "10.00", "estimated": False} for i in range(4)]
    items.append({"vial_id": "V1-5", "product": K50, "lot": "KA1", "expiry": "2028-01-01", "sealed": False,
                  "ml": "6.00", "estimated": True})
    entries = [
        entry(0, "registrant_registered", "2026-08-01T12:00:00.000000Z", dea_number="AB1234563", name="Calm",
              address={}, time_zone="America/Chicago", log_id="x"),
        entry(1, "product_added", "2026-08-01T12:00:00.000000Z", product=K50),
        entry(2, "inventory_taken", "2026-09-01T14:00:00.000000Z", inventory_type="initial",
              taken_at="opening_of_business", items=items),
        entry(3, "stock_received", "2026-09-02T15:00:00.000000Z", invoice_number="I1", supplier={},
              lines=[{"product": K50, "containers": 10, "lot": "KA2", "expiry": "2028-01-01", "vial_ids": []}]),
        # two infusions: 60 mL drawn, 54 given, 6 wasted; 55 mL drawn, 54 given, 1 wasted
        entry(4, "dose_administered", "2026-09-10T15:00:00.000000Z", draws=draws("10.00", "10.00", "10.00", "10.00",
              "10.00", "10.00"), ml_drawn="60.00", ml_given="54.00"),
        entry(5, "dose_wasted", "2026-09-10T16:00:00.000000Z", product=K50, ml="6.00", mg="300.00"),
        entry(6, "dose_administered", "2026-09-20T15:00:00.000000Z", draws=draws("10.00", "10.00", "10.00", "10.00",
              "10.00", "5.00"), ml_drawn="55.00", ml_given="54.00"),
        entry(7, "dose_wasted", "2026-09-20T16:00:00.000000Z", product=K50, ml="1.00", mg="50.00"),
        # a count at the end: 3 sealed vials, nothing open
        entry(8, "stock_counted", f"{count_day}T22:00:00.000000Z", session_id="C1", blind=True,
              lines=[{"product": K50, "counted_ml": "30.00"}]),
    ]
    return Snapshot(LedgerState("AB1234563", len(entries), "00" * 32), entries)


def test_worked_example_per_ndc_in_mg_ml_and_containers():
    f = audit.compute(worked_example(), Period(date(2026, 9, 1), date(2026, 9, 30), "America/Chicago"))
    (row,) = f["products"]
    mg = {k: v["mg"] for k, v in row["lines"].items()}
    assert mg["beginning"] == "2300.00" and mg["receipts"] == "5000.00" and mg["to_account_for"] == "7300.00"
    assert mg["administered"] == "5400.00" and mg["wasted"] == "350.00" and mg["ending"] == "1500.00"
    assert mg["accounted_for"] == "7250.00" and mg["difference"] == "-50.00"
    assert row["lines"]["difference"]["ml"] == "-1.00" and row["lines"]["difference"]["containers"] == "-0.10"
    assert row["lines"]["ending"]["containers"] == "3.00" and row["ending_source"] == "counted"
    assert row["variance_pct"] == "-0.68" and row["flagged"] is False  # under the 1.00 % default
    assert f["total"]["difference_mg"] == "-50.00" and f["total"]["variance_pct"] == "-0.68"
    assert f["beginning_source"]["what"] == "initial inventory taken at opening of business"
    assert f["ending_source"]["what"] == "count"


def test_without_a_count_on_the_last_day_the_ending_is_the_book():
    f = audit.compute(worked_example(count_day="2026-10-05"),
                      Period(date(2026, 9, 1), date(2026, 9, 30), "America/Chicago"))
    (row,) = f["products"]
    # book = 146 mL - 115 mL drawn = 31 mL; accounted = 108 + 7 + 31 = 146: nothing unexplained
    assert row["ending_source"] == "book" and row["lines"]["ending"]["ml"] == "31.00"
    assert row["lines"]["difference"]["mg"] == "0.00" and row["lines"]["unreconciled"]["ml"] == "0.00"


def test_policy_threshold_flags_the_line():
    snap = worked_example()
    snap.entries.insert(2, entry(9, "policy_set", "2026-08-02T12:00:00.000000Z",
                                 variance_threshold_percent="0.50"))
    f = audit.compute(snap, Period(date(2026, 9, 1), date(2026, 9, 30), "America/Chicago"))
    assert f["threshold_pct"] == "0.50" and f["products"][0]["flagged"] is True and f["total"]["flagged"] is True
    assert Decimal(f["products"][0]["variance_pct"]) == Decimal("-0.68")
