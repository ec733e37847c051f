"""Statistical alert rules over weeks of entries (scan only): each clinician's waste trend
(EWMA control chart), witness pairs that recur more than chance, activity in the last hour of
the day. ``Decimal`` throughout: no binary float reaches a hashed figure.
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ledger.domain.alerts.candidates import (
    NON_EVENT_KINDS,
    AlertPolicy,
    Candidate,
    _d,
    local_time,
    signers,
)
from ledger.integrity.canonical import parse_time


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
