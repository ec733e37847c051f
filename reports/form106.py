"""DEA Form 106 worksheet for each theft or significant loss reported in the period (21 CFR
1301.76(b)): registrant name, address and DEA number; date of loss (discovery); police notified
and which department; losses in the past 24 months; type of loss; purchase value; per drug the
NDC and quantity lost. The written notice is due within one business day of discovery and the
form within 45 days; both due times, as recorded on the entry, are printed.

Issue 20 (layout 2): the narrative, the corrective measures, the explanation of a loss of type
"other", the registrant's contact; who recorded the report and when it was *recorded* (not when the
loss was discovered); the notice sent to DEA (when, how, to whom, on time or late) and the Form 106
filed (when, DEA's confirmation number) or "not yet filed, due ...". Every time is the
registrant's local time. Reports recorded before issue 20 print "not recorded" for what they lack.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledger.domain.form106 import follow_ups
from reports import layout
from reports.base import ReportKind, address_text, register
from reports.errors import ReportError
from reports.fmt import Period, amount, count, dec, local, num, volume
from reports.source import Snapshot

ZERO = Decimal("0.00")
NOT_RECORDED = "not recorded (reported before issue 20)"
LOSS_TYPES = {"night_break_in": "Night break-in", "armed_robbery": "Armed robbery",
              "employee_pilferage": "Employee pilferage", "customer_theft": "Customer theft",
              "lost_in_transit": "Lost in transit", "other": "Other"}


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Each theft-or-loss report in the period with its quantities per NDC (vials lost by the
    report itself and the loss adjustments it covers)."""
    by_seq = {e["seq"]: e for e in snap.entries if e["kind"] == "loss_adjusted"}
    # issue 20: the follow-up may be recorded after the period; the snapshot's whole chain is read
    followed = follow_ups(snap.entries)
    reports = []
    for e in snap.entries:
        if e["kind"] != "theft_or_loss_reported" or not period.contains(e["occurred_at"]):
            continue
        adj = list(e["lost"])
        for s in e.get("covers_seqs") or ():
            if s in by_seq:
                adj.extend(by_seq[s]["adjustments"])
        per: dict[str, dict[str, Any]] = {}
        for a in adj:
            p = a["product"]
            t = per.setdefault(p["ndc_key"], {"ndc": p["ndc"], "drug": p["name"], "drug_code": p["drug_code"],
                                              "strength_mg_per_ml": p["strength_mg_per_ml"], "form": p["form"],
                                              "container_ml": p["container_ml"], "whole_containers": 0,
                                              "ml": ZERO, "mg": ZERO, "vial_ids": []})
            t["whole_containers"] += 1 if a["whole_vial"] else 0
            t["ml"] += dec(a["ml"])
            t["mg"] += dec(a["ml"]) * dec(p["strength_mg_per_ml"])
            t["vial_ids"].append(a["vial_id"])
        rc = e["registrant_copy"]
        reports.append({
            "seq": e["seq"], "at": e["occurred_at"], "discovered_at": e["discovered_at"],
            "registrant": {"name": rc["name"], "dea_number": rc["dea_number"], "address": address_text(rc["address"])},
            "loss_type": e["loss_type"], "police_notified": e["police_notified"],
            "police_department": e.get("police_department"), "police_report_number": e.get("police_report_number"),
            "losses_past_24_months": e["losses_past_24_months"], "purchase_value_usd": e["purchase_value_usd"],
            "notice_due_at": e["notice_due_at"], "form_106_due_at": e["form_106_due_at"],
            "covers_seqs": list(e.get("covers_seqs") or ()), "documents": list(e.get("documents") or ()),
            "reported_by": [s["printed_name"] for s in e["signatures"]],
            # issue 20
            "recorded_at": e["recorded_at"], "narrative": e.get("narrative"),
            "corrective_measures": e.get("corrective_measures"), "other_explanation": e.get("other_explanation"),
            "contact_name": e.get("contact_name"), "contact_phone": e.get("contact_phone"),
            "notice": _follow_up(followed.get(e["seq"], {}).get("notice"), "sent_at"),
            "filing": _follow_up(followed.get(e["seq"], {}).get("filing"), "filed_at"),
            "items": [{**t, "ml": volume(t["ml"]), "mg": amount(t["mg"])} for _, t in sorted(per.items())],
        })
    if not reports:
        raise ReportError(f"no theft or loss was reported at {snap.state.registrant} from {period.start} to "
                          f"{period.end}; nothing to report", field="from/to")
    return {"reports": reports}


def _follow_up(f: dict[str, Any] | None, at: str) -> dict[str, Any] | None:
    """A notice or filing entry as the worksheet prints it."""
    if f is None:
        return None
    return {"seq": f["seq"], "at": f[at], "late": f["late"], "due_at": f["due_at"], "method": f.get("method"),
            "recipient": f.get("recipient"), "confirmation_number": f.get("confirmation_number"),
            "document_sha256": f.get("document_sha256"), "by": [s["printed_name"] for s in f["signatures"]]}


def _notice_text(r: dict[str, Any], tz: str) -> str:
    n = r.get("notice")
    if n is None:
        return f"not yet sent, due {local(r['notice_due_at'], tz)}"
    return (f"sent {local(n['at'], tz)} by {n['method']} to {n['recipient']}, "
            f"{'LATE (due ' + local(n['due_at'], tz) + ')' if n['late'] else 'on time'}; recorded by "
            f"{', '.join(n['by'])} (entry {n['seq']})")


def _filing_text(r: dict[str, Any], tz: str) -> str:
    f = r.get("filing")
    if f is None:
        return f"not yet filed, due {local(r['form_106_due_at'], tz)}"
    return (f"filed {local(f['at'], tz)}, DEA confirmation {f['confirmation_number']}, "
            f"{'LATE (due ' + local(f['due_at'], tz) + ')' if f['late'] else 'on time'}; recorded by "
            f"{', '.join(f['by'])} (entry {f['seq']})")


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """One worksheet per report, drawn only from the report data."""
    tz = data["registrant"]["time_zone"]
    out: list[layout.Block] = []
    for k, r in enumerate(data["figures"]["reports"]):
        if k:
            out.append(layout.PageBreak())
        out.append(layout.Heading(f"DEA Form 106 worksheet: report of theft or loss of controlled substances "
                                  f"(ledger entry {r['seq']})"))
        reg = r["registrant"]
        police = ("Yes: " + ", ".join(x for x in (r["police_department"], r["police_report_number"] and
                                                  f"report {r['police_report_number']}") if x)
                  if r["police_notified"] else "No")
        rows = [["Registrant name", reg["name"]], ["Registrant address", reg["address"]],
                ["DEA registration number", reg["dea_number"]],
                ["Date of loss (discovered)", local(r["discovered_at"], tz)],
                ["Type of theft or loss", LOSS_TYPES.get(r["loss_type"], r["loss_type"])],
                ["Police notified", police],
                ["Thefts and losses in the past 24 months", count(r["losses_past_24_months"])],
                ["Purchase value of what was lost", num(r["purchase_value_usd"], "USD")],
                ["Explanation (type 'other')", r.get("other_explanation") or "-"]
                if r["loss_type"] == "other" else None,
                ["What happened (narrative)", r.get("narrative") or NOT_RECORDED],
                ["Corrective measures taken", r.get("corrective_measures") or NOT_RECORDED],
                ["Contact for DEA", ", ".join(x for x in (r.get("contact_name"), r.get("contact_phone")) if x)
                 or NOT_RECORDED],
                ["Written notice to the DEA field office due", local(r["notice_due_at"], tz)],
                ["Written notice to the DEA field office", _notice_text(r, tz)],
                ["Form 106 due", local(r["form_106_due_at"], tz)],
                ["Form 106 filed (electronically)", _filing_text(r, tz)],
                # issue 20: the entry's recorded_at, not the discovery time ("at" is the event time)
                ["Recorded by", ", ".join(r["reported_by"]) + " at " + local(r.get("recorded_at") or r["at"], tz)]]
        rows = [row for row in rows if row is not None]
        if r["covers_seqs"]:
            rows.append(["Covers loss adjustments", ", ".join(f"entry {s}" for s in r["covers_seqs"])])
        out.append(layout.Table([layout.Column("Field", 34), layout.Column("Value", 66)], rows, title="Report"))
        items = [[i["ndc"], i["drug_code"], i["drug"], f"{i['form']}, {num(i['strength_mg_per_ml'], 'mg/mL')}",
                  num(i["container_ml"], "mL"), count(i["whole_containers"]), num(i["ml"], "mL"), num(i["mg"], "mg"),
                  ", ".join(i["vial_ids"])] for i in r["items"]]
        out.append(layout.Table(
            [layout.Column("NDC", 56), layout.Column("Drug code", 30), layout.Column("Drug", 86),
             layout.Column("Form and strength", 60), layout.Column("Container", 40, "R"),
             layout.Column("Whole containers", 44, "R"), layout.Column("Quantity (mL)", 48, "R"),
             layout.Column("Quantity (mg)", 52, "R"), layout.Column("Containers lost", 80)],
            items, title="Controlled substances lost or stolen"))
        if r["documents"]:
            out.append(layout.Para("Documents stored with the entry (SHA-256): " + ", ".join(r["documents"])))
    return out


KIND = register(ReportKind("form106", "DEA Form 106 worksheet (theft or loss)", "portrait", compute, blocks,
                           wet_signatures=("reported by", "reviewed"), layout=2))  # layout 2: issue 20
