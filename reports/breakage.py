"""Breakage and spills: every ``breakage_recorded`` entry in the period (issue 15): what happened,
the description, whether the drug was recoverable (set aside for destruction) or lost (off the
book), each container and mL, who recorded and who witnessed it, and the counts it explains after
the fact (counts recorded before it that were taken after the event).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, amount, count, dec, local, num, volume
from reports.signers import by_meaning, others
from reports.source import Snapshot

ZERO = Decimal("0.00")


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """One row per breakage or spill, with per-NDC mL lost and set aside."""
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    for e in snap.entries:
        if e["kind"] != "breakage_recorded" or not period.contains(e["occurred_at"]):
            continue
        lines = []
        for a in e["lines"]:
            p = a["product"]
            ml = dec(a["ml"])
            mg = ml * dec(p["strength_mg_per_ml"])
            lines.append({"vial_id": a["vial_id"], "ndc": p["ndc"], "ml": volume(ml), "mg": amount(mg),
                          "whole_vial": bool(a["whole_vial"])})
            t = totals.setdefault(p["ndc_key"], {"ndc": p["ndc"], "drug": p["name"], "containers": 0,
                                                 "lost_ml": ZERO, "set_aside_ml": ZERO, "mg": ZERO})
            t["containers"] += 1
            t["set_aside_ml" if e["recoverable"] else "lost_ml"] += ml
            t["mg"] += mg
        rows.append({
            "seq": e["seq"], "at": e["occurred_at"], "recorded_at": e["recorded_at"],
            "late_reason": e.get("late_reason"), "what": e["what"], "description": e["description"],
            "recoverable": bool(e["recoverable"]), "lines": lines,
            "ml": volume(sum((dec(x["ml"]) for x in lines), ZERO)),
            "mg": amount(sum((dec(x["mg"]) for x in lines), ZERO)),
            "recorded_by": by_meaning(e, "performed"), "witnessed_by": by_meaning(e, "witnessed"),
            "other_signers": others(e, "performed", "witnessed"),
            "after_counts": list(e.get("after_counts") or ()),
        })
    if not rows:
        raise ReportError(f"no breakage or spill was recorded at {snap.state.registrant} from {period.start} to "
                          f"{period.end}; nothing to report", field="from/to")
    by_ndc = [{**t, "lost_ml": volume(t["lost_ml"]), "set_aside_ml": volume(t["set_aside_ml"]), "mg": amount(t["mg"])}
              for _, t in sorted(totals.items())]
    total = {"events": len(rows), "containers": sum(t["containers"] for t in by_ndc),
             "mg": amount(sum((dec(t["mg"]) for t in by_ndc), ZERO))}
    return {"rows": rows, "by_ndc": by_ndc, "total": total}


COLUMNS = [
    layout.Column("Date (local)", 54), layout.Column("What", 50), layout.Column("Description", 150),
    layout.Column("Outcome", 78), layout.Column("Containers: id, NDC, mL", 128), layout.Column("mL", 40, "R"),
    layout.Column("mg", 44, "R"), layout.Column("Recorded / witnessed", 84), layout.Column("Explains counts", 56),
    layout.Column("Entry", 32, "R"),
]


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the breakage and spills report prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    rows, flagged = [], set()
    for i, r in enumerate(f["rows"]):
        when = local(r["at"], tz)
        if r["late_reason"]:
            when += f"\nLATE ENTRY, recorded {local(r['recorded_at'], tz)}: {r['late_reason']}"
            flagged.add(i)
        outcome = ("Recoverable: set aside (quarantined) for destruction" if r["recoverable"]
                   else "Not recoverable: off the book")
        containers = "\n".join(f"{x['vial_id']} ({x['ndc']}):\n{num(x['ml'], 'mL')}"
                               + (", whole container" if x["whole_vial"] else "") for x in r["lines"])
        people = [f"{n} (recorded)" for n in r["recorded_by"]] + [f"{n} (witnessed)" for n in r["witnessed_by"]]
        counts = ", ".join(f"entry {s}" for s in r["after_counts"]) or "none"
        rows.append([when, r["what"], r["description"], outcome, containers, num(r["ml"], "mL"), num(r["mg"], "mg"),
                     "\n".join(people + r["other_signers"]), counts, str(r["seq"])])
    t = f["total"]
    summary = layout.Table(
        [layout.Column("NDC", 12), layout.Column("Drug", 24), layout.Column("Containers", 8, "R"),
         layout.Column("mL lost (off the book)", 12, "R"), layout.Column("mL set aside", 10, "R"),
         layout.Column("mg", 10, "R")],
        [[b["ndc"], b["drug"], count(b["containers"]), num(b["lost_ml"], "mL"), num(b["set_aside_ml"], "mL"),
          num(b["mg"], "mg")] for b in f["by_ndc"]]
        + [["All products", f"{t['events']} events", count(t["containers"]), "(per NDC)", "(per NDC)",
            num(t["mg"], "mg")]],
        title="Broken or spilled in the period, per NDC", strong=frozenset({len(f["by_ndc"])}))
    note = ("Breakage and spills recorded at the time, each signed by the person who recorded it and a witness who saw "
            "it. Not recoverable: the mL left the book with the entry. Recoverable: the containers stay on hand, set "
            "aside, and leave later by destruction (DEA Form 41). 'Explains counts' names counts recorded before this "
            "entry but taken after the event, whose difference it explains after the fact. Shaded rows are late "
            "entries.")
    return [layout.Para(note), summary, layout.Table(COLUMNS, rows, title="Breakage and spills",
                                                     flagged=frozenset(flagged))]


KIND = register(ReportKind("breakage", "Breakage and spills", "landscape", compute, blocks))
