"""Alert rules for diluted preparations (issue 19): an infusion that gave more than its order
(beyond the measuring resolution of its draws), a preparation left neither wasted nor infused
whole, and the statistics' view of each preparation's waste (who gave, who witnessed, mg).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ledger.domain import preparations as prep_rules
from ledger.domain.alerts.candidates import Q2, AlertPolicy, Candidate
from ledger.domain.alerts.per_entry import MEASURING_RESOLUTION_ML, above_order, performer, witness
from ledger.domain.alerts.statistics import Activity, Waste
from ledger.integrity.canonical import parse_time


def preparation_above_order(entry: dict[str, Any]) -> Candidate | None:
    """An infusion from a preparation that gave more mg than ordered by more than the measuring
    resolution of the preparation's draws allows (half a 0.01 mL graduation per draw)."""
    if entry["kind"] != "preparation_infused":
        return None
    ordered, given = Decimal(entry["ordered_mg"]), Decimal(entry["mg_given"])
    allowance = prep_rules.allowance_mg(int(entry["vials_drawn"]), Decimal(entry["product"]["strength_mg_per_ml"]),
                                        MEASURING_RESOLUTION_ML)
    if given <= ordered + allowance:
        return None
    return above_order(entry, ordered, given, allowance, (entry["preparation_seq"], entry["seq"]), (
        f"infusion of preparation {entry['preparation_id']} (entry {entry['seq']}, patient "
        f"{entry['patient_id']}) gave {given} mg ({entry['ml_infused']} of {entry['final_ml']} mL holding "
        f"{entry['mg']} mg); the order was {ordered} mg"))


def _preparations(entries: Iterable[dict[str, Any]]) -> list[dict[str, dict[str, Any] | None]]:
    """Each preparation with its infusion and waste entries (None when not recorded), seq order."""
    out: dict[str, dict[str, dict[str, Any] | None]] = {}
    for e in entries:
        if e["kind"] == "preparation_made":
            out[e["preparation_id"]] = {"made": e, "infused": None, "wasted": None}
        elif e["kind"] in ("preparation_infused", "preparation_wasted") and e["preparation_id"] in out:
            out[e["preparation_id"]]["infused" if e["kind"] == "preparation_infused" else "wasted"] = e
    return list(out.values())


def unreconciled_preparations(entries: Sequence[dict[str, Any]], now: datetime, policy: AlertPolicy) -> list[Candidate]:
    """Preparations with mg neither given nor wasted ``reconcile_hours`` after their infusion
    ended, or after their beyond-use time when never infused (strictly later)."""
    out = []
    for p in _preparations(entries):
        made, inf = p["made"], p["infused"]
        if p["wasted"] is not None:
            continue
        mg = Decimal(made["mg"])
        given = Decimal(inf["mg_given"]) if inf else Decimal("0.00")
        missing = mg - given
        since = parse_time(inf["ended_at"] if inf else made["beyond_use_at"])
        if missing <= 0 or now - since <= timedelta(hours=policy.reconcile_hours):
            continue
        who = performer(inf or made)
        hours = Decimal(int((now - since).total_seconds())) / Decimal(3600)
        what = "after the infusion ended" if inf else "after its beyond-use time, never infused"
        out.append(Candidate(
            alert_key=f"unreconciled:{made['preparation_id']}", rule="unreconciled_administration", severity="medium",
            subjects=(who,) if who else (),
            summary=(f"preparation {made['preparation_id']} (entry {made['seq']}): {missing} mg of {mg} mg neither "
                     f"given nor wasted, {hours.quantize(Q2)} h {what}"),
            parameters=policy.params("reconcile_hours"),
            evidence_seqs=(made["seq"], *((inf["seq"],) if inf else ())),
            figures={"mg_drawn": str(mg), "mg_given": str(given), "mg_unaccounted": str(missing),
                     "since": inf["ended_at"] if inf else made["beyond_use_at"]},
        ))
    return out


def preparation_wastes(entries: Sequence[dict[str, Any]]) -> list[Waste]:
    """The statistics' view of each wasted preparation: who gave it (who prepared it, when never
    infused), who witnessed its waste, when, mg drawn and wasted."""
    out = []
    for p in _preparations(entries):
        made, inf, w = p["made"], p["infused"], p["wasted"]
        if w is None:
            continue
        who = performer(inf or made)
        if who is None:
            continue
        out.append(Waste(seq=made["seq"], staff_id=who, witness_id=witness(w), at=parse_time(w["occurred_at"]),
                         drawn_mg=Decimal(made["mg"]), wasted_mg=Decimal(w["mg"]), waste_seqs=(w["seq"],)))
    return out


def preparation_draws(entries: Sequence[dict[str, Any]]) -> list[Activity]:
    """Draws into preparations (mg drawn, by whom, when)."""
    out = []
    for p in _preparations(entries):
        made = p["made"]
        who = performer(made)
        if who is not None:
            out.append(Activity(made["seq"], who, parse_time(made["occurred_at"]), Decimal(made["mg"])))
    return out
