"""Per-entry alert rules: cheap, run in the transaction of the entry that triggers them (a late
entry, handling outside clinic hours, a dose above its order, quarantine, a reported or
suspected loss).
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from ledger.domain.alerts.blind_counts import book_read_during_blind_count
from ledger.domain.alerts.candidates import (
    _DAYS,
    NON_EVENT_KINDS,
    Q2,
    AlertPolicy,
    Candidate,
    _json,
    local_time,
    signers,
)
from ledger.domain.alerts.deadlines import loss_deadlines
from ledger.domain.alerts.losses import (
    breakage_recorded,
    shortage_at_receipt,
    stock_off_by_loss_adjustment,
)
from ledger.domain.alerts.stock_removed import stock_removed_by_correction
from ledger.integrity.canonical import parse_time


def late_entry(entry: dict[str, Any], policy: AlertPolicy) -> Candidate | None:
    """An entry typed more than ``late_entry_hours`` after its event (strictly more)."""
    if entry["kind"] in NON_EVENT_KINDS:
        return None
    occurred, recorded = parse_time(entry["occurred_at"]), parse_time(entry["recorded_at"])
    late = recorded - occurred
    if late <= timedelta(hours=policy.late_entry_hours):
        return None
    hours = Decimal(int(late.total_seconds())) / Decimal(3600)
    serious = late > timedelta(days=policy.late_entry_serious_days)
    return Candidate(
        alert_key=f"late_entry:{entry['seq']}", rule="late_entry", severity="medium" if serious else "low",
        subjects=signers(entry),
        summary=(f"{entry['kind']} (entry {entry['seq']}) was recorded {hours.quantize(Q2)} h after the event; "
                 f"reason given: {entry.get('late_reason') or 'none'}"),
        parameters=policy.params("late_entry_hours", "late_entry_serious_days"),
        evidence_seqs=(entry["seq"],),
        figures={"occurred_at": entry["occurred_at"], "recorded_at": entry["recorded_at"],
                 "hours_late": format(hours.quantize(Q2), "f")},
    )


def outside_clinic_hours(entry: dict[str, Any], policy: AlertPolicy, tz: str) -> Candidate | None:
    """A stock or clinical event whose local time is outside the clinic's hours that weekday
    (a closed day counts as outside). Silent until the registrant sets clinic hours."""
    if policy.clinic_hours is None or entry["kind"] in NON_EVENT_KINDS:
        return None
    t = local_time(entry["occurred_at"], tz)
    hours = policy.clinic_hours.get(t.weekday())
    hhmm = t.strftime("%H:%M")
    if hours is not None and hours[0] <= hhmm < hours[1]:
        return None
    when = f"{hours[0]}-{hours[1]}" if hours else "closed"
    return Candidate(
        alert_key=f"outside_hours:{entry['seq']}", rule="outside_clinic_hours", severity="low",
        subjects=signers(entry),
        summary=f"{entry['kind']} (entry {entry['seq']}) at {t.strftime('%a %Y-%m-%d %H:%M %Z')}; clinic hours that day: {when}",
        parameters={"clinic_hours": _json({_DAYS[k]: list(v) for k, v in sorted(policy.clinic_hours.items())}),
                    "time_zone": tz},
        evidence_seqs=(entry["seq"],),
        figures={"local_time": t.strftime("%Y-%m-%dT%H:%M"), "weekday": _DAYS[t.weekday()], "hours_that_day": when},
    )


def performer(entry: dict[str, Any]) -> str | None:
    """Who performed (or received/counted) the entry: the first signature that is not a witness."""
    for s in entry.get("signatures", ()):
        if s["meaning"] != "witnessed":
            return s["staff_id"]
    return None


def witness(entry: dict[str, Any]) -> str | None:
    for s in entry.get("signatures", ()):
        if s["meaning"] == "witnessed":
            return s["staff_id"]
    return None


#: Half a syringe's finest graduation (0.01 mL): a dose drawn to the nearest graduation may exceed
#: the order by this much without anyone giving more than ordered (issue 19: 0.5 mg/kg x 73 kg =
#: 36.5 mg is 0.365 mL at 100 mg/mL, drawn as 0.37 mL = 37.00 mg). Volumes are recorded to this
#: resolution since issue 19 (``quantities.parse_volume``, 3 decimals), so 0.365 mL is recorded
#: as such; the allowance stays for a dose read to the nearest graduation.
MEASURING_RESOLUTION_ML = Decimal("0.005")


def dose_above_order(entry: dict[str, Any]) -> Candidate | None:
    """An infusion that gave more mg than ordered (weight x mg/kg) by more than the measuring
    resolution allows (half a 0.01 mL graduation of the product drawn)."""
    if entry["kind"] != "dose_administered":
        return None
    ordered, given = Decimal(entry["ordered_mg"]), Decimal(entry["mg_given"])
    try:
        strength = Decimal(entry["draws"][0]["product"]["strength_mg_per_ml"])
    except (KeyError, IndexError, TypeError, ArithmeticError):
        strength = Decimal(0)  # no product to measure against: no allowance
    allowance = (MEASURING_RESOLUTION_ML * strength).quantize(Decimal("0.01"), ROUND_DOWN)  # never more than half
    if given <= ordered + allowance:
        return None
    return above_order(entry, ordered, given, allowance, (entry["seq"],), (
        f"administration {entry['administration_id']} (entry {entry['seq']}, patient {entry['patient_id']}) "
        f"gave {given} mg; the order was {entry['ordered_mg_per_kg']} mg/kg x {entry['weight_kg']} kg = {ordered} mg"))


def above_order(entry: dict[str, Any], ordered: Decimal, given: Decimal, allowance: Decimal,
                evidence: tuple[int, ...], summary: str) -> Candidate:
    """The ``dose_above_order`` alert on ``entry`` (a direct dose or a preparation's infusion):
    more mg given than ordered, past the measuring-resolution ``allowance``."""
    who = performer(entry)
    return Candidate(
        alert_key=f"dose_above_order:{entry['seq']}", rule="dose_above_order", severity="medium",
        subjects=(who,) if who else (), summary=summary,
        parameters={"measuring_resolution_ml": str(MEASURING_RESOLUTION_ML)}, evidence_seqs=evidence,
        figures={"ordered_mg": str(ordered), "mg_given": str(given), "excess_mg": str(given - ordered),
                 "allowance_mg": str(allowance), "patient_id": entry["patient_id"]},
    )


def quarantined(entry: dict[str, Any]) -> Candidate | None:
    """Suspect product set aside (DSCSA): someone must investigate, return or destroy it."""
    if entry["kind"] != "stock_quarantined":
        return None
    return Candidate(
        alert_key=f"quarantine:{entry['seq']}", rule="stock_quarantined", severity="medium", subjects=(),
        summary=f"{len(entry['vial_ids'])} vial(s) quarantined (entry {entry['seq']}): {entry['reason']}",
        parameters={}, evidence_seqs=(entry["seq"],),
        figures={"vials": str(len(entry["vial_ids"])), "vial_ids": " ".join(entry["vial_ids"])},
    )


def _local(utc_text: str, tz: str) -> str:
    """An entry time as the clinic reads it: local, to the minute, with the zone's abbreviation
    (alert text is read by people; the figures keep the exact UTC text)."""
    return local_time(utc_text, tz).strftime("%Y-%m-%d %H:%M %Z")


def loss_reported(entry: dict[str, Any], tz: str = "UTC") -> Candidate | None:
    """A theft or loss report: the DEA notice and Form 106 due times the entry carries."""
    if entry["kind"] != "theft_or_loss_reported":
        return None
    ml = sum((Decimal(v["ml"]) for v in entry["lost"]), Decimal("0.00"))
    return Candidate(
        alert_key=f"loss_reported:{entry['seq']}", rule="theft_or_loss", severity="critical", subjects=(),
        summary=(f"{entry['loss_type']} discovered {_local(entry['discovered_at'], tz)} (entry {entry['seq']}): DEA notice "
                 f"within one business day, Form 106 within 45 days"),
        parameters={"notice_business_days": "1", "form_106_days": "45"},
        evidence_seqs=(entry["seq"], *entry.get("covers_seqs", ())),
        figures={"discovered_at": entry["discovered_at"], "loss_type": entry["loss_type"], "ml_lost_now": str(ml),
                 "losses_past_24_months": str(entry["losses_past_24_months"])},
        deadlines={"dea_notice": entry["notice_due_at"], "form_106": entry["form_106_due_at"]},
    )


def suspected_loss(entry: dict[str, Any], tz: str) -> Candidate | None:
    """A count discrepancy resolved as theft or loss: a suspected significant loss, discovered
    when it was so determined; the notice and Form 106 deadlines run from then."""
    if entry["kind"] != "discrepancy_resolved" or entry["category"] != "theft_or_loss":
        return None
    return Candidate(
        alert_key=f"suspected_loss:{entry['discrepancy_id']}", rule="suspected_significant_loss", severity="high",
        subjects=(),
        summary=(f"discrepancy {entry['discrepancy_id']} (count entry {entry['count_seq']}) resolved as theft or "
                 f"loss: notify DEA within one business day and file Form 106 within 45 days, or record why it "
                 f"is not significant"),
        parameters={"notice_business_days": "1", "form_106_days": "45"},
        evidence_seqs=(entry["count_seq"], entry["seq"]),
        figures={"discrepancy_id": entry["discrepancy_id"], "determined_at": entry["occurred_at"]},
        deadlines=loss_deadlines(entry["occurred_at"], tz),
    )


#: Drug handling whose time of day matters. Counts and inventories are left out: they are taken
#: at opening or close of business by design; patient registration is not drug handling.
HANDLING_KINDS = frozenset({"dose_administered", "dose_wasted", "stock_received", "stock_destroyed",
                            "stock_transferred", "stock_returned",
                            "esketamine_session_recorded",  # issue 19
                            "preparation_made", "preparation_infused", "preparation_wasted"})  # issue 19


def outside_hours_by_day(entries: Iterable[dict[str, Any]], now: datetime, policy: AlertPolicy,
                         tz: str) -> list[Candidate]:
    """Drug handling outside clinic hours, one alert per person and local day (an evening
    session is one finding, not one per entry), for days that are over, so the evidence is
    complete. Silent until the registrant sets clinic hours."""
    if policy.clinic_hours is None:
        return []
    today = now.astimezone(zoneinfo.ZoneInfo(tz)).date()
    found: dict[tuple[str, date], list[tuple[dict[str, Any], Candidate]]] = defaultdict(list)
    for e in entries:
        if e["kind"] not in HANDLING_KINDS:
            continue
        c = outside_clinic_hours(e, policy, tz)
        if c is None:
            continue
        day = local_time(e["occurred_at"], tz).date()
        if day >= today:
            continue
        for who in c.subjects[:1] or ("",):
            found[(who, day)].append((e, c))
    out = []
    for (who, day), items in sorted(found.items()):
        first = items[0][1]
        times = [c.figures["local_time"][11:] for _, c in items]
        out.append(Candidate(
            alert_key=f"outside_hours:{who}:{day.isoformat()}", rule="outside_clinic_hours", severity="low",
            subjects=(who,) if who else (),
            summary=(f"{who or 'unsigned'}: {len(items)} drug-handling entr{'y' if len(items) == 1 else 'ies'} outside clinic "
                     f"hours on {_DAYS[day.weekday()]} {day.isoformat()} ({first.figures['hours_that_day']}), at "
                     f"{', '.join(times)}"),
            parameters=first.parameters, evidence_seqs=tuple(e["seq"] for e, _ in items),
            figures={"day": day.isoformat(), "hours_that_day": first.figures["hours_that_day"],
                     "entries": str(len(items)), "local_times": " ".join(times),
                     "kinds": " ".join(sorted({e["kind"] for e, _ in items}))},
        ))
    return out


def per_entry_rules(entry: dict[str, Any], policy: AlertPolicy, tz: str) -> list[Candidate]:
    """Every cheap rule over one entry (what the in-transaction hook and the scan both run)."""
    # issue 19; imported here because that module imports this one
    from ledger.domain.alerts.preparations import preparation_above_order

    out = []
    for c in (late_entry(entry, policy), dose_above_order(entry),
              quarantined(entry), loss_reported(entry, tz), suspected_loss(entry, tz),
              stock_removed_by_correction(entry), book_read_during_blind_count(entry),
              stock_off_by_loss_adjustment(entry), breakage_recorded(entry), shortage_at_receipt(entry),
              preparation_above_order(entry)):
        if c is not None:
            out.append(c)
    return out
