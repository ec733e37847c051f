"""Inventory record as 21 CFR 1304.11 lays it out: initial or biennial, taken at opening or close
of business, and per item the drug name, finished form and strength, volume per container and
number of containers. Sealed containers are counted exactly; an opened Schedule III-V container
may be estimated (1304.11(e)(3)), and estimates are marked. Lines for wet signatures follow,
because the paper inventory is signed by hand (the signed scan can be attached as a document).

Issue 20 (layout 2): a biennial or other inventory is compared with the book at that instant; the
record prints, per product, the book's figures, what was found, the difference, the vials on the
book not found and the discrepancy opened. Inventories recorded before issue 20 carry no
comparison and print without it (said so).
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
TAKEN_AT = {"opening_of_business": "opening of business", "close_of_business": "close of business"}


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Every inventory taken in the period, its lines (sealed grouped by NDC, lot and expiry;
    opened containers one line each) and per-NDC totals."""
    out = []
    for e in snap.entries:
        if e["kind"] != "inventory_taken" or not period.contains(e["occurred_at"]):
            continue
        groups: dict[tuple, dict[str, Any]] = {}
        lines: list[dict[str, Any]] = []
        for item in e["items"]:
            p = item["product"]
            ml = dec(item["ml"])
            base = {"ndc": p["ndc"], "drug": p["name"], "form": p["form"],
                    "strength_mg_per_ml": p["strength_mg_per_ml"], "container_ml": p["container_ml"],
                    "lot": item["lot"], "expiry": item["expiry"]}
            if item["sealed"]:
                key = (p["ndc_key"], item["lot"], item["expiry"])
                g = groups.get(key)
                if g is None:
                    g = groups[key] = {**base, "sealed": True, "estimated": False, "containers": 0,
                                       "ml": ZERO, "mg": ZERO, "vial_ids": [], "_key": p["ndc_key"]}
                    lines.append(g)
                g["containers"] += 1
                g["ml"] += ml
                g["mg"] += ml * dec(p["strength_mg_per_ml"])
                g["vial_ids"].append(item["vial_id"])
            else:
                lines.append({**base, "sealed": False, "estimated": bool(item["estimated"]), "containers": 1,
                              "ml": ml, "mg": ml * dec(p["strength_mg_per_ml"]), "vial_ids": [item["vial_id"]],
                              "_key": p["ndc_key"],
                              # issue 19: when it was first punctured (absent in older inventories)
                              "first_punctured_on": item.get("first_punctured_on"),
                              "first_puncture_estimated": bool(item.get("first_puncture_estimated")),
                              "beyond_use_date": item.get("beyond_use_date")})
        totals: dict[str, dict[str, Any]] = {}
        for ln in lines:
            t = totals.setdefault(ln["_key"], {"ndc": ln["ndc"], "drug": ln["drug"], "sealed_containers": 0,
                                               "opened_containers": 0, "ml": ZERO, "mg": ZERO,
                                               "estimated_ml": ZERO})
            t["sealed_containers" if ln["sealed"] else "opened_containers"] += ln["containers"]
            t["ml"] += ln["ml"]
            t["mg"] += ln["mg"]
            if ln["estimated"]:
                t["estimated_ml"] += ln["ml"]
        out.append({
            "seq": e["seq"], "inventory_type": e["inventory_type"], "taken_at": e["taken_at"],
            "occurred_at": e["occurred_at"], "recorded_at": e["recorded_at"], "late_reason": e.get("late_reason"),
            "signatures": [{"printed_name": s["printed_name"], "signed_at": s["signed_at"], "meaning": s["meaning"]}
                           for s in e["signatures"]],
            "lines": [{**{k: v for k, v in ln.items() if k != "_key"}, "ml": volume(ln["ml"]), "mg": amount(ln["mg"])}
                      for ln in lines],
            "by_ndc": [{**t, "ml": volume(t["ml"]), "mg": amount(t["mg"]), "estimated_ml": volume(t["estimated_ml"])}
                       for _, t in sorted(totals.items())],
            "total_mg": amount(sum((t["mg"] for t in totals.values()), ZERO)),
            # issue 20: the comparison with the book (None: recorded before inventories were compared)
            "reason": e.get("reason"),
            "compared": None if "lines" not in e else [{
                "ndc": ln["product"]["ndc"], "drug": ln["product"]["name"],
                "expected_sealed": ln["expected_sealed_containers"], "expected_opened": ln["expected_open_containers"],
                "expected_ml": volume(dec(ln["expected_ml"])), "found_sealed": ln["found_sealed_containers"],
                "found_opened": ln["found_open_containers"], "found_ml": volume(dec(ln["found_ml"])),
                "difference_ml": volume(dec(ln["difference_ml"])), "vials_not_found": list(ln["vials_not_found"]),
                "discrepancy_id": ln["discrepancy_id"]} for ln in e["lines"]],
        })
    if not out:
        raise ReportError(f"no inventory was taken at {snap.state.registrant} from {period.start} to {period.end}; "
                          "nothing to report", field="from/to")
    return {"inventories": out}


def _compared(inv: dict[str, Any]) -> list[layout.Block]:
    """Issue 20: the inventory against the book at that instant, per product."""
    if inv["inventory_type"] == "initial":
        return [layout.Para("An initial inventory creates the book: there was no book to compare it with.", size=8)]
    if inv.get("compared") is None:
        return [layout.Para("Recorded before inventories were compared with the book: no comparison on this entry.",
                            size=8)]
    rows, flagged = [], set()
    for i, c in enumerate(inv["compared"]):
        if c["discrepancy_id"]:
            flagged.add(i)
        rows.append([c["ndc"], c["drug"],
                     f"{count(c['expected_sealed'])} sealed\n{count(c['expected_opened'])} opened\n"
                     f"{num(c['expected_ml'], 'mL')}",
                     f"{count(c['found_sealed'])} sealed\n{count(c['found_opened'])} opened\n{num(c['found_ml'], 'mL')}",
                     num(c["difference_ml"], "mL"), ", ".join(c["vials_not_found"]) or "none",
                     c["discrepancy_id"] or "none"])
    opened = [c["discrepancy_id"] for c in inv["compared"] if c["discrepancy_id"]]
    note = (f"Discrepancies opened: {', '.join(opened)} (resolved through the discrepancy workflow)." if opened
            else "Everything found matches the book: no discrepancy opened.")
    return [layout.Table([layout.Column("NDC", 9), layout.Column("Drug name", 16), layout.Column("Book (expected)", 11),
                          layout.Column("Found", 11), layout.Column("Difference", 9, "R"),
                          layout.Column("On the book, not found", 16), layout.Column("Discrepancy", 9)],
                         rows, title="Compared with the book at the time of the inventory", flagged=frozenset(flagged)),
            layout.Para(note, bold=bool(opened), size=8)]


def _punctured(ln: dict[str, Any]) -> str:
    """An opened line of an initial inventory (issue 19): the day it was first punctured (marked
    when estimated) and its beyond-use date; nothing for older inventories and sealed lines."""
    if not ln.get("first_punctured_on"):
        return ""
    est = " est." if ln.get("first_puncture_estimated") else ""
    return f"\npunctured{est}\n{ln['first_punctured_on']}\nuse by\n{ln['beyond_use_date']}"


COLUMNS = [  # weights are points on Letter portrait; the layout scales them to the paper
    layout.Column("NDC", 60), layout.Column("Drug name", 66), layout.Column("Finished form and strength", 60),
    layout.Column("Volume per container", 42, "R"), layout.Column("Sealed or opened", 36),
    layout.Column("Number of containers", 46, "R"), layout.Column("Quantity (mL)", 44, "R"),
    layout.Column("Quantity (mg)", 50, "R"), layout.Column("Count", 50), layout.Column("Lot / expiry", 48),
    layout.Column("Container identities", 46),
]


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the inventory record prints, drawn only from the report data."""
    tz = data["registrant"]["time_zone"]
    out: list[layout.Block] = []
    for k, inv in enumerate(data["figures"]["inventories"]):
        if k:
            out.append(layout.PageBreak())
        kind = {"initial": "Initial", "biennial": "Biennial"}.get(inv["inventory_type"], "Other")
        out.append(layout.Heading(f"{kind} inventory taken at {TAKEN_AT[inv['taken_at']]}, "
                                  f"{local(inv['occurred_at'], tz)}"))
        details = (f"Taken at the {TAKEN_AT[inv['taken_at']]} on {local(inv['occurred_at'], tz)}; recorded "
                   f"{local(inv['recorded_at'], tz)} by {', '.join(s['printed_name'] for s in inv['signatures'])} (ledger entry {inv['seq']}). "
                   "Sealed containers are counted exactly; opened containers of Schedule III-V substances are "
                   "estimated (21 CFR 1304.11(e)(3)) and marked ESTIMATED.")
        if inv.get("reason"):
            details += f" Taken because: {inv['reason']}."
        if inv["late_reason"]:
            details += f" LATE ENTRY: {inv['late_reason']}"
        out.append(layout.Para(details))
        out.extend(_compared(inv))
        if not inv["lines"]:
            out.append(layout.Para("No controlled substances on hand: this inventory is zero.", bold=True, size=9))
        else:
            rows = []
            estimated = set()
            for i, ln in enumerate(inv["lines"]):
                if ln["estimated"]:
                    estimated.add(i)
                rows.append([
                    ln["ndc"], ln["drug"], f"{ln['form']}, {num(ln['strength_mg_per_ml'], 'mg/mL')}",
                    num(ln["container_ml"], "mL"), "sealed" if ln["sealed"] else "opened",
                    count(ln["containers"]), num(ln["ml"], "mL"), num(ln["mg"], "mg"),
                    ("ESTIMATED" if ln["estimated"] else "exact") + _punctured(ln), f"{ln['lot']}\nexp {ln['expiry']}",
                    ", ".join(ln["vial_ids"]),
                ])
            out.append(layout.Table(COLUMNS, rows, title="Items on hand", flagged=frozenset(estimated)))
            tot_rows = [[t["ndc"], t["drug"], count(t["sealed_containers"]), count(t["opened_containers"]),
                         num(t["ml"], "mL"), num(t["estimated_ml"], "mL"), num(t["mg"], "mg")] for t in inv["by_ndc"]]
            tot_rows.append(["All products", "", "", "", "", "", num(inv["total_mg"], "mg")])
            out.append(layout.Table(
                [layout.Column("NDC", 9), layout.Column("Drug name", 18), layout.Column("Sealed containers", 8, "R"),
                 layout.Column("Opened containers", 8, "R"), layout.Column("Total (mL)", 9, "R"),
                 layout.Column("of which estimated (mL)", 9, "R"), layout.Column("Total (mg)", 10, "R")],
                tot_rows, title="Totals per NDC", strong=frozenset({len(tot_rows) - 1})))
        out.append(layout.Signatures(
            signed=[(s["printed_name"], local(s["signed_at"], tz, seconds=True),
                     f"{s['meaning']} (electronic signature on the ledger entry)") for s in inv["signatures"]],
            wet=["inventory taken by", "witnessed by"], title=f"Signatures for inventory entry {inv['seq']}"))
    return out


KIND = register(ReportKind("inventory", "Inventory record (21 CFR 1304.11)", "portrait", compute, blocks,
                           wet_signatures=("reviewed",), layout=2))  # layout 2: issue 20, compared with the book
