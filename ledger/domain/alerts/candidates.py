"""The alert's shape and what every rule shares: severities and categories, the ``Candidate`` a
rule returns, the alert projection (raised, acknowledged, resolved), the thresholds of the
registrant's policy, and small helpers over decoded entries.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
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
    "role_revoked", "alert_raised", "alert_acknowledged", "alert_resolved", "alert_cleared",
    "registration_expiry_recorded", "policy_set",
    "prescriber_registered", "supplier_registration_recorded",  # issue 19
    "report_key_certified",  # issue 18
    "dea_notice_sent", "form_106_filed",  # issue 20: a report's follow-up, recorded after the fact by design
})


#: The resolution category of an alert the system cleared itself (``alert_cleared``).
CLEARED = "condition_cleared"

ALERT_ENTRY_KINDS = frozenset({"alert_raised", "alert_acknowledged", "alert_resolved", "alert_cleared"})


Q4 = Decimal("0.0001")


Q2 = Decimal("0.01")


def _d(value: Decimal) -> str:
    """A figure as text: the ``Decimal``'s exact digits, at 4 places for ratios/statistics."""
    return format(value.quantize(Q4), "f")


@dataclass(frozen=True)
class Candidate:
    """What a rule found; ``ledger.services.alerts`` turns it into an ``alert_raised`` entry."""

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
    elif kind == "alert_cleared":
        row = view.get("alerts", (reg, entry["alert_id"]))
        if row is None:
            raise ValueError(f"alert_cleared names unknown alert {entry['alert_id']!r}")
        row.update(status="resolved", resolved_seq=entry["seq"], resolved_by=None, resolved_category=CLEARED,
                   resolved_explanation=entry["explanation"], resolved_at=entry["recorded_at"])
        view.put("alerts", row)


@dataclass(frozen=True)
class AlertPolicy:
    """The thresholds the rules use. Defaults follow clinic practice (docs/compliance.md); a registrant's ``policy_set``
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


def signers(entry: dict[str, Any]) -> tuple[str, ...]:
    """Staff ids who signed the entry, in order, without duplicates."""
    return tuple(dict.fromkeys(s["staff_id"] for s in entry.get("signatures", ())))


def signer_by_meaning(entry: dict[str, Any]) -> dict[str, str]:
    """Meaning -> staff id of the entry's first signature with that meaning (``performed``,
    ``approved``, ``witnessed``...)."""
    return {s["meaning"]: s["staff_id"] for s in reversed(entry.get("signatures", ()))}


def local_time(utc_text: str, tz: str) -> datetime:
    return parse_time(utc_text).astimezone(zoneinfo.ZoneInfo(tz))


def end_of_local_day(d: date, tz: str) -> str:
    """The last microsecond of local day ``d``, as entry UTC text (a deadline "by that day")."""
    nxt = datetime.combine(d + timedelta(days=1), time(0), zoneinfo.ZoneInfo(tz))
    return format_time(nxt - timedelta(microseconds=1))
