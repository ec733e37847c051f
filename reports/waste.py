"""Waste and destruction log, and a DEA Form 41 worksheet per destruction.

Waste is the remainder of an administered dose, recorded with the administration and witnessed
by a second person; it is not Form 41. Destruction of stock (expired, damaged, a vial's
remainder at its beyond-use date) is Form 41 (21 CFR 1317.95): per item NDC, batch, name,
strength, form, package size, full packages, partial amount, total destroyed; date, place and
method; printed names and signatures of two authorized employee witnesses.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, address_text, register
from reports.errors import ReportError
from reports.fmt import Period, amount, count, dec, local, num, volume
from reports.source import Snapshot

ZERO = Decimal("0.00")


def _sigs(e: dict[str, Any], meaning: str) -> list[dict[str, str]]:
    return [{"printed_name": s["printed_name"], "signed_at": s["signed_at"]} for s in e["signatures"]
            if s["meaning"] == meaning]


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Every waste and destruction whose event time is in the period."""
    wastes, destructions = [], []
    for e in snap.entries:
        if not period.holds(e):
            continue
        if e["kind"] == "dose_wasted":
            p = e["product"]
            wastes.append({"seq": e["seq"], "at": e["occurred_at"], "administration_id": e["administration_id"],
                           "administration_seq": e["administration_seq"], "ndc": p["ndc"], "drug": p["name"],
                           "ml": e["ml"], "mg": e["mg"], "method": e["method"], "late_reason": e.get("late_reason"),
                           "performed_by": _sigs(e, "performed"), "witnessed_by": _sigs(e, "witnessed")})
        elif e["kind"] == "preparation_wasted":  # issue 19: a diluted preparation's remainder
            p = e["product"]
            wastes.append({"seq": e["seq"], "at": e["occurred_at"], "administration_id": e["preparation_id"],
                           "administration_seq": e["preparation_seq"], "preparation_id": e["preparation_id"],
                           "ndc": p["ndc"], "drug": p["name"], "ml": e["product_ml"], "mg": e["mg"],
                           "method": e["method"], "late_reason": e.get("late_reason"),
                           "ml_remaining": e.get("ml_remaining"), "reason": e.get("reason"),
                           "performed_by": _sigs(e, "performed"), "witnessed_by": _sigs(e, "witnessed")})
        elif e["kind"] == "stock_destroyed":
            items = []
            full, partial, total_ml, total_mg = 0, ZERO, ZERO, ZERO
            for i in _form41_items(e["items"]):
                p = i["product"]
                items.append({"vial_id": i["vial_id"], "ndc": i["ndc"], "drug_code": p["drug_code"], "lot": i["lot"],
                              "drug": p["name"], "strength_mg_per_ml": p["strength_mg_per_ml"], "form": p["form"],
                              "package_ml": p["container_ml"], "full_package": i["full_package"],
                              "ml": i["ml"], "mg": i["mg"], "units": i["units"]})
                if i["full_package"]:
                    full += 1
                else:
                    partial += dec(i["ml"])
                total_ml += dec(i["ml"])
                total_mg += dec(i["mg"])
            rc = e["registrant_copy"]
            destructions.append({
                "seq": e["seq"], "at": e["occurred_at"], "registrant": {"name": rc["name"], "dea_number": rc["dea_number"],
                                                                        "address": address_text(rc["address"])},
                "items": items, "method": e["method"], "place": e["place"], "reason": e["reason"],
                "late_reason": e.get("late_reason"), "documents": list(e.get("documents") or ()),
                "performed_by": _sigs(e, "performed"), "witnessed_by": _sigs(e, "witnessed"),
                "full_packages": full, "partial_ml": volume(partial), "total_ml": volume(total_ml),
                "total_mg": amount(total_mg),
            })
    if not wastes and not destructions:
        raise ReportError(f"nothing was wasted or destroyed at {snap.state.registrant} from {period.start} to "
                          f"{period.end}; nothing to report", field="from/to")
    return {"wastes": wastes, "destructions": destructions,
            "total": {"wasted_ml": volume(sum((dec(w["ml"]) for w in wastes), ZERO)),
                      "wasted_mg": amount(sum((dec(w["mg"]) for w in wastes), ZERO)),
                      "destroyed_ml": volume(sum((dec(d["total_ml"]) for d in destructions), ZERO)),
                      "destroyed_mg": amount(sum((dec(d["total_mg"]) for d in destructions), ZERO))}}


def _form41_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Form 41's lines (issue 19, package hierarchy): a carton destroyed whole, still sealed, is
    one full package (its package NDC, ``units`` x the unit's volume); any other unit is its own
    package, a commercial container (21 CFR 1300.01), full or partial, under the unit's own NDC
    where the product records one (21 CFR 201.25)."""
    out: list[dict[str, Any]] = []
    cartons: dict[str, dict[str, Any]] = {}
    for i in items:
        p = i["product"]
        pid = i.get("package_id")
        if pid is None:
            unit_ndc = p.get("unit_ndc") if p.get("units_per_package", 1) > 1 else None
            out.append({**i, "ndc": unit_ndc or p["ndc"], "units": 1})
            continue
        c = cartons.get(pid)
        if c is None:
            c = cartons[pid] = {**i, "vial_id": pid, "ndc": p["ndc"], "units": 0, "ml": ZERO, "mg": ZERO,
                                "full_package": True}
            out.append(c)
        c["units"] += 1
        c["ml"] += dec(i["ml"])
        c["mg"] += dec(i["mg"])
        c["full_package"] = c["full_package"] and i["full_package"]
    for c in cartons.values():
        c["ml"], c["mg"] = volume(c["ml"]), amount(c["mg"])
    return out


def _names(sigs: list[dict[str, str]]) -> str:
    return "\n".join(s["printed_name"] for s in sigs) or "(none)"


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the log and the worksheets print, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    t = f["total"]
    out: list[layout.Block] = [layout.Para(
        "Waste is the remainder of an administered dose, recorded with the administration and witnessed by a second "
        "person; it is not reported on Form 41. Destruction of stock is recorded on DEA Form 41 with two authorized "
        f"employee witnesses; a worksheet per destruction follows. In the period: wasted {num(t['wasted_mg'], 'mg')} "
        f"({num(t['wasted_ml'], 'mL')}); destroyed {num(t['destroyed_mg'], 'mg')} ({num(t['destroyed_ml'], 'mL')}).")]
    if f["wastes"]:
        rows, late = [], set()
        for i, w in enumerate(f["wastes"]):
            when = local(w["at"], tz)
            if w["late_reason"]:
                when += f"\nLATE ENTRY: {w['late_reason']}"
                late.add(i)
            rows.append([when, f"{w['administration_id']}\n(entry {w['administration_seq']})", f"{w['ndc']}\n{w['drug']}",
                         num(w["ml"], "mL"), num(w["mg"], "mg"), w["method"], _names(w["performed_by"]),
                         _names(w["witnessed_by"]), str(w["seq"])])
        out.append(layout.Table(
            [layout.Column("Wasted (event time)", 60), layout.Column("Administration", 62),
             layout.Column("NDC and drug", 80), layout.Column("mL", 42, "R"), layout.Column("mg", 50, "R"),
             layout.Column("Method", 80), layout.Column("Wasted by", 62), layout.Column("Witness", 62),
             layout.Column("Entry", 30, "R")], rows, title="Waste of administered doses", flagged=frozenset(late)))
    if f["destructions"]:
        rows = [[local(d["at"], tz), str(d["seq"]), count(sum(i["units"] for i in d["items"])), num(d["total_ml"], "mL"),
                 num(d["total_mg"], "mg"), d["method"], d["place"], _names(d["witnessed_by"])] for d in f["destructions"]]
        out.append(layout.Table(
            [layout.Column("Destroyed (event time)", 62), layout.Column("Entry", 30, "R"),
             layout.Column("Containers", 44, "R"), layout.Column("mL", 46, "R"), layout.Column("mg", 52, "R"),
             layout.Column("Method", 90), layout.Column("Place", 90), layout.Column("Witnesses", 90)],
            rows, title="Destructions of stock (DEA Form 41)"))
    for d in f["destructions"]:
        out.append(layout.PageBreak())
        out.append(layout.Heading(f"DEA Form 41 worksheet: registrant record of controlled substances destroyed "
                                  f"(ledger entry {d['seq']})"))
        r = d["registrant"]
        out.append(layout.Para(f"Registrant: {r['name']}, {r['address']}. DEA registration number: {r['dea_number']}.",
                               size=8.5))
        rows = [[i["ndc"], i["lot"], i["drug"], num(i["strength_mg_per_ml"], "mg/mL"), i["form"],
                 (f"{i['units']} x " if i.get("units", 1) > 1 else "") + num(i["package_ml"], "mL"),
                 "1" if i["full_package"] else "0",
                 "" if i["full_package"] else num(i["ml"], "mL"), num(i["mg"], "mg"), i["vial_id"]] for i in d["items"]]
        rows.append(["Total", "", "", "", "", "", count(d["full_packages"]), num(d["partial_ml"], "mL"),
                     num(d["total_mg"], "mg"), ""])
        out.append(layout.Table(
            [layout.Column("NDC (drug code)", 58), layout.Column("Batch", 40), layout.Column("Name", 80),
             layout.Column("Strength", 46, "R"), layout.Column("Form", 40), layout.Column("Package size", 40, "R"),
             layout.Column("Full packages", 40, "R"), layout.Column("Partial package", 46, "R"),
             layout.Column("Total destroyed", 56, "R"), layout.Column("Container", 44)],
            rows, title="Controlled substances destroyed", strong=frozenset({len(rows) - 1})))
        text = (f"Date of destruction: {local(d['at'], tz)}. Place: {d['place']}. Method: {d['method']}. "
                f"Reason: {d['reason']}.")
        if d["late_reason"]:
            text += f" LATE ENTRY: {d['late_reason']}."
        if d["documents"]:
            text += " Documents stored with the entry (SHA-256): " + ", ".join(d["documents"]) + "."
        out.append(layout.Para(text, size=8.5))
        out.append(layout.Signatures(
            signed=[(s["printed_name"], local(s["signed_at"], tz, seconds=True), "performed the destruction")
                    for s in d["performed_by"]]
            + [(s["printed_name"], local(s["signed_at"], tz, seconds=True), "witnessed (authorized employee witness)")
               for s in d["witnessed_by"]],
            wet=["witness 1", "witness 2"], title="Witnesses: printed names and signatures"))
    return out


#: ``audit_window``: printed beside an audit, for exactly its window (issue 20, one period).
KIND = register(ReportKind("waste", "Waste and destruction log, DEA Form 41 worksheets", "landscape", compute, blocks,
                           audit_window="optional"))
