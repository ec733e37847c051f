"""The overview page's read model (issue 21): stock per product over time, weekly use and waste
share, open discrepancies by age and the deadlines coming up, for the last 12 weeks in the
registrant's local time. Read-only queries over the entries and their projections, in one read
transaction; every quantity stays ``Decimal``.

Stock comes from ``entry_movements``: the movements ``ledger.domain.projections.movements``
finds in each entry, copied out when it was appended (``verify --deep`` rebuilds them), so a
balance is a running sum, not a JSON scan of every entry.
"""

from __future__ import annotations

import json
import zoneinfo
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ledger.integrity.canonical import decode, parse_time
from ledger.storage.store import Ledger, entries_t, movements_t, projection_tables

WEEKS = 12
DEADLINE_DAYS = 45
ZERO = Decimal("0.00")
#: Open discrepancies by age in whole days since the count that found them.
AGE_BUCKETS = (("0–1 day", 0, 1), ("2–7 days", 2, 7), ("8–30 days", 8, 30), ("over 30 days", 31, None))
#: Entry kinds whose product mL was given to a patient, and which field holds it.
ADMINISTERED = {"dose_administered": "ml_given", "preparation_infused": "product_ml_given"}
#: Entry kinds whose product mL was wasted (witnessed), and which field holds it.
WASTED = {"dose_wasted": "ml", "preparation_wasted": "product_ml"}
#: A theft or loss report's deadlines, and the entry kind that meets each.
LOSS_DEADLINES = (("notice_due_at", "Written notice to the DEA field office", "dea_notice_sent"),
                  ("form_106_due_at", "DEA Form 106", "form_106_filed"))


def _dec(v: Any) -> Decimal:
    return Decimal(str(v))


def window(now: datetime, tz: zoneinfo.ZoneInfo) -> tuple[datetime, list[datetime]]:
    """The 12 local weeks ending with this one: the start of each (Monday 00:00 local time,
    whatever the UTC offset that day) and ``now`` as the end."""
    local = now.astimezone(tz)
    monday = (local - timedelta(days=local.weekday())).date()
    starts = [datetime.combine(monday - timedelta(weeks=WEEKS - 1 - i), datetime.min.time(), tz)
              for i in range(WEEKS)]
    return local, starts


def _week_of(t: datetime, starts: list[datetime]) -> int | None:
    if t < starts[0]:
        return None
    i = 0
    while i + 1 < len(starts) and t >= starts[i + 1]:
        i += 1
    return i


def overview(ledger: Ledger, dea: str, now: datetime, tz: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """Everything the overview page draws, as figures: ``stock`` (per product: the balance at
    the window's start and each change after), ``weeks`` (administered and wasted mL, waste
    share), ``ages`` (open discrepancies per age bucket) and ``deadlines`` (sorted by due time)."""
    local_now, starts = window(now, tz)
    products_t = projection_tables["products"]
    disc_t = projection_tables["discrepancies"]
    alerts_t = projection_tables["alerts"]
    kinds = [*ADMINISTERED, *WASTED, "theft_or_loss_reported", *(k for _, _, k in LOSS_DEADLINES)]
    with ledger.reading() as c:
        names = {r.ndc_key: (r.name, r.ndc) for r in c.execute(
            sa.select(products_t.c.ndc_key, products_t.c.name, products_t.c.ndc).where(products_t.c.registrant == dea))}
        moves = c.execute(sa.select(movements_t.c.ndc_key, movements_t.c.ml, entries_t.c.occurred_at, entries_t.c.seq)
                          .join(entries_t, sa.and_(entries_t.c.registrant == movements_t.c.registrant,
                                                   entries_t.c.seq == movements_t.c.seq))
                          .where(movements_t.c.registrant == dea)
                          .order_by(entries_t.c.seq, movements_t.c.line)).all()
        use_rows = c.execute(sa.select(entries_t.c.seq, entries_t.c.kind, entries_t.c.canonical)
                             .where(entries_t.c.registrant == dea, entries_t.c.kind.in_(kinds))
                             .order_by(entries_t.c.seq)).all()
        discs = c.execute(sa.select(disc_t.c.discrepancy_id, disc_t.c.ndc_key, disc_t.c.difference_ml,
                                    entries_t.c.occurred_at)
                          .join(entries_t, sa.and_(entries_t.c.registrant == disc_t.c.registrant,
                                                   entries_t.c.seq == disc_t.c.count_seq))
                          .where(disc_t.c.registrant == dea, disc_t.c.status == "open")
                          .order_by(disc_t.c.count_seq, disc_t.c.discrepancy_id)).all()
        alerts = c.execute(sa.select(alerts_t.c.alert_id, alerts_t.c.summary, alerts_t.c.deadlines, alerts_t.c.status)
                           .where(alerts_t.c.registrant == dea, alerts_t.c.status != "resolved")
                           .order_by(alerts_t.c.raised_seq)).all()
    return {
        "now": local_now, "starts": starts,
        "stock": _stock(moves, names, starts[0], tz),
        "weeks": _weeks(use_rows, starts),
        "ages": _ages(discs, now, names),
        "deadlines": _deadlines(use_rows, alerts, now, tz),
    }


def _stock(moves, names, start: datetime, tz: zoneinfo.ZoneInfo) -> list[dict[str, Any]]:
    """Per product: the balance when the window opens, then (local time, change, balance) at each
    movement inside it, in the order they happened (seq breaks ties at the same time)."""
    by: dict[str, list[tuple[datetime, int, Decimal]]] = defaultdict(list)
    for ndc_key, ml, occurred, seq in moves:
        by[ndc_key].append((parse_time(occurred), seq, _dec(ml)))
    out = []
    for ndc_key in sorted(by, key=lambda k: (names.get(k, (k, k))[0], k)):
        rows = sorted(by[ndc_key], key=lambda r: (r[0], r[1]))
        opening = sum((ml for t, _, ml in rows if t < start), ZERO)
        balance, steps = opening, []
        for t, seq, ml in rows:
            if t < start:
                continue
            balance += ml
            if steps and steps[-1]["at"] == t:  # one entry's several vials: one step
                steps[-1].update(change=steps[-1]["change"] + ml, balance=balance)
            else:
                steps.append({"at": t, "local": t.astimezone(tz), "seq": seq, "change": ml, "balance": balance})
        name, ndc = names.get(ndc_key, (ndc_key, ndc_key))
        out.append({"ndc_key": ndc_key, "name": name, "ndc": ndc, "opening": opening, "steps": steps,
                    "balance": balance})
    return out


def _weeks(use_rows, starts: list[datetime]) -> list[dict[str, Any]]:
    weeks = [{"start": s, "administered": ZERO, "wasted": ZERO} for s in starts]
    for _seq, kind, canonical in use_rows:
        if kind not in ADMINISTERED and kind not in WASTED:
            continue
        e = decode(bytes(canonical))
        i = _week_of(parse_time(e["occurred_at"]), starts)
        if i is None:
            continue
        if kind in ADMINISTERED:
            weeks[i]["administered"] += _dec(e.get(ADMINISTERED[kind], "0"))
        else:
            weeks[i]["wasted"] += _dec(e.get(WASTED[kind], "0"))
    for w in weeks:
        total = w["administered"] + w["wasted"]
        # the share of what left the vials for patients that was wasted; no use, no share
        w["waste_pct"] = (w["wasted"] * 100 / total).quantize(Decimal("0.1")) if total else None
    return weeks


def _ages(discs, now: datetime, names) -> list[dict[str, Any]]:
    buckets = [{"label": label, "low": low, "high": high, "items": []} for label, low, high in AGE_BUCKETS]
    for did, ndc_key, diff, occurred in discs:
        days = (now - parse_time(occurred)).days
        for b in buckets:
            if days >= b["low"] and (b["high"] is None or days <= b["high"]):
                b["items"].append({"discrepancy_id": did, "product": names.get(ndc_key, (ndc_key,))[0],
                                   "difference_ml": _dec(diff), "days": days})
                break
    for b in buckets:
        b["count"] = len(b["items"])
    return buckets


#: Deadlines a theft/loss alert carries (``alerts.deadlines.loss_deadlines``): the same as its
#: report's, which the list takes from the report itself (until the notice or filing is recorded).
LOSS_ALERT_DEADLINES = frozenset({"dea_notice", "form_106"})


def _deadlines(use_rows, alerts, now: datetime, tz: zoneinfo.ZoneInfo) -> list[dict[str, Any]]:
    """Open alerts' deadlines and each theft or loss report's notice and Form 106 deadlines not
    yet met, due within 45 days (overdue ones too: they matter most), sorted by due time."""
    horizon = now + timedelta(days=DEADLINE_DAYS)
    out: list[dict[str, Any]] = []

    def add(due_text: Any, what: str, source: str, link: str) -> None:
        try:
            due = parse_time(due_text)
        except (TypeError, ValueError):
            return  # not a time: nothing to put on a calendar
        if due <= horizon:
            out.append({"due": due, "local": due.astimezone(tz), "what": what, "source": source, "link": link,
                        "overdue": due < now})

    for alert_id, summary, deadlines, _status in alerts:
        try:
            named = json.loads(deadlines or "{}")
        except ValueError:
            continue
        for name, due in sorted(named.items()) if isinstance(named, dict) else ():
            if name in LOSS_ALERT_DEADLINES:
                continue  # the report's own notice and Form 106 deadlines are listed below, once
            add(due, f"{summary} ({str(name).replace('_', ' ')})", f"Alert {alert_id}", f"alerts#alert-{alert_id}")
    reports, met = {}, defaultdict(set)
    for seq, kind, canonical in use_rows:
        if kind == "theft_or_loss_reported":
            reports[seq] = decode(bytes(canonical))
        elif kind in {k for _, _, k in LOSS_DEADLINES}:
            met[kind].add(decode(bytes(canonical)).get("loss_report_seq"))
    for seq, e in reports.items():
        for field, what, meets in LOSS_DEADLINES:
            if seq not in met[meets]:
                add(e.get(field), what, f"Theft or loss report #{seq}", f"entries/{seq}")
    out.sort(key=lambda d: (d["due"], d["what"]))
    return out
