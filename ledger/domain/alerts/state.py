"""Clinical-state alert rules, run by the scan: infusions not reconciled with their waste,
expired stock on hand, overdue counts, a pattern of losses, open count discrepancies.
"""

from __future__ import annotations

import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from ledger.domain.alerts.candidates import Q2, AlertPolicy, Candidate, local_time, signers
from ledger.domain.alerts.per_entry import performer
from ledger.integrity.canonical import format_time, parse_time


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


#: Entries that count the stock: a two-person count, and an inventory (which counts every
#: container on hand, so it satisfies the schedule's count too).
COUNT_KINDS = frozenset({"stock_counted", "inventory_taken"})


def first_stock(entries: Sequence[dict[str, Any]], tz: str) -> datetime | None:
    """When the registrant first had stock (local time): its first receipt, or its first inventory
    listing a container. Before it there is nothing to count."""
    times = [local_time(e["occurred_at"], tz) for e in entries
             if e["kind"] == "stock_received" or (e["kind"] == "inventory_taken" and e.get("items"))]
    return min(times, default=None)


def count_overdue(entries: Sequence[dict[str, Any]], now: datetime, tz: str, policy: AlertPolicy) -> Candidate | None:
    """A count the policy's schedule calls for has not been submitted: for a daily schedule, no
    count today ``count_grace_hours`` after opening (after closing for ``daily_close``, checked
    the next morning); for ``weekly``, none in the last 7 days. Needs clinic hours. Inventories
    count as counts, and nothing is due before the registrant's first stock (issue 20); the
    alert clears itself when a count is recorded (``alerts.clear_count_overdue``)."""
    if not policy.clinic_hours:
        return None
    zone = zoneinfo.ZoneInfo(tz)
    local_now = now.astimezone(zone)
    counts = [local_time(e["occurred_at"], tz) for e in entries if e["kind"] in COUNT_KINDS]
    stocked = first_stock(entries, tz)
    if stocked is None:
        return None
    sched = policy.count_schedule
    if sched == "weekly":
        if stocked > local_now - timedelta(days=7):
            return None  # the first week's count is not yet due
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
    if local_now <= due or stocked >= due or any(c.date() == day for c in counts):
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
    significant loss (21 CFR 1301.76(b)): at least ``loss_pattern_count`` count shortages within
    ``loss_pattern_days``, whatever their resolution: the lines that opened a discrepancy, and
    (issue 20) those within the opened-vial tolerance, which open none but are still shortages.
    The figures say which were which, and who counted each, so the pattern by person is visible
    without naming a suspect."""
    start = now - timedelta(days=policy.loss_pattern_days)
    shorts = []
    # A within-tolerance shortage leaves the book as it was, so the next count of the product
    # finds the same gap again: counting it at every daily count would raise the pattern within
    # days from one honest estimate. Only the part of the gap that is new since the previous
    # count of the product counts (the gap a count left standing, per product; a count that
    # opened a discrepancy is settled through it, so the next gap starts from zero).
    standing: dict[str, Decimal] = {}
    for e in entries:
        if e["kind"] != "stock_counted":
            continue
        in_window = start < parse_time(e["occurred_at"]) <= now
        for i, line in enumerate(e["lines"]):
            key = line["product"]["ndc_key"]
            diff = Decimal(line["difference_ml"])
            before = standing.get(key, Decimal(0))
            standing[key] = diff if line.get("within_tolerance") else Decimal(0)
            if not in_window or diff >= 0:
                continue
            if line.get("discrepancy_id"):
                shorts.append((e, line, line["discrepancy_id"], diff))
            elif line.get("within_tolerance") and diff < before:  # issue 20: named by its count entry and line
                shorts.append((e, line, f"{e['seq']}/{i + 1}", diff - min(before, Decimal(0))))
    if len(shorts) < policy.loss_pattern_count:
        return None
    counted_by: dict[str, int] = defaultdict(int)
    for e, _, _, _ in shorts:
        for who in signers(e):
            counted_by[who] += 1
    total = sum((new for _, _, _, new in shorts), Decimal("0.00"))
    within = [ref for _, line, ref, _ in shorts if not line.get("discrepancy_id")]
    within_ml = sum((new for _, line, _, new in shorts if not line.get("discrepancy_id")), Decimal("0.00"))
    return Candidate(
        alert_key=f"loss_pattern:{shorts[-1][2]}", rule="loss_pattern", severity="high", subjects=(),
        summary=(f"{len(shorts)} count shortages totalling {-total} mL in the last {policy.loss_pattern_days} days"
                 + (f" ({len(within)} of them within the opened-vial tolerance, {-within_ml} mL)" if within else "")
                 + ": a pattern of small losses may be a significant loss (report within one business day if so)"),
        parameters=policy.params("loss_pattern_count", "loss_pattern_days"),
        evidence_seqs=tuple(dict.fromkeys(e["seq"] for e, _, _, _ in shorts)),
        figures={"shortages": str(len(shorts)), "total_ml": str(total),
                 "discrepancies": " ".join(line["discrepancy_id"] for _, line, _, _ in shorts if line.get("discrepancy_id")),
                 "counted_by": " ".join(f"{k}:{v}" for k, v in sorted(counted_by.items())),
                 # issue 20: shortages within the tolerance, as "<count entry>/<line>" (only when any)
                 **({"within_tolerance": " ".join(within), "within_tolerance_ml": str(within_ml)} if within else {})},
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
        elif e["kind"] == "package_opened" and e.get("discrepancy_id"):  # issue 19: a carton opened short
            ml = Decimal(e["product"]["container_ml"])
            expected, found = ml * e["units_per_package"], ml * len(e["units_found"])
            out[e["discrepancy_id"]] = discrepancy_view(
                e["registrant"], e["discrepancy_id"], e["seq"], e["recorded_at"], e["product"]["ndc_key"],
                expected, found, found - expected, list(signers(e)))
        elif e["kind"] == "inventory_taken":  # issue 20: an inventory differing from the book
            for line in e.get("lines") or ():
                if line.get("discrepancy_id"):
                    out[line["discrepancy_id"]] = discrepancy_view(
                        e["registrant"], line["discrepancy_id"], e["seq"], e["recorded_at"], line["product"]["ndc_key"],
                        Decimal(line["expected_ml"]), Decimal(line["found_ml"]), Decimal(line["difference_ml"]),
                        list(signers(e)))
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
