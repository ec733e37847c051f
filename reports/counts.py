"""Counts and discrepancies: each count in the period, who counted, expected against counted per
product, and each discrepancy with its resolution and approver; open discrepancies first.

A discrepancy counts as resolved when a ``discrepancy_resolved`` entry exists anywhere in the
ledger up to the report's tree size (a resolution after the period still closes it: the report
says when). Loss adjustments that took a resolved difference off the book are listed with it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, amount, count, dec, local, num, volume
from reports.source import Snapshot

ZERO = Decimal("0.00")


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Counts in the period and the discrepancies they opened, with resolutions."""
    resolutions: dict[str, dict[str, Any]] = {}
    adjustments: dict[str, Decimal] = {}
    for e in snap.entries:
        if e["kind"] == "discrepancy_resolved":
            approver = [s["printed_name"] for s in e["signatures"] if s["meaning"] == "approved"]
            resolutions[e["discrepancy_id"]] = {"seq": e["seq"], "at": e["occurred_at"], "category": e["category"],
                                                "explanation": e["explanation"], "approved_by": approver,
                                                "fixed_by_seq": e.get("fixed_by_seq")}
        elif e["kind"] == "loss_adjusted":
            adjustments[e["discrepancy_id"]] = adjustments.get(e["discrepancy_id"], ZERO) + sum(
                (dec(a["ml"]) for a in e["adjustments"]), ZERO)
    counts, discrepancies = [], []
    for e in snap.entries:
        if e["kind"] != "stock_counted" or not period.contains(e["occurred_at"]):
            continue
        lines = []
        for ln in e["lines"]:
            p = ln["product"]
            lines.append({"ndc": p["ndc"], "drug": p["name"], "sealed": ln["sealed_containers"],
                          "opened": ln["open_containers"], "counted_ml": ln["counted_ml"],
                          "expected_sealed": ln["expected_sealed_containers"],
                          "expected_opened": ln["expected_open_containers"], "expected_ml": ln["expected_ml"],
                          "difference_ml": ln["difference_ml"],
                          "difference_mg": amount(dec(ln["difference_ml"]) * dec(p["strength_mg_per_ml"])),
                          "discrepancy_id": ln.get("discrepancy_id")})
            if ln.get("discrepancy_id"):
                r = resolutions.get(ln["discrepancy_id"])
                discrepancies.append({
                    "id": ln["discrepancy_id"], "count_seq": e["seq"], "counted_at": e["occurred_at"],
                    "ndc": p["ndc"], "drug": p["name"], "expected_ml": ln["expected_ml"], "counted_ml": ln["counted_ml"],
                    "difference_ml": ln["difference_ml"], "difference_mg": lines[-1]["difference_mg"],
                    "status": "resolved" if r else "open", "resolution": r,
                    "loss_adjusted_ml": volume(adjustments[ln["discrepancy_id"]]) if ln["discrepancy_id"] in adjustments
                    else None,
                })
        counts.append({"seq": e["seq"], "at": e["occurred_at"], "session_id": e["session_id"], "blind": e["blind"],
                       "counted_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "counted"],
                       "late_reason": e.get("late_reason"), "lines": lines})
    if not counts:
        raise ReportError(f"no count was submitted at {snap.state.registrant} from {period.start} to {period.end}; "
                          "nothing to report", field="from/to")
    # open first, then by count time
    discrepancies.sort(key=lambda d: (d["status"] != "open", d["counted_at"], d["id"]))
    return {"counts": counts, "discrepancies": discrepancies,
            "open": sum(1 for d in discrepancies if d["status"] == "open")}


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the report prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    out: list[layout.Block] = [layout.Para(
        f"{len(f['counts'])} count(s) in the period; {len(f['discrepancies'])} discrepancy(ies), {f['open']} OPEN "
        "(listed first, shaded). Differences are counted minus expected; the expected figure is the book when the "
        "count was submitted, hidden from the counters in a blind count.")]
    if f["discrepancies"]:
        rows, open_rows = [], set()
        for i, d in enumerate(f["discrepancies"]):
            r = d["resolution"]
            if d["status"] == "open":
                open_rows.add(i)
                res = "OPEN"
            else:
                res = f"{r['category'].replace('_', ' ')}: {r['explanation']}"
                if r.get("fixed_by_seq") is not None:
                    res += f" (explained by entry {r['fixed_by_seq']})"
            rows.append([d["id"], f"{local(d['counted_at'], tz)}\n(entry {d['count_seq']})", f"{d['ndc']}\n{d['drug']}",
                         num(d["expected_ml"], "mL"), num(d["counted_ml"], "mL"),
                         f"{num(d['difference_ml'], 'mL')}\n{num(d['difference_mg'], 'mg')}", res,
                         "" if r is None else "\n".join(r["approved_by"]) + f"\n{local(r['at'], tz)}",
                         num(d["loss_adjusted_ml"], "mL") if d["loss_adjusted_ml"] else ""])
        out.append(layout.Table(
            [layout.Column("Discrepancy", 50), layout.Column("Count", 62), layout.Column("Product", 84),
             layout.Column("Expected", 46, "R"), layout.Column("Counted", 46, "R"), layout.Column("Difference", 52, "R"),
             layout.Column("Resolution", 140), layout.Column("Approved by, when", 72),
             layout.Column("Taken off the book", 48, "R")],
            rows, title="Discrepancies (open first)", flagged=frozenset(open_rows)))
    rows, flagged = [], set()
    for c in f["counts"]:
        for ln in c["lines"]:
            if dec(ln["difference_ml"]) != 0:
                flagged.add(len(rows))
            when = f"{local(c['at'], tz)}\n{'blind' if c['blind'] else 'open'} count, entry {c['seq']}"
            if c["late_reason"]:
                when += f"\nLATE ENTRY: {c['late_reason']}"
            rows.append([when, "\n".join(c["counted_by"]), f"{ln['ndc']}\n{ln['drug']}",
                         f"{count(ln['expected_sealed'])} sealed, {count(ln['expected_opened'])} opened\n"
                         f"{num(ln['expected_ml'], 'mL')}",
                         f"{count(ln['sealed'])} sealed, {count(ln['opened'])} opened\n{num(ln['counted_ml'], 'mL')}",
                         num(ln["difference_ml"], "mL"), ln["discrepancy_id"] or ""])
    out.append(layout.Table(
        [layout.Column("Count", 84), layout.Column("Counted by", 70), layout.Column("Product", 90),
         layout.Column("Expected", 84, "R"), layout.Column("Counted", 84, "R"), layout.Column("Difference", 52, "R"),
         layout.Column("Discrepancy", 56)], rows, title="Counts", flagged=frozenset(flagged)))
    return out


KIND = register(ReportKind("counts", "Counts and discrepancies", "landscape", compute, blocks))
