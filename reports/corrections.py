"""Corrections: every ``entry_corrected`` entry in the period: the entry it corrects (sequence
number, kind and event time), the reason, each compensating line (container, direction, mL) and
who recorded and who approved it. A correction never edits; this is the list an inspector reads
beside the entries it corrects.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, count, dec, local, num, volume
from reports.signers import by_meaning, others
from reports.source import Snapshot

ZERO = Decimal("0.00")


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """One row per correction in ledger order, with mL added back and removed per NDC."""
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    for e in snap.entries:
        if e["kind"] != "entry_corrected" or not period.contains(e["occurred_at"]):
            continue
        target = e["corrects_seq"]
        corrected = snap.entries[target] if 0 <= target < len(snap.entries) else None
        lines = []
        for ln in e["lines"]:
            p = ln["product"]
            lines.append({"vial_id": ln["vial_id"], "ndc": p["ndc"], "direction": ln["direction"],
                          "ml": volume(dec(ln["ml"]))})
            t = totals.setdefault(p["ndc_key"], {"ndc": p["ndc"], "drug": p["name"], "added_ml": ZERO,
                                                 "removed_ml": ZERO, "lines": 0})
            t["added_ml" if ln["direction"] == "add" else "removed_ml"] += dec(ln["ml"])
            t["lines"] += 1
        rows.append({
            "seq": e["seq"], "at": e["occurred_at"], "recorded_at": e["recorded_at"],
            "corrects_seq": target, "corrects_kind": e["corrects_kind"],
            "corrects_at": corrected["occurred_at"] if corrected else None,
            "reason": e["reason"], "lines": lines,
            "recorded_by": by_meaning(e, "performed"), "approved_by": by_meaning(e, "approved"),
            "other_signers": others(e, "performed", "approved"),
        })
    if not rows:
        raise ReportError(f"no entry was corrected at {snap.state.registrant} from {period.start} to {period.end}; "
                          "nothing to report", field="from/to")
    by_ndc = [{**t, "added_ml": volume(t["added_ml"]), "removed_ml": volume(t["removed_ml"])}
              for _, t in sorted(totals.items())]
    return {"rows": rows, "by_ndc": by_ndc, "total": {"corrections": len(rows),
                                                       "with_quantities": sum(1 for r in rows if r["lines"])}}


COLUMNS = [
    layout.Column("Date (local)", 56), layout.Column("Corrects entry", 92), layout.Column("Reason", 170),
    layout.Column("Compensating lines: container, direction, mL", 170), layout.Column("Recorded by", 80),
    layout.Column("Approved by", 80), layout.Column("Entry", 36, "R"),
]


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the corrections report prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    rows = []
    for r in f["rows"]:
        when = local(r["at"], tz)
        if r["recorded_at"] != r["at"]:
            when += f"\nrecorded {local(r['recorded_at'], tz)}"
        target = f"entry {r['corrects_seq']}\n{r['corrects_kind']}"
        if r["corrects_at"]:
            target += f"\nof {local(r['corrects_at'], tz)}"
        # the container id on a line of its own: a long GS1 id then wraps only if it must
        lines = "\n".join(f"{ln['vial_id']} ({ln['ndc']}):\n{'back into' if ln['direction'] == 'add' else 'out of'} "
                          f"the container: {num(ln['ml'], 'mL')}" for ln in r["lines"]) or "none (no quantity changed)"
        removes = any(ln["direction"] == "remove" for ln in r["lines"])
        rows.append([when, target, r["reason"], lines, "\n".join(r["recorded_by"] + r["other_signers"]),
                     "\n".join(r["approved_by"]) or ("(none)" if removes else "(none needed: nothing left the book)"),
                     str(r["seq"])])
    t = f["total"]
    out: list[layout.Block] = [layout.Para(
        "Every correction recorded in the period. A correction never edits an entry: it names the entry it corrects, "
        "says why, and carries the compensating quantities ('back into' a container adds to the book, 'out of' "
        "removes from it). A correction that takes stock off the book is approved by a second person. "
        f"{count(t['corrections'])} corrections, {count(t['with_quantities'])} with quantities.")]
    if f["by_ndc"]:
        out.append(layout.Table(
            [layout.Column("NDC", 12), layout.Column("Drug", 26), layout.Column("Lines", 7, "R"),
             layout.Column("mL back into containers", 12, "R"), layout.Column("mL out of containers", 12, "R")],
            [[b["ndc"], b["drug"], count(b["lines"]), num(b["added_ml"], "mL"), num(b["removed_ml"], "mL")]
             for b in f["by_ndc"]], title="Quantities corrected, per NDC"))
    out.append(layout.Table(COLUMNS, rows, title="Corrections"))
    return out


KIND = register(ReportKind("corrections", "Corrections", "landscape", compute, blocks))
