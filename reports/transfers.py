"""Transfers and returns: every container that left the registrant to another registrant in the
period: to a practitioner (21 CFR 1307.11, the 5% rule), back to a supplier, or to a reverse
distributor (Part 1317): the recipient's name, address and DEA number (and the registration the
clinic checked, when the entry has it), the invoice, each container and who signed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, address_text, register
from reports.errors import ReportError
from reports.fmt import Period, amount, count, dec, local, num, volume
from reports.signers import by_meaning, others
from reports.source import Snapshot

ZERO = Decimal("0.00")
KINDS = ("stock_transferred", "stock_returned")
#: The type of each movement as printed (and as the per-NDC totals group it).
TYPES = {"transfer": "Transfer to a practitioner", "supplier": "Return to supplier",
         "reverse_distributor": "To a reverse distributor"}


def _type(e: dict[str, Any]) -> str:
    return "transfer" if e["kind"] == "stock_transferred" else e["recipient_type"]


def _recipient(e: dict[str, Any]) -> dict[str, Any]:
    """Who received the stock, from either entry shape; the registration the clinic checked
    (issue 19) and the supplier's DSCSA status where the entry records them (read with ``get``:
    entries recorded before have none)."""
    if e["kind"] == "stock_transferred":
        name, addr, dea, reg = e["receiver_name"], e["receiver_address"], e["receiver_dea_number"], \
            e.get("receiver_registration")
    else:
        name, addr, dea, reg = e["recipient_name"], e["recipient_address"], e["recipient_dea_number"], \
            e.get("recipient_registration")
    out: dict[str, Any] = {"name": name, "address": address_text(addr), "dea_number": dea,
                           "registration": ({"expires_on": reg["expires_on"], "schedules": list(reg["schedules"])}
                                            if reg else None)}
    if e["kind"] == "stock_returned":
        out["authorized_trading_partner"] = e.get("authorized_trading_partner")
    else:
        out["year_units"] = {"transfers": e.get("year_transfer_units"), "total": e.get("year_total_units")}
    return out


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """One row per container moved, in ledger order, and per-NDC totals by type."""
    rows: list[dict[str, Any]] = []
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    entries = 0
    for e in snap.entries:
        if e["kind"] not in KINDS or not period.contains(e["occurred_at"]):
            continue
        entries += 1
        kind = _type(e)
        recipient = _recipient(e)
        for n, v in enumerate(e["vials"]):
            p = v["product"]
            ml = dec(v["ml"])
            mg = ml * dec(p["strength_mg_per_ml"])
            rows.append({
                "seq": e["seq"], "line": n, "at": e["occurred_at"], "recorded_at": e["recorded_at"],
                "late_reason": e.get("late_reason"), "type": kind, "recipient": recipient,
                "invoice": e["invoice_number"], "vial_id": v["vial_id"], "package_id": v.get("package_id"),
                "ndc": p["ndc"], "drug": p["name"], "form": p["form"], "strength_mg_per_ml": p["strength_mg_per_ml"],
                "container_ml": p["container_ml"], "lot": v["lot"], "expiry": v["expiry"],
                "ml": volume(ml), "mg": amount(mg),
                "performed_by": by_meaning(e, "performed"), "witnessed_by": by_meaning(e, "witnessed"),
                "other_signers": others(e, "performed", "witnessed"),
            })
            t = totals.setdefault((p["ndc_key"], kind), {"ndc": p["ndc"], "drug": p["name"], "type": kind,
                                                         "containers": 0, "ml": ZERO, "mg": ZERO})
            t["containers"] += 1
            t["ml"] += ml
            t["mg"] += mg
    if not rows:
        raise ReportError(f"no stock was transferred or returned at {snap.state.registrant} from {period.start} to "
                          f"{period.end}; nothing to report", field="from/to")
    by_ndc = [{**t, "ml": volume(t["ml"]), "mg": amount(t["mg"])} for _, t in sorted(totals.items())]
    # mg of ketamine adds across products; mL of different strengths does not (issue 20), so the
    # total of all products carries containers and mg only.
    total = {"entries": entries, "containers": len(rows), "mg": amount(sum((dec(t["mg"]) for t in by_ndc), ZERO))}
    return {"rows": rows, "by_ndc": by_ndc, "total": total}


def breakable(vial_id: str) -> str:
    """A container id as printed: a GS1 identity "(01)<GTIN>(21)<serial>" is broken between its
    GTIN and its serial, so a narrow cell never wraps it in the middle of a number."""
    return vial_id.replace("(21)", "\n(21)", 1) if vial_id.startswith("(01)") else vial_id


def _recipient_text(r: dict[str, Any]) -> str:
    text = f"{r['name']}\n{r['address']}\nDEA {r['dea_number']}"
    reg = r.get("registration")
    if reg:
        text += f"\nRegistration checked: expires {reg['expires_on']}, schedules {', '.join(reg['schedules'])}"
    else:
        text += "\nRegistration: not recorded on this entry"
    atp = r.get("authorized_trading_partner")
    if atp is not None:
        text += f"\nDSCSA authorized trading partner: {'yes' if atp else 'NO'}"
    return text


def _type_text(row: dict[str, Any]) -> str:
    text = TYPES.get(row["type"], row["type"])
    units = row["recipient"].get("year_units") or {}
    if units.get("transfers") is not None and units.get("total") is not None:
        text += f"\n5% rule: {num(units['transfers'])} of {num(units['total'])} dosage units this year"
    return text


COLUMNS = [  # weights are points on Letter landscape; the layout scales them to the paper
    layout.Column("Date (local)", 52), layout.Column("Type", 62), layout.Column("Recipient: name, address, DEA", 112),
    layout.Column("Invoice", 44), layout.Column("NDC, drug, strength, container", 92),
    layout.Column("Lot / expiry", 48), layout.Column("Container", 92), layout.Column("mL", 38, "R"),
    layout.Column("mg", 44, "R"), layout.Column("Performed / witnessed", 102), layout.Column("Entry", 34, "R"),
]


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the transfers and returns report prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    rows, flagged = [], set()
    for i, r in enumerate(f["rows"]):
        first = r["line"] == 0
        when = local(r["at"], tz)
        if r["late_reason"]:
            when += f"\nLATE ENTRY, recorded {local(r['recorded_at'], tz)}: {r['late_reason']}"
            flagged.add(i)
        people = [f"{n} (performed)" for n in r["performed_by"]] + [f"{n} (witnessed)" for n in r["witnessed_by"]]
        container = breakable(r["vial_id"]) + (f"\nin package {r['package_id']}" if r.get("package_id") else "")
        # Later containers of the same entry repeat only what finds the entry (a row may open a
        # page): when, the type, the recipient's name and the invoice.
        rows.append([
            when, _type_text(r) if first else TYPES.get(r["type"], r["type"]),
            _recipient_text(r["recipient"]) if first else f"{r['recipient']['name']}\n(as above, same entry)",
            r["invoice"],
            f"{r['ndc']}\n{r['drug']}\n{num(r['strength_mg_per_ml'], 'mg/mL')}, {num(r['container_ml'], 'mL')} "
            "container",
            f"{r['lot']}\nexp {r['expiry']}", container, num(r["ml"], "mL"), num(r["mg"], "mg"),
            "\n".join(people + r["other_signers"]) if first else "",
            str(r["seq"]) if first else f"{r['seq']} line {r['line'] + 1}",
        ])
    t = f["total"]
    summary = layout.Table(
        [layout.Column("NDC", 12), layout.Column("Drug", 24), layout.Column("Type", 16),
         layout.Column("Containers", 8, "R"), layout.Column("mL", 9, "R"), layout.Column("mg", 10, "R")],
        [[b["ndc"], b["drug"], TYPES.get(b["type"], b["type"]), count(b["containers"]), num(b["ml"], "mL"),
          num(b["mg"], "mg")] for b in f["by_ndc"]]
        + [["All products", f"{t['entries']} entries", "", count(t["containers"]), "(per NDC)", num(t["mg"], "mg")]],
        title="Left the registrant in the period, per NDC and type", strong=frozenset({len(f["by_ndc"])}),
    )
    note = ("Every container transferred to another practitioner (21 CFR 1307.11), returned to a supplier or handed to "
            "a reverse distributor (21 CFR Part 1317) in the period, on its invoice. Volumes of different strengths "
            "are not added together; the total of all products is in mg. Times are local; 'Entry' is the ledger "
            "sequence number and line. Shaded rows are late entries, with the reason recorded.")
    return [layout.Para(note), summary, layout.Table(COLUMNS, rows, title="Containers", flagged=frozenset(flagged))]


KIND = register(ReportKind("transfers", "Transfers and returns", "landscape", compute, blocks))
