"""Hand-made entries in their canonical shape (the worked example of docs/compliance.md), for report tests."""

from __future__ import annotations

from reports.source import LedgerState, Snapshot

K50 = {"ndc": "67457-0001-10", "ndc_key": "67457000110", "name": "Ketamine HCl injection 50 mg/mL",
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


