"""Each rule, pure: it fires exactly past its threshold (and not at or just below it), with the
expected evidence and figures. Statistical rules run on their own seeded data sets."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.domain import alerts as rules
from ledger.integrity.canonical import format_time

TZ = "America/Chicago"
POLICY = rules.AlertPolicy()


def entry(seq: int, kind: str, occurred: datetime, recorded: datetime | None = None, **fields) -> dict:
    return {"registrant": "AB1234563", "seq": seq, "kind": kind, "occurred_at": format_time(occurred),
            "recorded_at": format_time(recorded or occurred),
            "signatures": [{"staff_id": "S7", "printed_name": "Nora Nurse", "meaning": "received"}], **fields}


# --- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("discovered, due", [
    (date(2026, 11, 25), date(2026, 11, 27)),  # Wednesday; Thursday is Thanksgiving
    (date(2026, 11, 27), date(2026, 11, 30)),  # Friday -> Monday
    (date(2027, 12, 23), date(2027, 12, 27)),  # Christmas (Saturday) observed Friday 24th
    (date(2026, 11, 28), date(2026, 11, 30)),  # discovered on a Saturday
    (date(2026, 11, 30), date(2026, 12, 1)),
])
def test_one_business_day(discovered, due):
    assert rules.business_days_after(discovered, 1) == due


def test_loss_deadlines_end_of_local_day():
    # Discovered Wednesday 25 Nov 2026 at 16:00 in Austin (22:00 UTC).
    d = rules.loss_deadlines("2026-11-25T22:00:00.000000Z", TZ)
    assert d == {"dea_notice": "2026-11-28T05:59:59.999999Z",  # Fri 27 Nov 23:59:59.999999 CST
                 "form_106": "2027-01-10T05:59:59.999999Z"}  # 45 days: Sat 9 Jan 2027, end of day


# --- late entries and clinic hours ----------------------------------------------------------


def test_late_entry_threshold():
    t = datetime(2026, 11, 2, 15, tzinfo=UTC)
    assert rules.late_entry(entry(5, "stock_received", t - timedelta(hours=24), t), POLICY) is None
    c = rules.late_entry(entry(5, "stock_received", t - timedelta(hours=30), t, late_reason="downtime"), POLICY)
    assert c.evidence_seqs == (5,) and c.figures["hours_late"] == "30.00" and c.subjects == ("S7",)
    assert rules.late_entry(entry(6, "staff_enrolled", t - timedelta(days=9), t), POLICY) is None


HOURS = rules.AlertPolicy(clinic_hours={d: ("07:00", "19:00") for d in range(5)} | {5: ("08:00", "13:00")})


@pytest.mark.parametrize("local, fires", [
    ("2026-11-02T06:59", True), ("2026-11-02T07:00", False), ("2026-11-02T18:59", False),
    ("2026-11-02T19:00", True), ("2026-11-07T12:59", False), ("2026-11-07T13:00", True),
    ("2026-11-08T10:00", True),  # Sunday: closed
])
def test_outside_clinic_hours(local, fires):
    import zoneinfo

    t = datetime.fromisoformat(local).replace(tzinfo=zoneinfo.ZoneInfo(TZ))
    c = rules.outside_clinic_hours(entry(9, "stock_received", t), HOURS, TZ)
    assert (c is not None) is fires
    if fires:
        assert c.evidence_seqs == (9,) and c.figures["local_time"] == local


def test_outside_hours_silent_without_clinic_hours():
    t = datetime(2026, 11, 8, 8, tzinfo=UTC)  # 02:00 Sunday in Austin
    assert rules.outside_clinic_hours(entry(9, "stock_received", t), POLICY, TZ) is None


# --- biennial inventory and DEA registration --------------------------------------------------


def test_biennial_inventory_due_and_overdue():
    inv = [entry(3, "inventory_taken", datetime(2024, 12, 1, 14, tzinfo=UTC))]  # 08:00 local
    at = lambda d: datetime(d.year, d.month, d.day, 18, tzinfo=UTC)  # noqa: E731 - noon local
    assert rules.biennial_inventory(inv, at(date(2026, 10, 31)), TZ, POLICY) is None  # 31 days left
    c = rules.biennial_inventory(inv, at(date(2026, 11, 1)), TZ, POLICY)  # 30 days left
    assert (c.severity, c.alert_key, c.figures["days_left"], c.figures["due"]) == (
        "medium", "biennial_inventory:3:due_soon", "30", "2026-12-01")
    assert c.deadlines == {"biennial_inventory": "2026-12-02T05:59:59.999999Z"}
    assert rules.biennial_inventory(inv, at(date(2026, 12, 1)), TZ, POLICY).severity == "medium"
    late = rules.biennial_inventory(inv, at(date(2026, 12, 2)), TZ, POLICY)
    assert (late.severity, late.alert_key) == ("high", "biennial_inventory:3:overdue")


def test_registration_expiry():
    es = [entry(4, "registration_expiry_recorded", datetime(2026, 1, 5, 15, tzinfo=UTC), expires_on="2027-01-31")]
    noon = lambda y, m, d: datetime(y, m, d, 18, tzinfo=UTC)  # noqa: E731
    assert rules.registration_expiry(es, noon(2026, 12, 1), TZ, POLICY) is None  # 61 days
    c = rules.registration_expiry(es, noon(2026, 12, 2), TZ, POLICY)  # 60 days
    assert (c.severity, c.figures["days_left"]) == ("medium", "60")
    gone = rules.registration_expiry(es, noon(2027, 2, 1), TZ, POLICY)
    assert (gone.severity, gone.rule) == ("critical", "dea_registration_expiry")


# --- waste trend (EWMA) ---------------------------------------------------------------------------


NOW = datetime(2026, 11, 20, 20, tzinfo=UTC)


def _waste(seq, staff, at, share, drawn=Decimal("35.00")):
    return rules.Waste(seq=seq, staff_id=staff, witness_id=None, at=at, drawn_mg=drawn,
                       wasted_mg=(drawn * share).quantize(Decimal("0.01")))


def _flat_clinic(n=40, share=Decimal("0.10")):
    # Others' history: constant share, so the floor sd (0.02) sets the limit.
    return [_waste(1000 + i, f"S{i % 4}", NOW - timedelta(days=60 - i), share) for i in range(n)]


def _threshold() -> Decimal:
    lam, n = Decimal("0.2"), 5
    decay = (1 - lam) ** n
    limit = Decimal("0.10") + 3 * Decimal("0.02") * (lam / (2 - lam) * (1 - (1 - lam) ** (2 * n))).sqrt()
    return (limit - Decimal("0.10") * decay) / (1 - decay)  # the constant share x whose EWMA hits it


@pytest.mark.parametrize("delta, fires", [(Decimal("0.002"), True), (Decimal("-0.002"), False)])
def test_waste_share_ewma_fires_just_above_the_clinic_limit(delta, fires):
    x = _threshold() + delta  # ~0.1281 +/- 0.002
    drawn = Decimal("1000.00")  # large dose, so the 2-place mg rounding does not move the share
    recent = [_waste(2000 + i, "S9", NOW - timedelta(days=5 - i), x, drawn) for i in range(5)]
    found = rules.waste_trend(_flat_clinic() + recent, NOW, POLICY, "share")
    assert bool(found) is fires
    if fires:
        [c] = found
        assert c.subjects == ("S9",) and c.severity == "medium" and c.figures["exceeded"] == "clinic"
        assert c.evidence_seqs == (2000, 2001, 2002, 2003, 2004)
        assert c.figures["clinic_mean"] == "0.1000" and c.figures["clinic_sd"] == "0.0200"
        assert c.figures["own_baseline_n"] == "0"


def test_waste_trend_needs_min_recent():
    recent = [_waste(2000 + i, "S9", NOW - timedelta(days=5 - i), Decimal("0.5")) for i in range(4)]
    assert rules.waste_trend(_flat_clinic() + recent, NOW, POLICY, "share") == []


def _seeded(seed: int, diverter: str | None) -> list[rules.Waste]:
    rnd = random.Random(seed)
    out, seq = [], 0
    for day in range(120, 0, -1):
        for staff in ("S2", "S3", "S4", "S5", "S6"):
            for _ in range(rnd.randint(0, 3)):
                seq += 1
                share = Decimal(rnd.randint(4, 16)) / 100
                at = NOW - timedelta(days=day, hours=rnd.randint(0, 8))
                if staff == diverter and day <= 28:
                    share += Decimal("0.15")
                out.append(_waste(seq, staff, at, share, Decimal(rnd.choice([20, 35, 45])) * 1))
    return out


@pytest.mark.parametrize("seed", [3, 17, 2024])
def test_seeded_clinic_flags_only_the_diverter(seed):
    found = rules.waste_trend(_seeded(seed, "S4"), NOW, POLICY, "share")
    assert [c.subjects for c in found] == [("S4",)]
    assert found[0].severity == "high" and found[0].figures["exceeded"] == "clinic,own"


@pytest.mark.parametrize("seed", [3, 17, 2024, 99])
def test_seeded_honest_clinic_raises_nothing(seed):
    wastes = _seeded(seed, None)
    assert rules.waste_trend(wastes, NOW, POLICY, "share") == []
    assert rules.waste_trend(wastes, NOW, POLICY, "mg") == []


# --- witness pairs ----------------------------------------------------------------------------------


def _pair_data(by_b: int):
    """A wastes 10 times on days A, B, C and D all worked; ``by_b`` of them witnessed by B."""
    presence, wastes = {}, []
    for i in range(10):
        at = datetime(2026, 10, 1 + i, 18, tzinfo=UTC)
        presence[at.date()] = {"A", "B", "C", "D"}
        wastes.append(rules.Waste(100 + i, "A", "B" if i < by_b else "C", at, Decimal("35.00"), Decimal("5.00"),
                                  waste_seqs=(200 + i,)))
    return wastes, presence


def test_witness_pair_fires_at_9_of_10_not_8():
    # Expected B-witnessed = 10 x 1/3 = 3.33; z(9) = 3.104 >= 3, z(8) = 2.56 < 3.
    w, p = _pair_data(9)
    [c] = rules.witness_pairs(w, p, TZ, POLICY)
    assert c.subjects == ("A", "B")
    assert c.figures == {"observed": "9", "expected": "3.3333", "z": "3.1038", "days_both_worked": "10"}
    assert c.evidence_seqs[:2] == (100, 200)
    w, p = _pair_data(8)
    assert rules.witness_pairs(w, p, TZ, POLICY) == []


def test_two_person_days_explain_the_pair():
    w, p = _pair_data(10)
    for d in p:
        p[d] = {"A", "B"}  # only two worked: B is the only possible witness
    assert rules.witness_pairs(w, p, TZ, POLICY) == []


# --- last hour of the working day ---------------------------------------------------------------


def _last_hour_data(late_count: int):
    acts, ends = [], {}
    for i in range(12):
        day = datetime(2026, 10, 1 + i, 23, tzinfo=UTC)  # 18:00 local end of day
        for s in ("A", "B", "C"):
            ends[(s, (day - timedelta(hours=5)).date())] = day
        # B and C waste mid-day; A late in the day for the first ``late_count`` days.
        acts.append(rules.Activity(10 + i, "A", day - timedelta(minutes=30 if i < late_count else 240), Decimal("5")))
        acts.append(rules.Activity(100 + i, "B", day - timedelta(minutes=240), Decimal("5")))
        acts.append(rules.Activity(200 + i, "C", day - timedelta(minutes=200), Decimal("5")))
    return acts, ends


def test_last_hour_waste():
    acts, ends = _last_hour_data(6)
    [c] = rules.last_hour(acts, ends, TZ, POLICY, "waste")
    assert c.subjects == ("A",) and c.evidence_seqs == (10, 11, 12, 13, 14, 15)
    assert c.figures == {"share": "0.5000", "clinic_share": "0.0000", "events": "6"}
    acts, ends = _last_hour_data(5)  # below the minimum number of events
    assert rules.last_hour(acts, ends, TZ, POLICY, "waste") == []
