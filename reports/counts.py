"""Counts and discrepancies: each count in the period, who counted, expected against counted per
product, and each discrepancy with its resolution and approver; open discrepancies first.

Issue 20: an opened vial's mL are estimated, so a difference within the registrant's tolerance
(mL per opened vial, recorded in each count) is recorded and opens no discrepancy; each count
shows the tolerance it was held to and its within-tolerance lines are marked. Counts recorded
before the tolerance existed were exact.

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
                          "discrepancy_id": ln.get("discrepancy_id"),
                          # issue 20 (absent from counts recorded before the tolerance)
                          "tolerance_ml": ln.get("tolerance_ml"), "within_tolerance": bool(ln.get("within_tolerance")),
                          "open_vials": [dict(v) for v in ln.get("open_vials") or ()]})
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
                       "late_reason": e.get("late_reason"), "lines": lines,
                       "open_count_tolerance_ml": e.get("open_count_tolerance_ml")})  # issue 20
    if not counts:
        raise ReportError(f"no count was submitted at {snap.state.registrant} from {period.start} to {period.end}; "
                          "nothing to report", field="from/to")
    # open first, then by count time
    discrepancies.sort(key=lambda d: (d["status"] != "open", d["counted_at"], d["id"]))
    return {"counts": counts, "discrepancies": discrepancies,
            "open": sum(1 for d in discrepancies if d["status"] == "open"),
            "within_tolerance": sum(1 for c in counts for ln in c["lines"] if ln["within_tolerance"])}


def _vial(vial_id: str) -> str:
    """A vial as printed in a narrow column: a serialized vial's GS1 id "(01)<GTIN>(21)<serial>"
    by its serial, what the carton and vial labels print (the GTIN is the line's product)."""
    return "serial " + vial_id.split("(21)", 1)[1] if vial_id.startswith("(01)") and "(21)" in vial_id else vial_id


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the report prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    out: list[layout.Block] = [layout.Para(
        f"{len(f['counts'])} count(s) in the period; {len(f['discrepancies'])} discrepancy(ies), {f['open']} OPEN "
        "(listed first, shaded). Differences are counted minus expected; the expected figure is the book when the "
        "count was submitted, hidden from the counters in a blind count. Opened vials are estimated: a difference "
        "within the tolerance in force (mL per opened vial, shown with each count) is recorded, marked WITHIN "
        f"TOLERANCE and opens no discrepancy ({f.get('within_tolerance', 0)} line(s) in the period); sealed vials, "
        "and the number of vials, are counted exactly.")]
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
            if dec(ln["difference_ml"]) != 0 and not ln.get("within_tolerance"):
                flagged.add(len(rows))
            when = f"{local(c['at'], tz)}\n{'blind' if c['blind'] else 'open'} count, entry {c['seq']}"
            # issue 20: the tolerance the count was held to (none recorded before it existed: exact)
            tol = c.get("open_count_tolerance_ml")
            when += f"\ntolerance {num(tol, 'mL')} per opened vial" if tol is not None else "\nexact (no tolerance)"
            if c["late_reason"]:
                when += f"\nLATE ENTRY: {c['late_reason']}"
            counted = f"{count(ln['sealed'])} sealed, {count(ln['opened'])} opened\n{num(ln['counted_ml'], 'mL')}"
            for v in ln.get("open_vials") or ():  # issue 20: the opened vials named one by one
                counted += f"\n{_vial(v['vial_id'])}: {num(v['counted_ml'], 'mL')} (book {num(v['expected_ml'], 'mL')})"
            outcome = ln["discrepancy_id"] or ""
            if ln.get("within_tolerance"):
                outcome = f"WITHIN TOLERANCE\n(\u00b1{num(ln['tolerance_ml'], 'mL')}): no discrepancy"
            rows.append([when, "\n".join(c["counted_by"]), f"{ln['ndc']}\n{ln['drug']}",
                         f"{count(ln['expected_sealed'])} sealed, {count(ln['expected_opened'])} opened\n"
                         f"{num(ln['expected_ml'], 'mL')}",
                         counted, num(ln["difference_ml"], "mL"), outcome])
    out.append(layout.Table(
        [layout.Column("Count", 84), layout.Column("Counted by", 70), layout.Column("Product", 90),
         layout.Column("Expected", 84, "R"), layout.Column("Counted", 84, "R"), layout.Column("Difference", 52, "R"),
         layout.Column("Discrepancy", 56)], rows, title="Counts (shaded: a discrepancy opened)",
        flagged=frozenset(flagged)))
    return out


# layout 2 (issue 20): the tolerance in force per count, within-tolerance lines marked (not shaded),
# the opened vials a count named.
KIND = register(ReportKind("counts", "Counts and discrepancies", "landscape", compute, blocks, layout=2))
