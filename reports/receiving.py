"""Receiving log: every receipt in the period with the elements of 21 CFR 1304.22(c) (drug name,
finished form and strength, container volume, containers, date received, supplier name, address
and DEA number) plus the invoice, NDC, lot, expiry, each container's identity and who received.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, address_text, register
from reports.errors import ReportError
from reports.fmt import Period, amount, count, dec, local, num
from reports.source import Snapshot

ZERO = Decimal("0.00")


def _signers(entry: dict[str, Any], meaning: str) -> list[str]:
    names = [s["printed_name"] for s in entry["signatures"] if s["meaning"] == meaning]
    return names or [s["printed_name"] for s in entry["signatures"]]


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Rows and per-NDC totals of the receipts whose event time falls in the period."""
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    for e in snap.entries:
        if e["kind"] != "stock_received" or not period.contains(e["occurred_at"]):
            continue
        sup = e["supplier"]
        for n, line in enumerate(e["lines"]):
            p = line["product"]
            ml = dec(p["container_ml"]) * line["containers"]
            mg = ml * dec(p["strength_mg_per_ml"])
            rows.append({
                "seq": e["seq"], "line": n, "received_at": e["occurred_at"], "recorded_at": e["recorded_at"],
                "late_reason": e.get("late_reason"), "invoice": e["invoice_number"],
                "supplier": {"name": sup["name"], "address": address_text(sup["address"]), "dea_number": sup["dea_number"]},
                "ndc": p["ndc"], "drug": p["name"], "form": p["form"], "strength_mg_per_ml": p["strength_mg_per_ml"],
                "container_ml": p["container_ml"], "containers": line["containers"],
                "total_ml": amount(ml), "total_mg": amount(mg), "lot": line["lot"], "expiry": line["expiry"],
                "vial_ids": list(line["vial_ids"]), "received_by": _signers(e, "received"),
                "notes": e.get("notes", ""),
                # Issue 20: the invoice's count beside the count received (None: not given). Read
                # with ``get``: receipts recorded before these fields have none.
                "invoiced_containers": line.get("invoiced_containers"),
                "packages": line.get("packages"), "invoiced_packages": line.get("invoiced_packages"),
            })
            t = totals.setdefault(p["ndc_key"], {"ndc": p["ndc"], "drug": p["name"], "containers": 0,
                                                 "total_ml": ZERO, "total_mg": ZERO})
            t["containers"] += line["containers"]
            t["total_ml"] += ml
            t["total_mg"] += mg
    if not rows:
        raise ReportError(f"no stock was received at {snap.state.registrant} from {period.start} to {period.end}; "
                          "nothing to report", field="from/to")
    by_ndc = [{**t, "total_ml": amount(t["total_ml"]), "total_mg": amount(t["total_mg"])}
              for _, t in sorted(totals.items())]
    grand = {"containers": sum(t["containers"] for t in by_ndc),
             "total_ml": amount(sum((dec(t["total_ml"]) for t in by_ndc), ZERO)),
             "total_mg": amount(sum((dec(t["total_mg"]) for t in by_ndc), ZERO)),
             "receipts": len({r["seq"] for r in rows})}
    return {"rows": rows, "by_ndc": by_ndc, "total": grand}


COLUMNS = [  # weights are points on Letter landscape; the layout scales them to the paper
    layout.Column("Received (event time)", 54), layout.Column("Invoice", 50),
    layout.Column("Supplier: name, address, DEA", 84), layout.Column("NDC, drug, form and strength", 86),
    layout.Column("Container", 44, "R"), layout.Column("Invoiced", 40, "R"), layout.Column("Received", 46, "R"),
    layout.Column("Total mL", 46, "R"), layout.Column("Total mg", 58, "R"),
    layout.Column("Lot / expiry", 48), layout.Column("Container identities", 82),
    layout.Column("Received by", 58), layout.Column("Entry (seq)", 34, "R"),
]


def mismatch(r: dict[str, Any]) -> str | None:
    """Why the count received differs from the invoice (containers, or packages where the line
    was received in packages), or None: they agree, or the invoice's count was not given."""
    inv, got = r.get("invoiced_containers"), r["containers"]
    if inv is not None and inv != got:
        return f"MISMATCH\n{count(abs(got - inv))} {'short' if got < inv else 'over'}"
    inv_p, got_p = r.get("invoiced_packages"), r.get("packages")
    if inv_p is not None and got_p is not None and inv_p != got_p:
        return f"MISMATCH\n{count(abs(got_p - inv_p), 'pkg')} {'short' if got_p < inv_p else 'over'}"
    return None


def _invoiced(r: dict[str, Any]) -> str:
    parts = []
    if r.get("invoiced_packages") is not None:
        parts.append(count(r["invoiced_packages"], "pkg"))
    if r.get("invoiced_containers") is not None:
        parts.append(count(r["invoiced_containers"]))
    return "\n".join(parts) or "not given"


def _received(r: dict[str, Any]) -> str:
    text = count(r["containers"])
    if r.get("packages") is not None:
        text = f"{count(r['packages'], 'pkg')}\n{text}"
    why = mismatch(r)
    return f"{text}\n{why}" if why else text


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the receiving log prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    rows = []
    flagged = set()
    for i, r in enumerate(f["rows"]):
        when = local(r["received_at"], tz)
        if r["late_reason"]:
            when += f"\nLATE ENTRY, recorded {local(r['recorded_at'], tz)}: {r['late_reason']}"
            flagged.add(i)
        if mismatch(r):
            flagged.add(i)
        s = r["supplier"]
        rows.append([
            when, r["invoice"], f"{s['name']}\n{s['address']}\nDEA {s['dea_number']}",
            f"{r['ndc']}\n{r['drug']}\n{r['form']}, {num(r['strength_mg_per_ml'], 'mg/mL')}",
            num(r["container_ml"], "mL"), _invoiced(r), _received(r), num(r["total_ml"], "mL"),
            num(r["total_mg"], "mg"),
            f"{r['lot']}\nexp {r['expiry']}", ", ".join(r["vial_ids"]), "\n".join(r["received_by"]),
            str(r["seq"]) if r["line"] == 0 else f"{r['seq']} line {r['line'] + 1}",
        ])
    t = f["total"]
    # mL of 10 mg/mL and of 50 mg/mL are different amounts of drug (issue 20, as the audit's
    # total): across products only mg adds up; mL only when every product has one strength.
    same_ml = len({dec(r["strength_mg_per_ml"]) for r in f["rows"]}) <= 1
    summary = layout.Table(
        [layout.Column("NDC", 10), layout.Column("Drug", 22), layout.Column("Containers", 8, "R"),
         layout.Column("Total mL", 9, "R"), layout.Column("Total mg", 10, "R")],
        [[b["ndc"], b["drug"], count(b["containers"]), num(b["total_ml"], "mL"), num(b["total_mg"], "mg")]
         for b in f["by_ndc"]]
        + [["All products", f"{t['receipts']} receipts" + ("" if same_ml else " (in mg: mL of different "
                                                            "strengths do not add up)"),
            count(t["containers"]), num(t["total_ml"], "mL") if same_ml else "-", num(t["total_mg"], "mg")]],
        title="Received in the period, per NDC", strong=frozenset({len(f["by_ndc"])}),
    )
    note = ("Schedule III controlled substances are received on invoices (DEA Form 222 is for Schedules I and II). "
            "Times are the event times in the registrant's time zone; 'Entry' is the ledger sequence number and "
            "line. 'Invoiced' is the count on the supplier's invoice, beside the count received; shaded rows are "
            "late entries, with the reason recorded, and receipts whose count differs from the invoice.")
    return [layout.Para(note), summary,
            layout.Table(COLUMNS, rows, title="Receipts", flagged=frozenset(flagged))]


#: Layout 2 (issue 20): invoiced beside received, mismatches flagged. Layout 3 (issue 20, one
#: period): the all-products row adds mg only when strengths differ.
KIND = register(ReportKind("receiving", "Receiving log", "landscape", compute, blocks, layout=3))
