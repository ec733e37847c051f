"""Administration log: a row per infusion with every element of 21 CFR 1304.22(c) (date, patient
name and address, quantity, who administered) plus the prescriber, the order (mg/kg x weight),
mg and mg/kg given, the vials drawn from, drawn, given, the waste and its witness; an
administration whose drawn volume is not yet given or wasted is marked UNRECONCILED.

Patient names and addresses are not in the entries (they hold a patient id and a keyed
commitment); they come from the encrypted patient registry when the patient key is configured
(``CSLEDGER_PATIENT_KEY`` or its key file) and are embedded with the report as an annotation
beside the figures. ``verify-report`` recomputes every figure from the entries and, with the
key, re-reads the registry and checks each name and address against the entry's commitment.
Names never go to a log line.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, amount, dec, local, num
from reports.source import Snapshot

ZERO = Decimal("0.00")


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Every administration whose event time is in the period, with its waste (recorded at any
    time up to the report's tree size) and reconciliation."""
    waste: dict[str, list[dict[str, Any]]] = {}
    for e in snap.entries:
        if e["kind"] == "dose_wasted":
            waste.setdefault(e["administration_id"], []).append({
                "seq": e["seq"], "ml": e["ml"], "mg": e["mg"], "method": e["method"],
                "witnessed_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "witnessed"],
            })
    rows = []
    for e in snap.entries:
        if e["kind"] != "dose_administered" or not period.contains(e["occurred_at"]):
            continue
        w = waste.get(e["administration_id"], [])
        wasted = sum((dec(x["ml"]) for x in w), ZERO)
        drawn, given = dec(e["ml_drawn"]), dec(e["ml_given"])
        weight = dec(e["weight_kg"])
        p = e["draws"][0]["product"]
        rows.append({
            "seq": e["seq"], "administration_id": e["administration_id"], "started_at": e["started_at"],
            "ended_at": e["ended_at"], "late_reason": e.get("late_reason"), "patient_id": e["patient_id"],
            "patient_commitment": e["patient_commitment"], "prescriber_dea_number": e["prescriber_dea_number"],
            "administered_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "performed"],
            "witnessed_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "witnessed"],
            "ndc": p["ndc"], "drug": p["name"], "weight_kg": e["weight_kg"],
            "ordered_mg_per_kg": e["ordered_mg_per_kg"], "ordered_mg": e["ordered_mg"],
            "mg_given": e["mg_given"],
            "mg_per_kg_given": amount((dec(e["mg_given"]) / weight).quantize(Decimal("0.01"), ROUND_HALF_UP))
            if weight else "0.00",
            "draws": [{"vial_id": d["vial_id"], "ml": d["ml"]} for d in e["draws"]],
            "ml_drawn": amount(drawn), "ml_given": amount(given), "ml_wasted": amount(wasted),
            "waste": w, "unreconciled_ml": amount(drawn - given - wasted),
        })
    if not rows:
        raise ReportError(f"no dose was administered at {snap.state.registrant} from {period.start} to "
                          f"{period.end}; nothing to report", field="from/to")
    return {"rows": rows,
            "total": {"administrations": len(rows),
                      "mg_given": amount(sum((dec(r["mg_given"]) for r in rows), ZERO)),
                      "ml_given": amount(sum((dec(r["ml_given"]) for r in rows), ZERO)),
                      "ml_wasted": amount(sum((dec(r["ml_wasted"]) for r in rows), ZERO)),
                      "unreconciled": sum(1 for r in rows if dec(r["unreconciled_ml"]) != 0)}}


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the log prints, drawn only from the report data (and its patient annotation)."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    patients = (data.get("annotations") or {}).get("patients") or {}
    t = f["total"]
    out: list[layout.Block] = [layout.Para(
        f"{t['administrations']} administration(s): {num(t['mg_given'], 'mg')} given ({num(t['ml_given'], 'mL')}), "
        f"{num(t['ml_wasted'], 'mL')} wasted; {t['unreconciled']} UNRECONCILED (shaded: drawn but not yet given or "
        "wasted). Quantities are from the entries; patient names and addresses from the encrypted registry"
        + ("." if patients else " (NOT AVAILABLE: no patient key was configured when this report was made)."))]
    rows, flagged = [], set()
    for i, r in enumerate(f["rows"]):
        pt = patients.get(r["patient_id"])
        who = (f"{pt['name']}\n{pt['address']}" + ("" if pt.get("matches_commitment", True) else
                                                   "\nREGISTRY DOES NOT MATCH THE ENTRY")
               if pt else f"patient {r['patient_id']}")
        when = f"{local(r['started_at'], tz)}\nto {local(r['ended_at'], tz)[11:]}"
        if r["late_reason"]:
            when += f"\nLATE ENTRY: {r['late_reason']}"
        waste = "\n".join(f"{num(w['ml'], 'mL')} witnessed by {', '.join(w['witnessed_by'])}" for w in r["waste"])
        if dec(r["unreconciled_ml"]) != 0:
            flagged.add(i)
            waste += f"\nUNRECONCILED {num(r['unreconciled_ml'], 'mL')}"
        rows.append([
            when, who, f"{num(r['ml_given'], 'mL')}\n{num(r['mg_given'], 'mg')}",
            "\n".join(r["administered_by"]), f"DEA {r['prescriber_dea_number']}",
            f"{num(r['ordered_mg_per_kg'], 'mg/kg')} x {num(r['weight_kg'], 'kg')}\n= {num(r['ordered_mg'], 'mg')}",
            num(r["mg_per_kg_given"], "mg/kg"), "\n".join(f"{d['vial_id']}: {num(d['ml'], 'mL')}" for d in r["draws"]),
            num(r["ml_drawn"], "mL"), waste.strip() or "none", f"{r['administration_id']}\n{r['seq']}",
        ])
    out.append(layout.Table(
        [layout.Column("Date and time", 58), layout.Column("Patient name and address", 96),
         layout.Column("Given", 46, "R"), layout.Column("Administered by", 58), layout.Column("Prescriber", 52),
         layout.Column("Order", 80, "R"), layout.Column("mg/kg given", 40, "R"), layout.Column("Vials drawn", 66),
         layout.Column("Drawn", 40, "R"), layout.Column("Waste and witness", 88), layout.Column("Admin / entry", 44)],
        rows, title="Administrations", flagged=frozenset(flagged)))
    return out


def annotate(ledger: Any, registrant: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Patient names and addresses for the rows, from the encrypted registry, when a patient key
    is configured; an empty annotation otherwise (the report says so)."""
    try:
        from ledger.settings import get_settings
        from ledger.storage.patient_keys import PatientKeys

        keys = PatientKeys.from_settings(get_settings())
    except Exception:  # no key configured, or the registry is not installed: print ids only
        return {}
    import sqlalchemy as sa

    out = {}
    ids = sorted({r["patient_id"] for r in figures["rows"]})
    commitments = {r["patient_id"]: r["patient_commitment"] for r in figures["rows"]}
    with ledger.reading() as conn:
        for pid in ids:
            row = conn.execute(sa.text("SELECT sealed FROM patient_registry WHERE registrant = :r AND patient_id = :p"),
                               {"r": registrant, "p": pid}).first()
            if row is None:
                continue
            d = keys.open(registrant, pid, bytes(row[0]))
            out[pid] = {"name": d.name, "address": f"{d.street}, {d.city}, {d.state} {d.postal_code}",
                        "matches_commitment": keys.commitment(registrant, pid, d) == commitments[pid]}
    return {"patients": out}


KIND = register(ReportKind("administrations", "Administration log (21 CFR 1304.22(c))", "landscape", compute, blocks,
                           annotate=annotate))
