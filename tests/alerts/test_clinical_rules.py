"""Rules over the clinic-operations entries, pure, on entries in their canonical shape: each
fires exactly past its threshold with the expected evidence; the statistics adapters read
administrations and their witnessed waste."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.domain import alerts as rules
from ledger.integrity.canonical import format_time
from ledger.services.alerts import clinical_draws, clinical_wastes, evaluate

TZ = "America/Chicago"
T0 = datetime(2026, 11, 2, 16, tzinfo=UTC)  # Monday 10:00 in Austin
PRODUCT = {"ndc": "67457-0001-10", "ndc_key": "67457000110", "name": "Ketamine", "drug_code": "7285",
           "schedule": "III", "form": "injection", "strength_mg_per_ml": "50.00", "container_ml": "10.00"}
HOURS = {"mon": ["08:00", "18:00"], "tue": ["08:00", "18:00"], "wed": ["08:00", "18:00"],
         "thu": ["08:00", "18:00"], "fri": ["08:00", "18:00"]}


def sig(staff, meaning="performed"):
    return {"staff_id": staff, "printed_name": staff, "meaning": meaning, "signed_at": format_time(T0),
            "auth_method": "password"}


def e(seq, kind, at, signatures=(), **fields):
    return {"registrant": "AB1234563", "seq": seq, "kind": kind, "occurred_at": format_time(at),
            "recorded_at": format_time(at), "signatures": list(signatures), **fields}


def admin(seq, aid, at, *, drawn="0.70", given="0.70", ordered="35.00", mg_given="35.00", nurse="S4"):
    return e(seq, "dose_administered", at, [sig(nurse)], administration_id=aid, patient_id="P7",
             patient_commitment="ab" * 32, prescriber_dea_number="AB1234563", weight_kg="70.00",
             ordered_mg_per_kg="0.50", ordered_mg=ordered,
             draws=[{"vial_id": "V1", "product": PRODUCT, "lot": "L", "expiry": "2028-01-31", "ml": drawn,
                     "opened_vial": False, "beyond_use_date": "2026-11-30"}],
             ml_drawn=drawn, ml_given=given, mg_given=mg_given, started_at=format_time(at - timedelta(minutes=40)),
             ended_at=format_time(at))


def waste(seq, aid, aseq, at, ml, nurse="S4", wit="S5"):
    return e(seq, "dose_wasted", at, [sig(nurse), sig(wit, "witnessed")], administration_id=aid,
             administration_seq=aseq, product=PRODUCT, ml=ml, mg=str((Decimal(ml) * 50).quantize(Decimal("0.01"))),
             method="sink with witness")


def test_dose_above_order_strictly():
    assert rules.dose_above_order(admin(10, "A10", T0, mg_given="35.00")) is None
    c = rules.dose_above_order(admin(10, "A10", T0, mg_given="35.50", given="0.71", drawn="0.71"))
    assert (c.rule, c.subjects, c.evidence_seqs) == ("dose_above_order", ("S4",), (10,))
    assert c.figures == {"ordered_mg": "35.00", "mg_given": "35.50", "excess_mg": "0.50", "allowance_mg": "0.25",
                         "patient_id": "P7"}


def test_dose_above_order_allows_half_a_graduation():
    """Issue 19: a dose drawn to the nearest 0.01 mL may exceed the order by half a graduation
    (0.005 mL, here 0.25 mg at 50 mg/mL) without anyone giving more than ordered."""
    assert PRODUCT["strength_mg_per_ml"] == "50.00"
    assert rules.dose_above_order(admin(10, "A10", T0, mg_given="35.25")) is None
    c = rules.dose_above_order(admin(10, "A10", T0, mg_given="35.26"))
    assert c is not None and c.parameters == {"measuring_resolution_ml": "0.005"}


def test_unreconciled_after_policy_time():
    a = admin(10, "A10", T0, drawn="1.00", given="0.70")
    pol = rules.AlertPolicy()
    assert rules.unreconciled([a], T0 + timedelta(hours=2), pol) == []  # exactly 2 h: not yet
    [c] = rules.unreconciled([a], T0 + timedelta(hours=2, seconds=1), pol)
    assert c.figures["ml_unaccounted"] == "0.30" and c.evidence_seqs == (10,) and c.subjects == ("S4",)
    w = waste(11, "A10", 10, T0 + timedelta(minutes=5), "0.30")
    assert rules.unreconciled([a, w], T0 + timedelta(hours=5), pol) == []
    partly = waste(11, "A10", 10, T0 + timedelta(minutes=5), "0.10")
    [c] = rules.unreconciled([a, partly], T0 + timedelta(hours=5), pol)
    assert c.figures["ml_unaccounted"] == "0.20" and c.evidence_seqs == (10, 11)


def test_theft_or_loss_report_carries_its_deadlines():
    r = e(20, "theft_or_loss_reported", T0, [sig("S9")], registrant_copy={}, discovered_at=format_time(T0),
          loss_type="employee pilferage", police_notified=False, police_department=None, police_report_number=None,
          losses_past_24_months=0, purchase_value_usd="12.00",
          lost=[{"vial_id": "V1", "product": PRODUCT, "ml": "2.00", "whole_vial": False}], covers_seqs=[15],
          notice_due_at="2026-11-04T05:59:59.999999Z", form_106_due_at="2026-12-18T05:59:59.999999Z")
    [c] = rules.per_entry_rules(r, rules.AlertPolicy(), TZ)
    assert (c.rule, c.severity, c.evidence_seqs) == ("theft_or_loss", "critical", (20, 15))
    assert c.deadlines == {"dea_notice": "2026-11-04T05:59:59.999999Z", "form_106": "2026-12-18T05:59:59.999999Z"}


def test_discrepancy_resolved_as_loss_is_a_suspected_significant_loss():
    friday = datetime(2026, 11, 27, 20, tzinfo=UTC)  # Friday after Thanksgiving, 14:00 local
    d = e(30, "discrepancy_resolved", friday, [sig("S9", "approved")], discrepancy_id="D25-0", count_seq=25,
          category="theft_or_loss", explanation="vial missing after count", fixed_by_seq=None)
    [c] = rules.per_entry_rules(d, rules.AlertPolicy(), TZ)
    assert (c.rule, c.evidence_seqs) == ("suspected_significant_loss", (25, 30))
    assert c.deadlines["dea_notice"] == "2026-12-01T05:59:59.999999Z"  # Monday 30 Nov, end of day CST
    other = {**d, "category": "documentation_error"}
    assert rules.per_entry_rules(other, rules.AlertPolicy(), TZ) == []


def test_quarantine():
    q = e(40, "stock_quarantined", T0, [sig("S3")], vial_ids=["V1", "V2"], reason="suspect DSCSA statement")
    [c] = rules.per_entry_rules(q, rules.AlertPolicy(), TZ)
    assert c.rule == "stock_quarantined" and c.figures["vial_ids"] == "V1 V2"


def vial(vid, state="open", expiry="2028-01-31", bud=None, ml="5.00", lot="L1"):
    return {"registrant": "AB1234563", "vial_id": vid, "ndc_key": "67457000110", "lot": lot, "expiry": expiry,
            "state": state, "ml_left": Decimal(ml), "added_seq": 5, "last_seq": 9, "beyond_use_date": bud,
            "opened_at": None, "opened_by": None}


def test_expired_lot_and_beyond_use():
    now = datetime(2026, 11, 2, 18, tzinfo=UTC)  # 2 Nov local
    vs = [vial("V1", "sealed", expiry="2026-11-01", lot="OLD"), vial("V2", "sealed", expiry="2026-11-01", lot="OLD"),
          vial("V3", "sealed", expiry="2026-11-02"),  # expires today: still usable
          vial("V4", bud="2026-11-01"), vial("V5", bud="2026-11-02"),
          vial("V6", "destroyed", expiry="2026-10-01"), vial("V7", "empty", bud="2026-10-01", ml="0.00")]
    found = rules.expired_stock(vs, now, TZ)
    assert [(c.rule, c.alert_key) for c in found] == [
        ("past_beyond_use_date", "past_beyond_use:V4"), ("expired_lot_in_stock", "expired_lot:67457000110:OLD")]
    assert found[1].figures["vials"] == "2" and found[1].figures["ml_on_hand"] == "10.00"


def test_count_overdue_daily_opening():
    pol = rules.policy_from_entries([e(3, "policy_set", T0, clinic_hours=HOURS, count_schedule="daily_opening",
                                       late_entry_limit_hours=24)])
    at = lambda h, m=0: datetime(2026, 11, 2, h, m, tzinfo=UTC)  # noqa: E731  (UTC; 08:00 local = 14:00 UTC)
    stock = [e(5, "stock_received", at(1) - timedelta(days=3), [sig("S4")], lines=[])]
    assert rules.count_overdue(stock, at(16), TZ, pol) is None  # 10:00 local: due exactly now, not yet overdue
    c = rules.count_overdue(stock, at(16, 1), TZ, pol)
    assert c.alert_key == "count_overdue:2026-11-02" and c.deadlines == {"count": "2026-11-02T16:00:00.000000Z"}
    assert "16:00" not in c.summary and "10:00 CST" in c.summary  # local time, to the minute
    counted = e(9, "stock_counted", at(14, 30), [sig("S4", "counted")], session_id="C1", blind=True, lines=[])
    assert rules.count_overdue([*stock, counted], at(20), TZ, pol) is None
    sunday = datetime(2026, 11, 8, 20, tzinfo=UTC)
    assert rules.count_overdue(stock, sunday, TZ, pol) is None  # closed
    assert rules.count_overdue(stock, at(20), TZ, rules.AlertPolicy()) is None  # no clinic hours: silent


def test_count_overdue_waits_for_the_first_stock():
    """Issue 20: nothing is due before the registrant has stock, nor on the day stock first
    arrives after the count was due."""
    pol = rules.policy_from_entries([e(3, "policy_set", T0, clinic_hours=HOURS, count_schedule="daily_opening",
                                       late_entry_limit_hours=24)])
    at = lambda h, m=0: datetime(2026, 11, 2, h, m, tzinfo=UTC)  # noqa: E731
    assert rules.count_overdue([], at(20), TZ, pol) is None  # no stock, ever
    empty_inventory = e(4, "inventory_taken", at(1) - timedelta(days=2), [sig("S4")], items=[])
    assert rules.count_overdue([empty_inventory], at(20), TZ, pol) is None  # an inventory of nothing is no stock
    arrives_late = e(5, "stock_received", at(17), [sig("S4")], lines=[])  # 11:00 local, after the 10:00 due time
    assert rules.count_overdue([arrives_late], at(20), TZ, pol) is None
    assert rules.count_overdue([arrives_late], at(20) + timedelta(days=1), TZ, pol) is not None  # the next day, due


def test_an_inventory_is_a_count():
    """Issue 20: an inventory counts every container, so it satisfies the count schedule (the
    alert fired the day after an inventory)."""
    pol = rules.policy_from_entries([e(3, "policy_set", T0, clinic_hours=HOURS, count_schedule="daily_close",
                                       late_entry_limit_hours=24)])
    monday_close = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)  # 17:30 local Monday
    stock = e(5, "stock_received", monday_close - timedelta(days=7), [sig("S4")], lines=[])
    inventory = e(9, "inventory_taken", monday_close, [sig("S4"), sig("S5", "witnessed")], items=[{"vial_id": "V1"}],
                  inventory_type="biennial", taken_at="close_of_business")
    tuesday = datetime(2026, 11, 3, 16, tzinfo=UTC)
    assert rules.count_overdue([stock], tuesday, TZ, pol) is not None  # no close count on Monday
    assert rules.count_overdue([stock, inventory], tuesday, TZ, pol) is None
    weekly = rules.policy_from_entries([e(3, "policy_set", T0, clinic_hours=HOURS, count_schedule="weekly",
                                          late_entry_limit_hours=24)])
    assert rules.count_overdue([stock, inventory], tuesday, TZ, weekly) is None
    assert rules.count_overdue([stock], tuesday, TZ, weekly) is not None


def test_empty_clinic_hours_means_not_set():
    pol = rules.policy_from_entries([e(3, "policy_set", T0, clinic_hours={}, count_schedule="daily_opening")])
    assert pol.clinic_hours is None
    assert rules.outside_clinic_hours(e(9, "stock_received", T0 - timedelta(hours=10)), pol, TZ) is None


def test_discrepancy_view_follows_the_discrepancy():
    line = {"product": PRODUCT, "sealed_containers": 1, "open_containers": 1, "open_ml": "4.00", "counted_ml": "14.00",
            "expected_sealed_containers": 1, "expected_open_containers": 1, "expected_ml": "14.50",
            "difference_ml": "-0.50", "discrepancy_id": "D25-0"}
    count = e(25, "stock_counted", T0, [sig("S4", "counted"), sig("S5", "counted")], session_id="C1", blind=True,
              lines=[line])
    [v] = rules.discrepancy_alerts([count])
    assert (v["alert_id"], v["status"], v["severity"], v["subjects"]) == ("D25-0", "open", "high", ["S4", "S5"])
    res = e(26, "discrepancy_resolved", T0, [sig("S9", "approved")], discrepancy_id="D25-0", count_seq=25,
            category="documentation_error", explanation="missing waste entry added", fixed_by_seq=24)
    [v] = rules.discrepancy_alerts([count, res])
    assert (v["status"], v["resolved_by"], v["evidence_seqs"]) == ("resolved", "S9", [25, 26])


def test_adapters_read_administrations_and_witnessed_waste():
    a = admin(10, "A10", T0, drawn="1.00", given="0.70")
    w = waste(11, "A10", 10, T0 + timedelta(minutes=3), "0.30")
    open_one = admin(12, "A12", T0, drawn="1.00", given="0.70")  # unreconciled: not in the statistics
    [ws] = clinical_wastes([a, w, open_one])
    assert (ws.seq, ws.staff_id, ws.witness_id, ws.drawn_mg, ws.wasted_mg, ws.waste_seqs) == (
        10, "S4", "S5", Decimal("50.0000"), Decimal("15.00"), (11,))
    assert ws.share == Decimal("0.3")
    assert [(d.seq, d.mg) for d in clinical_draws([a, w, open_one])] == [(10, Decimal("50.0000")), (12, Decimal("50.0000"))]


@pytest.mark.parametrize("seed", [5, 11])
def test_evaluate_on_a_seeded_clinic_flags_the_pair_that_always_witnesses_each_other(seed):
    import random

    rnd = random.Random(seed)
    staff = ["S2", "S3", "S4", "S5", "S6"]
    entries, seq = [], 100
    for day in range(30):
        at0 = datetime(2026, 9, 1, 15, tzinfo=UTC) + timedelta(days=day)
        for k in range(6):
            nurse = rnd.choice(staff)
            if nurse in ("S2", "S3"):
                wit = "S3" if nurse == "S2" else "S2"  # the pair
            else:
                wit = rnd.choice([s for s in staff if s != nurse])
            at = at0 + timedelta(minutes=50 * k)
            entries.append(admin(seq, f"A{seq}", at, drawn="1.00", given="0.80", nurse=nurse))
            entries.append(waste(seq + 1, f"A{seq}", seq, at + timedelta(minutes=2), "0.20", nurse=nurse, wit=wit))
            seq += 2
    found = evaluate(entries, datetime(2026, 10, 5, tzinfo=UTC), TZ)
    pairs = [c for c in found if c.rule == "witness_pair"]
    assert [c.subjects for c in pairs] == [("S2", "S3")]
    assert not [c for c in found if c.rule.startswith("waste_trend")]  # everyone wastes the same share


def _short_count(seq, at, diff, disc):
    line = {"product": PRODUCT, "sealed_containers": 1, "open_containers": 1, "open_ml": "4.00", "counted_ml": "14.00",
            "expected_sealed_containers": 1, "expected_open_containers": 1, "expected_ml": "14.50",
            "difference_ml": diff, "discrepancy_id": disc}
    return e(seq, "stock_counted", at, [sig("S4", "counted"), sig("S5", "counted")], session_id=f"C{seq}",
             blind=True, lines=[line])


def test_loss_pattern_three_shortages_in_90_days():
    now = datetime(2026, 11, 20, tzinfo=UTC)
    old = _short_count(5, now - timedelta(days=91), "-0.20", "D5-0")  # outside the window
    over = _short_count(6, now - timedelta(days=30), "0.10", "D6-0")  # an overage is not a loss
    two = [_short_count(7, now - timedelta(days=20), "-0.20", "D7-0"), _short_count(8, now - timedelta(days=2), "-0.10", "D8-0")]
    pol = rules.AlertPolicy()
    assert rules.loss_pattern([old, over, *two], now, pol) is None
    third = _short_count(9, now - timedelta(days=1), "-0.30", "D9-0")
    c = rules.loss_pattern([old, over, *two, third], now, pol)
    assert (c.rule, c.severity, c.evidence_seqs) == ("loss_pattern", "high", (7, 8, 9))
    assert c.figures == {"shortages": "3", "total_ml": "-0.60", "discrepancies": "D7-0 D8-0 D9-0",
                         "counted_by": "S4:3 S5:3"}


def test_outside_hours_one_alert_per_person_and_finished_day():
    pol = rules.policy_from_entries([e(3, "policy_set", T0, clinic_hours=HOURS, count_schedule="daily_opening")])
    friday = datetime(2026, 10, 9, 23, 10, tzinfo=UTC)  # 18:10 local, after the 18:00 close
    es = [admin(10, "A10", friday, nurse="S4"), waste(11, "A10", 10, friday + timedelta(minutes=40), "0.00"),
          admin(12, "A12", friday - timedelta(hours=3), nurse="S4"),  # 15:10: inside hours
          admin(13, "A13", friday + timedelta(minutes=5), nurse="S6"),
          e(14, "stock_counted", friday + timedelta(hours=1), [sig("S4", "counted")], session_id="C", blind=True, lines=[]),
          e(15, "patient_registered", friday - timedelta(hours=11), [sig("S4")], patient_id="P9", commitment="00")]
    found = rules.outside_hours_by_day(es, friday + timedelta(days=1), pol, TZ)
    assert [(c.subjects, c.evidence_seqs) for c in found] == [(("S4",), (10, 11)), (("S6",), (13,))]
    assert found[0].figures["local_times"] == "18:10 18:50" and found[0].alert_key == "outside_hours:S4:2026-10-09"
    assert rules.outside_hours_by_day(es, friday + timedelta(hours=1), pol, TZ) == []  # the day is not over
