"""Alert rules: few, specific, explained by the entries and numbers that raised them.

Pure functions over decoded entries (the dicts of the canonical bytes) and plain records; no
SQLAlchemy. ``alert_service`` runs them: the cheap per-entry rules inside the transaction of
the entry that triggers them, the weeks-long statistics in ``csledger alerts scan`` outside any
registrant's lock.

Every rule returns ``Candidate`` objects: severity, rule name and parameters, evidence (entry
seqs and figures as exact decimal strings) and, for deadlines, named due times. A candidate's
``alert_key`` is unique per finding, so raising is idempotent; ``group`` names the ongoing
condition (a clinician's waste trend, a witness pair) so a statistical rule raises nothing new
while an alert of the same group is still open.

Patient names never reach an alert: evidence is entry seqs, staff ids and figures.

Statistics use ``Decimal`` throughout (EWMA, mean, standard deviation via ``Decimal.sqrt``), so
no binary float enters a figure that is hashed into an ``alert_raised`` entry.
"""

from __future__ import annotations

import json
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ledger.integrity.canonical import format_time, parse_time

SEVERITIES = ("low", "medium", "high", "critical")
#: How an acknowledge or resolve entry classifies what the alert turned out to be.
CATEGORIES = (
    "documentation_error",  # most variances: a missing or mistyped entry, fixed by a correction
    "explained",  # clinically or operationally explained (e.g. the infusion was stopped early)
    "policy_exception",  # a known, approved exception to the policy (e.g. an after-hours case)
    "reported_to_dea",  # a loss or theft reported (notice and Form 106)
    "diversion_suspected",  # handed to the compliance officer / investigation
    "false_positive",  # the rule fired on something that is not a problem
    "other",
)
#: Who may acknowledge or resolve an alert (and never the person it is about).
CLOSERS = frozenset({"manager", "compliance_officer"})

#: Entry kinds that are reference data or bookkeeping: when they "occurred" says nothing about
#: clinic activity, so hours and lateness rules skip them.
NON_EVENT_KINDS = frozenset({
    "registrant_registered", "product_added", "supplier_added", "staff_enrolled", "role_granted",
    "role_revoked", "alert_raised", "alert_acknowledged", "alert_resolved",
    "registration_expiry_recorded", "policy_set",
})
ALERT_ENTRY_KINDS = frozenset({"alert_raised", "alert_acknowledged", "alert_resolved"})

Q4 = Decimal("0.0001")
Q2 = Decimal("0.01")


def _d(value: Decimal) -> str:
    """A figure as text: the ``Decimal``'s exact digits, at 4 places for ratios/statistics."""
    return format(value.quantize(Q4), "f")


# --- the candidate and the projection ---------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """What a rule found; ``alert_service`` turns it into an ``alert_raised`` entry."""

    alert_key: str
    rule: str
    severity: str
    subjects: tuple[str, ...]
    summary: str
    parameters: dict[str, str]
    evidence_seqs: tuple[int, ...]
    figures: dict[str, str]
    deadlines: dict[str, str] = field(default_factory=dict)
    #: Ongoing condition this finding belongs to; None for one-off findings (one entry).
    group: str | None = None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def apply_alert_entry(entry: dict[str, Any], view: Any) -> None:
    """The alert projection (called from ``projections.apply``, so the append path and
    ``verify --deep`` run this same code)."""
    reg = entry["registrant"]
    kind = entry["kind"]
    if kind == "alert_raised":
        view.put("alerts", {
            "registrant": reg, "alert_id": entry["alert_id"], "alert_key": entry["alert_key"],
            "rule": entry["rule"], "severity": entry["severity"], "subjects": _json(entry["subjects"]),
            "summary": entry["summary"], "parameters": _json(entry["parameters"]),
            "evidence_seqs": _json(entry["evidence_seqs"]), "figures": _json(entry["figures"]),
            "deadlines": _json(entry["deadlines"]), "raised_seq": entry["seq"],
            "raised_at": entry["recorded_at"], "status": "open",
            "acknowledged_seq": None, "acknowledged_by": None, "acknowledged_category": None,
            "acknowledged_explanation": None, "resolved_seq": None, "resolved_by": None,
            "resolved_category": None, "resolved_explanation": None, "resolved_at": None,
        })
    elif kind in ("alert_acknowledged", "alert_resolved"):
        row = view.get("alerts", (reg, entry["alert_id"]))
        if row is None:
            raise ValueError(f"{kind} names unknown alert {entry['alert_id']!r}")
        by = entry["signatures"][0]["staff_id"] if entry["signatures"] else None
        if kind == "alert_acknowledged":
            row.update(status="acknowledged", acknowledged_seq=entry["seq"], acknowledged_by=by,
                       acknowledged_category=entry["category"], acknowledged_explanation=entry["explanation"])
        else:
            row.update(status="resolved", resolved_seq=entry["seq"], resolved_by=by,
                       resolved_category=entry["category"], resolved_explanation=entry["explanation"],
                       resolved_at=entry["recorded_at"])
        view.put("alerts", row)
    # registration_expiry_recorded: read by the scan from the entries; no table of its own.


# --- policy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertPolicy:
    """The thresholds the rules use. Defaults follow DOMAIN.md; a registrant's ``policy_set``
    entries (clinic-operations issue) override them (see ``policy_from_entries``)."""

    late_entry_hours: int = 24  # 21 CFR 1304.21: the date recorded is the date of the event
    late_entry_serious_days: int = 7
    #: Local opening hours per weekday (0 = Monday): (open "HH:MM", close "HH:MM"), absent = closed.
    #: None: the registrant has not set clinic hours, so the hours rule stays silent.
    clinic_hours: dict[int, tuple[str, str]] | None = None
    #: Clinic operations' count schedule: daily_opening | daily_close | each_shift | weekly.
    count_schedule: str = "daily_opening"
    count_grace_hours: int = 2  # a daily count is overdue this long after opening
    reconcile_hours: int = 2  # an administration unreconciled this long after it ended
    loss_pattern_count: int = 3  # shortages (negative count differences) within ...
    loss_pattern_days: int = 90  # ... this many days make a pattern (DOMAIN: significant loss)
    biennial_warn_days: int = 30
    registration_warn_days: int = 60  # DEA mails renewal notices about 60 days ahead
    # Statistics (scan only)
    ewma_lambda: Decimal = Decimal("0.2")
    ewma_l: Decimal = Decimal("3")
    window_days: int = 28
    min_recent: int = 5
    min_own_baseline: int = 20
    min_clinic_baseline: int = 30
    min_sd_share: Decimal = Decimal("0.02")
    min_sd_mg: Decimal = Decimal("2")
    pair_min_count: int = 8
    pair_min_ratio: Decimal = Decimal("2")
    pair_min_z: Decimal = Decimal("3")
    last_hour_minutes: int = 60
    last_hour_min_events: int = 6
    last_hour_min_ratio: Decimal = Decimal("2")
    last_hour_min_excess: Decimal = Decimal("0.25")

    def params(self, *names: str) -> dict[str, str]:
        return {n: str(getattr(self, n)) for n in names}


def policy_from_entries(entries: Iterable[dict[str, Any]]) -> AlertPolicy:
    """The policy in force after ``entries``: defaults overridden by the latest ``policy_set``
    values this module understands (unknown keys are ignored, missing ones keep defaults)."""
    kw: dict[str, Any] = {}
    for e in entries:
        if e["kind"] != "policy_set":
            continue
        src = e.get("policy", e)
        for name in ("late_entry_hours", "biennial_warn_days", "registration_warn_days", "window_days",
                     "min_recent", "min_own_baseline", "min_clinic_baseline", "pair_min_count",
                     "last_hour_minutes", "last_hour_min_events"):
            if isinstance(src.get(name), int):
                kw[name] = src[name]
        if isinstance(src.get("late_entry_limit_hours"), int):
            kw["late_entry_hours"] = src["late_entry_limit_hours"]
        for name in ("ewma_lambda", "ewma_l", "pair_min_ratio", "pair_min_z", "last_hour_min_ratio",
                     "last_hour_min_excess", "min_sd_share", "min_sd_mg"):
            if isinstance(src.get(name), str):
                kw[name] = Decimal(src[name])
        hours = src.get("clinic_hours")
        if isinstance(hours, dict):
            # An empty map means "not set" (clinic operations' default), not "closed every day".
            kw["clinic_hours"] = _hours(hours) or None
        if isinstance(src.get("count_schedule"), str):
            kw["count_schedule"] = src["count_schedule"]
    return AlertPolicy(**kw)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hours(raw: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """``{"mon": ["07:00", "19:00"], ...}`` (or weekday numbers as keys) to the policy shape."""
    out: dict[int, tuple[str, str]] = {}
    for k, v in raw.items():
        day = _DAYS.index(k[:3].lower()) if not str(k).isdigit() else int(k)
        if v:
            out[day] = (str(v[0]), str(v[1]))
    return out


# --- helpers over entries -------------------------------------------------------------------------


def signers(entry: dict[str, Any]) -> tuple[str, ...]:
    """Staff ids who signed the entry, in order, without duplicates."""
    return tuple(dict.fromkeys(s["staff_id"] for s in entry.get("signatures", ())))


def local_time(utc_text: str, tz: str) -> datetime:
    return parse_time(utc_text).astimezone(zoneinfo.ZoneInfo(tz))


def end_of_local_day(d: date, tz: str) -> str:
    """The last microsecond of local day ``d``, as entry UTC text (a deadline "by that day")."""
    nxt = datetime.combine(d + timedelta(days=1), time(0), zoneinfo.ZoneInfo(tz))
    return format_time(nxt - timedelta(microseconds=1))


# --- per-entry rules (cheap: run in the entry's own transaction) ---------------------------------


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


def dose_above_order(entry: dict[str, Any]) -> Candidate | None:
    """An infusion that gave more mg than ordered (weight x mg/kg): strictly more."""
    if entry["kind"] != "dose_administered":
        return None
    ordered, given = Decimal(entry["ordered_mg"]), Decimal(entry["mg_given"])
    if given <= ordered:
        return None
    who = performer(entry)
    return Candidate(
        alert_key=f"dose_above_order:{entry['seq']}", rule="dose_above_order", severity="medium",
        subjects=(who,) if who else (),
        summary=(f"administration {entry['administration_id']} (entry {entry['seq']}, patient {entry['patient_id']}) "
                 f"gave {given} mg; the order was {entry['ordered_mg_per_kg']} mg/kg x {entry['weight_kg']} kg = {ordered} mg"),
        parameters={}, evidence_seqs=(entry["seq"],),
        figures={"ordered_mg": str(ordered), "mg_given": str(given), "excess_mg": str(given - ordered),
                 "patient_id": entry["patient_id"]},
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


def loss_reported(entry: dict[str, Any]) -> Candidate | None:
    """A theft or loss report: the DEA notice and Form 106 due times the entry carries."""
    if entry["kind"] != "theft_or_loss_reported":
        return None
    ml = sum((Decimal(v["ml"]) for v in entry["lost"]), Decimal("0.00"))
    return Candidate(
        alert_key=f"loss_reported:{entry['seq']}", rule="theft_or_loss", severity="critical", subjects=(),
        summary=(f"{entry['loss_type']} discovered {entry['discovered_at']} (entry {entry['seq']}): DEA notice "
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
                            "stock_transferred", "stock_returned"})


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
    out = []
    for c in (late_entry(entry, policy), dose_above_order(entry),
              quarantined(entry), loss_reported(entry), suspected_loss(entry, tz)):
        if c is not None:
            out.append(c)
    return out


# --- clinical state rules (scan) ----------------------------------------------------------------


def administrations(entries: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each ``dose_administered`` entry with its ``dose_wasted`` entries, in seq order."""
    admins: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for e in entries:
        if e["kind"] == "dose_administered":
            admins[e["administration_id"]] = (e, [])
        elif e["kind"] == "dose_wasted" and e["administration_id"] in admins:
            admins[e["administration_id"]][1].append(e)
    return list(admins.values())


def unreconciled(entries: Sequence[dict[str, Any]], now: datetime, policy: AlertPolicy) -> list[Candidate]:
    """Administrations whose drawn mL still exceeds given + wasted ``reconcile_hours`` after the
    infusion ended (strictly later)."""
    out = []
    for a, ws in administrations(entries):
        drawn, given = Decimal(a["ml_drawn"]), Decimal(a["ml_given"])
        wasted = sum((Decimal(w["ml"]) for w in ws), Decimal("0.00"))
        missing = drawn - given - wasted
        ended = parse_time(a["ended_at"])
        if missing <= 0 or now - ended <= timedelta(hours=policy.reconcile_hours):
            continue
        who = performer(a)
        hours = Decimal(int((now - ended).total_seconds())) / Decimal(3600)
        out.append(Candidate(
            alert_key=f"unreconciled:{a['administration_id']}", rule="unreconciled_administration", severity="medium",
            subjects=(who,) if who else (),
            summary=(f"administration {a['administration_id']} (entry {a['seq']}): {missing} mL drawn but neither "
                     f"given nor wasted, {hours.quantize(Q2)} h after the infusion ended"),
            parameters=policy.params("reconcile_hours"),
            evidence_seqs=(a["seq"], *(w["seq"] for w in ws)),
            figures={"ml_drawn": str(drawn), "ml_given": str(given), "ml_wasted": str(wasted),
                     "ml_unaccounted": str(missing), "ended_at": a["ended_at"]},
        ))
    return out


ON_HAND = ("sealed", "open", "quarantined")


def expired_stock(vials: Sequence[dict[str, Any]], now: datetime, tz: str) -> list[Candidate]:
    """Stock still on hand past its date: a lot past expiry (one alert per lot), an opened vial
    past its beyond-use date (one per vial). Either may leave only by destruction or return."""
    today = now.astimezone(zoneinfo.ZoneInfo(tz)).date().isoformat()
    lots: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    out = []
    for v in sorted(vials, key=lambda v: v["vial_id"]):
        if v["state"] not in ON_HAND or Decimal(v["ml_left"]) <= 0:
            continue
        if v["expiry"] < today:
            lots[(v["ndc_key"], v["lot"], v["expiry"])].append(v)
        elif v.get("beyond_use_date") and v["beyond_use_date"] < today:
            out.append(Candidate(
                alert_key=f"past_beyond_use:{v['vial_id']}", rule="past_beyond_use_date", severity="medium",
                subjects=(),
                summary=(f"opened vial {v['vial_id']} (lot {v['lot']}) is past its beyond-use date "
                         f"{v['beyond_use_date']} with {v['ml_left']} mL left; destroy it (Form 41)"),
                parameters={}, evidence_seqs=tuple(sorted({v["added_seq"], v["last_seq"]})),
                figures={"beyond_use_date": v["beyond_use_date"], "ml_left": str(v["ml_left"]),
                         "opened_at": v.get("opened_at") or "", "opened_by": v.get("opened_by") or ""},
            ))
    for (ndc_key, lot, expiry), vs in sorted(lots.items()):
        out.append(Candidate(
            alert_key=f"expired_lot:{ndc_key}:{lot}", rule="expired_lot_in_stock", severity="medium", subjects=(),
            summary=(f"lot {lot} (NDC key {ndc_key}) expired {expiry}; {len(vs)} vial(s) still on hand: "
                     f"destroy (Form 41) or return them"),
            parameters={}, evidence_seqs=tuple(sorted({s for v in vs for s in (v["added_seq"], v["last_seq"])})),
            figures={"expiry": expiry, "vials": str(len(vs)),
                     "ml_on_hand": str(sum((Decimal(v["ml_left"]) for v in vs), Decimal("0.00"))),
                     "vial_ids": " ".join(v["vial_id"] for v in vs)},
        ))
    return out


def count_overdue(entries: Sequence[dict[str, Any]], now: datetime, tz: str, policy: AlertPolicy) -> Candidate | None:
    """A count the policy's schedule calls for has not been submitted: for a daily schedule, no
    count today ``count_grace_hours`` after opening (after closing for ``daily_close``, checked
    the next morning); for ``weekly``, none in the last 7 days. Needs clinic hours."""
    if not policy.clinic_hours:
        return None
    zone = zoneinfo.ZoneInfo(tz)
    local_now = now.astimezone(zone)
    counts = [local_time(e["occurred_at"], tz) for e in entries if e["kind"] == "stock_counted"]
    sched = policy.count_schedule
    if sched == "weekly":
        if not any(local_now - timedelta(days=7) < c <= local_now for c in counts):
            week = local_now.isocalendar()
            last = max(counts).strftime("%Y-%m-%d") if counts else "never"
            return Candidate(
                alert_key=f"count_overdue:{week.year}-W{week.week:02d}", rule="count_overdue", severity="medium",
                subjects=(), summary=f"no count in the last 7 days (weekly schedule); last count {last}",
                parameters={"count_schedule": sched}, evidence_seqs=(),
                figures={"last_count": last})
        return None
    day = local_now.date()
    if sched == "daily_close":
        day = day - timedelta(days=1)  # yesterday's closing count, checked once today has begun
        hours = policy.clinic_hours.get(day.weekday())
        if hours is None:
            return None
        due = datetime.combine(day, time.fromisoformat(hours[1]), zone) + timedelta(hours=policy.count_grace_hours)
    else:  # daily_opening, each_shift: at least the opening count of the day
        hours = policy.clinic_hours.get(day.weekday())
        if hours is None:
            return None
        due = datetime.combine(day, time.fromisoformat(hours[0]), zone) + timedelta(hours=policy.count_grace_hours)
    if local_now <= due or any(c.date() == day for c in counts):
        return None
    return Candidate(
        alert_key=f"count_overdue:{day.isoformat()}", rule="count_overdue", severity="medium", subjects=(),
        summary=f"no count recorded for {day.isoformat()} ({sched}); it was due by {due.strftime('%H:%M %Z')}",
        parameters={"count_schedule": sched, "count_grace_hours": str(policy.count_grace_hours)},
        evidence_seqs=(), figures={"day": day.isoformat(), "due": format_time(due)},
        deadlines={"count": format_time(due)},
    )


def loss_pattern(entries: Sequence[dict[str, Any]], now: datetime, policy: AlertPolicy) -> Candidate | None:
    """Small unexplained shortages are recorded, not reported, but a *pattern* of them is a
    significant loss (21 CFR 1301.76(b)): at least ``loss_pattern_count`` count discrepancies
    with a shortage within ``loss_pattern_days``, whatever their resolution. The figures say who
    counted each, so the pattern by person is visible without naming a suspect."""
    start = now - timedelta(days=policy.loss_pattern_days)
    shorts = []
    for e in entries:
        if e["kind"] != "stock_counted" or not start < parse_time(e["occurred_at"]) <= now:
            continue
        for line in e["lines"]:
            if line.get("discrepancy_id") and Decimal(line["difference_ml"]) < 0:
                shorts.append((e, line))
    if len(shorts) < policy.loss_pattern_count:
        return None
    counted_by: dict[str, int] = defaultdict(int)
    for e, _ in shorts:
        for who in signers(e):
            counted_by[who] += 1
    total = sum((Decimal(line["difference_ml"]) for _, line in shorts), Decimal("0.00"))
    return Candidate(
        alert_key=f"loss_pattern:{shorts[-1][1]['discrepancy_id']}", rule="loss_pattern", severity="high", subjects=(),
        summary=(f"{len(shorts)} count shortages totalling {-total} mL in the last {policy.loss_pattern_days} days: "
                 "a pattern of small losses may be a significant loss (report within one business day if so)"),
        parameters=policy.params("loss_pattern_count", "loss_pattern_days"),
        evidence_seqs=tuple(dict.fromkeys(e["seq"] for e, _ in shorts)),
        figures={"shortages": str(len(shorts)), "total_ml": str(total),
                 "discrepancies": " ".join(line["discrepancy_id"] for _, line in shorts),
                 "counted_by": " ".join(f"{k}:{v}" for k, v in sorted(counted_by.items()))},
        group="loss_pattern",
    )


def discrepancy_alerts(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Count discrepancies shown as alerts: a *view* of the discrepancy (open until the
    discrepancy itself is resolved; one workflow, not two). Same shape as an alert row."""
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e["kind"] == "stock_counted":
            for line in e["lines"]:
                if line.get("discrepancy_id"):
                    diff = Decimal(line["difference_ml"])
                    out[line["discrepancy_id"]] = discrepancy_view(
                        e["registrant"], line["discrepancy_id"], e["seq"], e["recorded_at"], line["product"]["ndc_key"],
                        Decimal(line["expected_ml"]), Decimal(line["counted_ml"]), diff, list(signers(e)))
        elif e["kind"] == "discrepancy_resolved" and e["discrepancy_id"] in out:
            d = out[e["discrepancy_id"]]
            d.update(status="resolved", resolved_seq=e["seq"], resolved_by=performer(e),
                     resolved_category=e["category"], resolved_explanation=e["explanation"],
                     resolved_at=e["recorded_at"])
            d["evidence_seqs"].append(e["seq"])
    return list(out.values())


def discrepancy_view(registrant: str, discrepancy_id: str, count_seq: int, raised_at: str, ndc_key: str,
                     expected: Decimal, counted: Decimal, diff: Decimal, counters: list[str]) -> dict[str, Any]:
    """One discrepancy in the shape of an alert row (``alert_id`` is the discrepancy id)."""
    return {
        "registrant": registrant, "alert_id": discrepancy_id, "alert_key": f"count_discrepancy:{discrepancy_id}",
        "rule": "count_discrepancy", "severity": "high" if diff < 0 else "medium", "subjects": counters,
        "summary": (f"count (entry {count_seq}) of NDC key {ndc_key}: counted {counted} mL, book {expected} mL, "
                    f"difference {diff} mL; resolve the discrepancy (category, explanation) to close"),
        "parameters": {}, "evidence_seqs": [count_seq],
        "figures": {"expected_ml": str(expected), "counted_ml": str(counted), "difference_ml": str(diff)},
        "deadlines": {}, "raised_seq": count_seq, "raised_at": raised_at, "status": "open",
        "acknowledged_seq": None, "acknowledged_by": None, "acknowledged_category": None,
        "acknowledged_explanation": None, "resolved_seq": None, "resolved_by": None, "resolved_category": None,
        "resolved_explanation": None, "resolved_at": None, "view_of": "discrepancy",
    }


# --- deadlines -------------------------------------------------------------------------------


def business_days_after(start: date, n: int, *, state: str | None = None) -> date:
    """The ``n``-th business day after ``start``: weekends and US federal holidays (the
    maintained ``holidays`` calendar, observed dates) do not count."""
    import holidays

    cal = holidays.country_holidays("US", years=range(start.year, start.year + 2))
    d = start
    left = n
    while left:
        d += timedelta(days=1)
        if d.weekday() < 5 and d not in cal:
            left -= 1
    return d


def loss_deadlines(discovered_at: str, tz: str) -> dict[str, str]:
    """21 CFR 1301.76(b): written notice to the DEA field office within one business day of
    discovery, then DEA Form 106 within 45 days. Both due at the end of the local day."""
    day = local_time(discovered_at, tz).date()
    return {
        "dea_notice": end_of_local_day(business_days_after(day, 1), tz),
        "form_106": end_of_local_day(day + timedelta(days=45), tz),
    }


def _add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February: the last day of February
        return d.replace(year=d.year + years, day=28)


def biennial_inventory(entries: Sequence[dict[str, Any]], now: datetime, tz: str,
                       policy: AlertPolicy) -> Candidate | None:
    """21 CFR 1304.11(c): a biennial inventory within 2 years of the last. Warns from
    ``biennial_warn_days`` before the due date (medium) and when it is overdue (high)."""
    last = None
    for e in entries:
        if e["kind"] == "inventory_taken":
            last = e
    if last is None:
        return None
    taken = local_time(last["occurred_at"], tz).date()
    due = _add_years(taken, 2)
    today = now.astimezone(zoneinfo.ZoneInfo(tz)).date()
    days_left = (due - today).days
    if days_left > policy.biennial_warn_days:
        return None
    stage = "overdue" if days_left < 0 else "due_soon"
    return Candidate(
        alert_key=f"biennial_inventory:{last['seq']}:{stage}", rule="biennial_inventory",
        severity="high" if stage == "overdue" else "medium", subjects=(),
        summary=(f"biennial inventory {'overdue since' if stage == 'overdue' else 'due by'} {due.isoformat()} "
                 f"(last inventory {taken.isoformat()}, entry {last['seq']})"),
        parameters=policy.params("biennial_warn_days"), evidence_seqs=(last["seq"],),
        figures={"last_inventory": taken.isoformat(), "due": due.isoformat(), "days_left": str(days_left)},
        deadlines={"biennial_inventory": end_of_local_day(due, tz)},
    )


def registration_expiry(entries: Sequence[dict[str, Any]], now: datetime, tz: str,
                        policy: AlertPolicy) -> Candidate | None:
    """The registrant's DEA registration expires within ``registration_warn_days`` (medium) or
    has expired (critical: no controlled substance may be handled)."""
    last = None
    for e in entries:
        if e["kind"] == "registration_expiry_recorded":
            last = e
    if last is None:
        return None
    expires = date.fromisoformat(last["expires_on"])
    today = now.astimezone(zoneinfo.ZoneInfo(tz)).date()
    days_left = (expires - today).days
    if days_left > policy.registration_warn_days:
        return None
    stage = "expired" if days_left < 0 else "expiring"
    return Candidate(
        alert_key=f"dea_registration:{last['seq']}:{stage}", rule="dea_registration_expiry",
        severity="critical" if stage == "expired" else "medium", subjects=(),
        summary=(f"DEA registration {last['registrant']} {'expired on' if stage == 'expired' else 'expires on'} "
                 f"{expires.isoformat()}; renew it"),
        parameters=policy.params("registration_warn_days"), evidence_seqs=(last["seq"],),
        figures={"expires_on": expires.isoformat(), "days_left": str(days_left)},
        deadlines={"dea_registration": end_of_local_day(expires, tz)},
    )


# --- statistics (scan only) -------------------------------------------------------------------


@dataclass(frozen=True)
class Waste:
    """One administration's waste as the statistics see it (built from the clinical entries)."""

    seq: int  # the administration (or waste) entry the figures come from
    staff_id: str  # who administered and wasted
    witness_id: str | None
    at: datetime  # aware, UTC
    drawn_mg: Decimal
    wasted_mg: Decimal
    waste_seqs: tuple[int, ...] = ()

    @property
    def share(self) -> Decimal:
        return self.wasted_mg / self.drawn_mg if self.drawn_mg else Decimal(0)


def _mean_sd(xs: Sequence[Decimal]) -> tuple[Decimal, Decimal]:
    n = len(xs)
    mean = sum(xs, Decimal(0)) / n
    var = sum(((x - mean) ** 2 for x in xs), Decimal(0)) / (n - 1) if n > 1 else Decimal(0)
    return mean, var.sqrt()


def _ewma(xs: Sequence[Decimal], start: Decimal, lam: Decimal) -> Decimal:
    z = start
    for x in xs:
        z = lam * x + (1 - lam) * z
    return z


def _ucl(mean: Decimal, sd: Decimal, lam: Decimal, big_l: Decimal, n: int) -> Decimal:
    """EWMA upper control limit after ``n`` points (exact variance factor, not asymptotic)."""
    factor = lam / (2 - lam) * (1 - (1 - lam) ** (2 * n))
    return mean + big_l * sd * factor.sqrt()


def waste_trend(wastes: Sequence[Waste], now: datetime, policy: AlertPolicy, metric: str) -> list[Candidate]:
    """Per clinician, the EWMA of their waste over the last ``window_days`` (``metric``:
    ``"share"`` = wasted / drawn, or ``"mg"`` = waste per infusion) against the upper control
    limits of (a) the rest of the clinic's history and (b) their own history before the
    window. Fires when it exceeds either; both is high severity."""
    lam, big_l = policy.ewma_lambda, policy.ewma_l
    floor = policy.min_sd_share if metric == "share" else policy.min_sd_mg
    value = (lambda w: w.share) if metric == "share" else (lambda w: w.wasted_mg)
    start = now - timedelta(days=policy.window_days)
    by_staff: dict[str, list[Waste]] = defaultdict(list)
    for w in sorted(wastes, key=lambda w: (w.at, w.seq)):
        if w.at <= now:
            by_staff[w.staff_id].append(w)
    out = []
    for staff, mine in sorted(by_staff.items()):
        recent = [w for w in mine if w.at > start]
        if len(recent) < policy.min_recent:
            continue
        xs = [value(w) for w in recent]
        clinic = [value(w) for s, ws in by_staff.items() if s != staff for w in ws]
        own = [value(w) for w in mine if w.at <= start]
        figures: dict[str, str] = {"recent_infusions": str(len(recent)), "recent_mean": _d(sum(xs, Decimal(0)) / len(xs))}
        exceeded = []
        for label, base, minimum in (("clinic", clinic, policy.min_clinic_baseline),
                                     ("own", own, policy.min_own_baseline)):
            if len(base) < minimum:
                figures[f"{label}_baseline_n"] = str(len(base))
                continue
            mean, sd = _mean_sd(base)
            sd = max(sd, floor)
            z = _ewma(xs, mean, lam)
            limit = _ucl(mean, sd, lam, big_l, len(xs))
            figures.update({f"{label}_baseline_n": str(len(base)), f"{label}_mean": _d(mean),
                            f"{label}_sd": _d(sd), f"ewma_vs_{label}": _d(z), f"{label}_limit": _d(limit)})
            if z > limit:
                exceeded.append(label)
        if not exceeded:
            continue
        what = "waste share of dose" if metric == "share" else "waste per infusion (mg)"
        out.append(Candidate(
            alert_key=f"waste_trend:{metric}:{staff}:{recent[-1].seq}", rule=f"waste_trend_{metric}",
            severity="high" if len(exceeded) == 2 else "medium", subjects=(staff,),
            summary=(f"{staff}: {what} over the last {policy.window_days} days (EWMA {figures.get('ewma_vs_' + exceeded[0])}) "
                     f"is above the {' and '.join(exceeded)} control limit"),
            parameters={**policy.params("ewma_lambda", "ewma_l", "window_days", "min_recent",
                                        "min_own_baseline", "min_clinic_baseline"),
                        "min_sd": str(floor), "metric": metric},
            evidence_seqs=tuple(s for w in recent for s in (w.seq, *w.waste_seqs)),
            figures={**figures, "exceeded": ",".join(exceeded)},
            group=f"waste_trend:{metric}:{staff}",
        ))
    return out


def presence_by_day(entries: Iterable[dict[str, Any]], tz: str) -> dict[date, set[str]]:
    """Who worked which local day: anyone who signed a stock or clinical entry that day."""
    out: dict[date, set[str]] = defaultdict(set)
    for e in entries:
        if e["kind"] in NON_EVENT_KINDS:
            continue
        d = local_time(e["occurred_at"], tz).date()
        out[d].update(signers(e))
    return out


def witness_pairs(wastes: Sequence[Waste], presence: dict[date, set[str]], tz: str,
                  policy: AlertPolicy) -> list[Candidate]:
    """The same two people as actor and witness far more often than the days both worked
    explain. Expected count: for each waste by one of the pair on a day the other worked,
    1 / (staff present that day - 1), the chance a witness picked at random among those present
    is the other. Fires when observed >= ``pair_min_count``, observed >= ``pair_min_ratio`` x
    expected and (observed - expected) / sqrt(expected) >= ``pair_min_z``."""
    zone = zoneinfo.ZoneInfo(tz)
    observed: dict[frozenset, list[Waste]] = defaultdict(list)
    for w in wastes:
        if w.witness_id and w.witness_id != w.staff_id:
            observed[frozenset((w.staff_id, w.witness_id))].append(w)
    out = []
    for pair, seen in sorted(observed.items(), key=lambda kv: sorted(kv[0])):
        a, b = sorted(pair)
        expected = Decimal(0)
        both_days = {d for d, who in presence.items() if a in who and b in who}
        for w in wastes:
            if w.staff_id not in pair:
                continue
            other = b if w.staff_id == a else a
            d = w.at.astimezone(zone).date()
            present = presence.get(d, set()) | {w.staff_id}
            if other in present and len(present) > 1:
                expected += Decimal(1) / Decimal(len(present) - 1)
        n = len(seen)
        if n < policy.pair_min_count or expected <= 0:
            continue
        z = (Decimal(n) - expected) / expected.sqrt()
        if Decimal(n) < policy.pair_min_ratio * expected or z < policy.pair_min_z:
            continue
        seen.sort(key=lambda w: w.seq)
        out.append(Candidate(
            alert_key=f"witness_pair:{a}:{b}:{seen[-1].seq}", rule="witness_pair", severity="medium",
            subjects=(a, b),
            summary=(f"{a} and {b} witnessed each other's waste {n} times; the {len(both_days)} days both worked "
                     f"explain about {_d(expected)}"),
            parameters=policy.params("pair_min_count", "pair_min_ratio", "pair_min_z"),
            evidence_seqs=tuple(s for w in seen for s in (w.seq, *w.waste_seqs)),
            figures={"observed": str(n), "expected": _d(expected), "z": _d(z), "days_both_worked": str(len(both_days))},
            group=f"witness_pair:{a}:{b}",
        ))
    return out


@dataclass(frozen=True)
class Activity:
    """One draw or waste by a person: ``mg`` drawn or wasted at ``at`` (UTC)."""

    seq: int
    staff_id: str
    at: datetime
    mg: Decimal


def last_hour(activities: Sequence[Activity], day_end: dict[tuple[str, date], datetime], tz: str,
              policy: AlertPolicy, what: str) -> list[Candidate]:
    """Draws or waste in the last hour of the person's working day (``day_end``: the time of
    their last entry that local day). Every day's last event is in its last hour, so the
    signal is relative: the share of a person's mg that falls there against the rest of the
    clinic's share. Fires when the person's share is at least ``last_hour_min_ratio`` times and
    ``last_hour_min_excess`` above the clinic's, over at least ``last_hour_min_events`` events."""
    zone = zoneinfo.ZoneInfo(tz)
    window = timedelta(minutes=policy.last_hour_minutes)
    tot: dict[str, Decimal] = defaultdict(Decimal)
    late: dict[str, list[Activity]] = defaultdict(list)
    for a in activities:
        tot[a.staff_id] += a.mg
        end = day_end.get((a.staff_id, a.at.astimezone(zone).date()))
        if end is not None and end - window <= a.at <= end:
            late[a.staff_id].append(a)
    out = []
    for staff in sorted(tot):
        mine_late = late.get(staff, [])
        if len(mine_late) < policy.last_hour_min_events or not tot[staff]:
            continue
        share = sum((a.mg for a in mine_late), Decimal(0)) / tot[staff]
        others_tot = sum((v for s, v in tot.items() if s != staff), Decimal(0))
        if not others_tot:
            continue
        others_late = sum((a.mg for s, acts in late.items() if s != staff for a in acts), Decimal(0))
        clinic_share = others_late / others_tot
        if share < policy.last_hour_min_ratio * clinic_share or share - clinic_share < policy.last_hour_min_excess:
            continue
        mine_late.sort(key=lambda a: a.seq)
        out.append(Candidate(
            alert_key=f"last_hour_{what}:{staff}:{mine_late[-1].seq}", rule=f"last_hour_{what}", severity="medium",
            subjects=(staff,),
            summary=(f"{staff}: {_d(share * 100)}% of their {what} (mg) falls in the last {policy.last_hour_minutes} min "
                     f"of their working day; the rest of the clinic {_d(clinic_share * 100)}%"),
            parameters=policy.params("last_hour_minutes", "last_hour_min_events", "last_hour_min_ratio",
                                     "last_hour_min_excess"),
            evidence_seqs=tuple(a.seq for a in mine_late),
            figures={"share": _d(share), "clinic_share": _d(clinic_share), "events": str(len(mine_late))},
            group=f"last_hour_{what}:{staff}",
        ))
    return out


def day_ends(entries: Iterable[dict[str, Any]], tz: str) -> dict[tuple[str, date], datetime]:
    """(staff, local day) -> the time of their last signed stock or clinical entry that day."""
    out: dict[tuple[str, date], datetime] = {}
    zone = zoneinfo.ZoneInfo(tz)
    for e in entries:
        if e["kind"] in NON_EVENT_KINDS:
            continue
        t = parse_time(e["occurred_at"])
        for s in signers(e):
            k = (s, t.astimezone(zone).date())
            if k not in out or out[k] < t:
                out[k] = t
    return out


def now_utc() -> datetime:
    return datetime.now(UTC)
