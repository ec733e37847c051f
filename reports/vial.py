"""Vial history: one container's chain of custody, from the inventory or receipt that brought it
under account to empty, destroyed, transferred, returned or lost: every entry that names it, what
it took or added, the volume left after it and who signed. The whole history up to the report's
tree size is shown (custody does not stop at the period's edge); the period frames the report.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, amount, dec, local, num, volume
from reports.source import Snapshot

ZERO = Decimal("0.00")


def _events(e: dict[str, Any], vial: str) -> list[tuple[str, Decimal, str, str | None]]:
    """(what, signed mL into the vial, details, state after) for each mention of ``vial``."""
    k = e["kind"]
    out: list[tuple[str, Decimal, str, str | None]] = []
    if k == "inventory_taken":
        for i in e["items"]:
            if i["vial_id"] == vial:
                how = "sealed, counted" if i["sealed"] else ("opened, ESTIMATED" if i["estimated"] else "opened")
                out.append((f"{e['inventory_type']} inventory", dec(i["ml"]), f"{how}; lot {i['lot']}, exp {i['expiry']}",
                            "sealed" if i["sealed"] else "open"))
    elif k == "stock_received":
        for ln in e["lines"]:
            if vial in ln["vial_ids"]:
                s = e["supplier"]
                out.append(("received", dec(ln["product"]["container_ml"]),
                            f"invoice {e['invoice_number']} from {s['name']} (DEA {s['dea_number']}); lot {ln['lot']}, "
                            f"exp {ln['expiry']}", "sealed"))
    elif k == "dose_administered":
        for d in e["draws"]:
            if d["vial_id"] == vial:
                detail = f"administration {e['administration_id']}"
                if d.get("opened_vial"):
                    detail += f"; first puncture, beyond-use date {d['beyond_use_date']}"
                out.append(("drawn for an infusion", -dec(d["ml"]), detail, "open"))
    elif k == "esketamine_session_recorded":  # issue 19: a nasal-spray device, used whole
        out += [("used in an esketamine session", -dec(d["ml"]),
                 f"session {e['session_id']}: {e['dose_mg']} mg, self-administered under the direct observation of "
                 f"{e['directly_observed_by_name']}", "empty") for d in e["devices"] if d["vial_id"] == vial]
    elif k == "preparation_made":  # issue 19: drawn into a bag or syringe-pump syringe
        for d in e["draws"]:
            if d["vial_id"] == vial:
                detail = (f"preparation {e['preparation_id']}: {e['container']} of {e['final_ml']} mL "
                          f"({e['diluent']}), {e['mg']} mg")
                if d.get("opened_vial"):
                    detail += f"; first puncture, beyond-use date {d['beyond_use_date']}"
                out.append(("drawn into a preparation", -dec(d["ml"]), detail, "open"))
    elif k == "stock_destroyed":
        out += [("destroyed (Form 41)", -dec(i["ml"]), f"{e['method']} at {e['place']}: {e['reason']}", "destroyed")
                for i in e["items"] if i["vial_id"] == vial]
    elif k in ("stock_transferred", "stock_returned"):
        to = e.get("receiver_name") or e.get("recipient_name")
        dea = e.get("receiver_dea_number") or e.get("recipient_dea_number")
        what = "transferred" if k == "stock_transferred" else "returned"
        out += [(what, -dec(v["ml"]), f"to {to} (DEA {dea}), invoice {e['invoice_number']}", what)
                for v in e["vials"] if v["vial_id"] == vial]
    elif k in ("loss_adjusted", "theft_or_loss_reported"):
        key = "adjustments" if k == "loss_adjusted" else "lost"
        what = "loss taken off the book" if k == "loss_adjusted" else "theft or loss reported (Form 106)"
        out += [(what, -dec(a["ml"]), e.get("category") or e.get("loss_type", ""), "lost" if a["whole_vial"] else None)
                for a in e[key] if a["vial_id"] == vial]
    elif k == "breakage_recorded":  # issue 15: at the time, two people who saw it
        for a in e["lines"]:
            if a["vial_id"] != vial:
                continue
            if e["recoverable"]:
                out.append((f"{e['what']}, recoverable: set aside for destruction", ZERO, e["description"],
                            "quarantined"))
            else:
                out.append((f"{e['what']}, not recoverable", -dec(a["ml"]), e["description"],
                            "lost" if a["whole_vial"] else None))
    elif k == "entry_corrected":
        for ln in e["lines"]:
            if ln["vial_id"] == vial:
                ml = dec(ln["ml"]) if ln["direction"] == "add" else -dec(ln["ml"])
                out.append((f"correction of entry {e['corrects_seq']}", ml, e["reason"], None))
    elif k in ("stock_quarantined", "quarantine_released") and vial in e["vial_ids"]:
        out.append(("quarantined" if k == "stock_quarantined" else "released from quarantine", ZERO, e["reason"],
                    "quarantined" if k == "stock_quarantined" else None))
    return out


def compute(snap: Snapshot, period: Period, params: dict[str, str]) -> dict[str, Any]:
    """Every entry naming the vial, in ledger order, with the volume left after each."""
    vial = params["vial"]
    rows, left, state, product = [], ZERO, None, None
    for e in snap.entries:
        for what, ml, detail, new_state in _events(e, vial):
            left += ml
            if new_state:
                state = new_state
            if left == 0 and state in ("open", "sealed"):
                state = "empty"
            if product is None:
                product = _product(e, vial)
            rows.append({"seq": e["seq"], "at": e["occurred_at"], "recorded_at": e["recorded_at"], "what": what,
                         "ml": volume(ml), "ml_left": volume(left), "details": detail,
                         "signatures": [f"{s['printed_name']} ({s['meaning']})" for s in e["signatures"]],
                         "late_reason": e.get("late_reason")})
    if not rows:
        raise ReportError(f"no container {vial!r} in the ledger of {snap.state.registrant}", field="vial")
    return {"vial_id": vial, "product": product, "state": state or "on hand", "ml_left": volume(left),
            "mg_left": amount(left * dec(product["strength_mg_per_ml"])), "events": rows}


def _product(e: dict[str, Any], vial: str) -> dict[str, str]:
    for group in ("items", "lines", "draws", "vials", "adjustments", "lost"):
        for x in e.get(group) or ():
            if isinstance(x, dict) and (x.get("vial_id") == vial or vial in (x.get("vial_ids") or ())):
                p = x["product"]
                return {k: p[k] for k in ("ndc", "name", "form", "strength_mg_per_ml", "container_ml")}
    return {"ndc": "?", "name": "?", "form": "?", "strength_mg_per_ml": "0.00", "container_ml": "0.00"}


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the history prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    p = f["product"]
    out: list[layout.Block] = [
        layout.Heading(f"Container {f['vial_id']}: {p['ndc']} {p['name']}"),
        layout.Para(f"{p['form']}, {num(p['strength_mg_per_ml'], 'mg/mL')}, {num(p['container_ml'], 'mL')} container. "
                    f"Now: {f['state'].upper()}, {num(f['ml_left'], 'mL')} ({num(f['mg_left'], 'mg')}) left on the "
                    "book. The whole chain of custody up to the ledger state below is shown.", size=8.5)]
    rows, late = [], set()
    for i, r in enumerate(f["events"]):
        when = local(r["at"], tz)
        if r["late_reason"]:
            when += f"\nLATE ENTRY, recorded {local(r['recorded_at'], tz)}: {r['late_reason']}"
            late.add(i)
        rows.append([when, str(r["seq"]), r["what"], num(r["ml"], "mL"), num(r["ml_left"], "mL"), r["details"],
                     "\n".join(r["signatures"])])
    out.append(layout.Table(
        [layout.Column("Event time", 62), layout.Column("Entry", 30, "R"), layout.Column("Event", 80),
         layout.Column("Change", 46, "R"), layout.Column("Left", 46, "R"), layout.Column("Details", 170),
         layout.Column("Signed by", 110)], rows, title="Chain of custody", flagged=frozenset(late)))
    return out


KIND = register(ReportKind("vial", "Vial history (chain of custody)", "landscape", compute, blocks, params=("vial",)))
