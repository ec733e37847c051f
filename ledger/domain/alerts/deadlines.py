"""Deadlines: the theft-or-loss notices (one business day; Form 106 within 45 days), the
biennial inventory, the DEA registration's expiry.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from ledger.domain.alerts.candidates import AlertPolicy, Candidate, end_of_local_day, local_time
from ledger.domain.form106 import follow_ups  # issue 20


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


def loss_deadlines_overdue(entries: Sequence[dict[str, Any]], now: datetime, tz: str) -> list[Candidate]:
    """Issue 20: a theft/loss report whose written notice to DEA, or whose Form 106, is past due
    with no ``dea_notice_sent`` / ``form_106_filed`` entry for it: one critical alert per missed
    deadline. Recording the notice or the filing clears it (``alert_cleared`` citing that entry),
    and none is raised once it is recorded, late or not."""
    done = follow_ups(entries)
    out = []
    for e in entries:
        if e["kind"] != "theft_or_loss_reported":
            continue
        have = done.get(e["seq"], {})
        for name, due_field, follow, what in (
                ("dea_notice", "notice_due_at", "notice", "written notice to the DEA field office"),
                ("form_106", "form_106_due_at", "filing", "DEA Form 106")):
            due = e.get(due_field)
            if follow in have or due is None or now <= local_time(due, tz):
                continue
            prefix = "dea_notice_overdue" if name == "dea_notice" else "form_106_overdue"
            out.append(Candidate(
                alert_key=f"{prefix}:{e['seq']}", rule="loss_deadline_overdue", severity="critical", subjects=(),
                summary=(f"{what} for the theft or loss reported as entry {e['seq']} was due "
                         f"{local_time(due, tz).strftime('%Y-%m-%d %H:%M %Z')} and is not recorded as "
                         f"{'sent' if follow == 'notice' else 'filed'}: send it now and record it"),
                parameters={"notice_business_days": "1", "form_106_days": "45"}, evidence_seqs=(e["seq"],),
                figures={"loss_report_seq": str(e["seq"]), "due": due}, deadlines={name: due},
            ))
    return out


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
