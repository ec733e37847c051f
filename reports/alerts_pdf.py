"""Alert report for a period: every alert raised in it, and every alert raised earlier that was
still unresolved when it began; per alert its rule, severity, parameters, evidence (entry seqs
and figures), deadlines, and who acknowledged and resolved it, with category and explanation.

Built on the reports framework (``base.ReportKind``): ``compute`` reads only the decoded
``alert_*`` entries of the snapshot, so ``verify-report`` recomputes it from the ledger. Staff
are shown by printed name and id; patients never appear (alerts hold no patient data).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ledger.domain.alerts import discrepancy_alerts
from reports import layout
from reports.base import ReportKind, register
from reports.fmt import Period, count, local
from reports.source import Snapshot

SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Alerts in the period (by the time they were raised) or open at its start, as of the
    snapshot's tree size, with their acknowledgement and resolution."""
    names = {e["staff_id"]: e["printed_name"] for e in snap.entries if e["kind"] == "staff_enrolled"}
    alerts: dict[str, dict[str, Any]] = {}
    for e in snap.entries:
        k = e["kind"]
        if k == "alert_raised":
            alerts[e["alert_id"]] = {
                "alert_id": e["alert_id"], "seq": e["seq"], "raised_at": e["recorded_at"], "rule": e["rule"],
                "severity": e["severity"], "summary": e["summary"], "raised_by": e["raised_by"],
                "subjects": [{"staff_id": s, "printed_name": names.get(s, s)} for s in e["subjects"]],
                "parameters": e["parameters"], "evidence_seqs": e["evidence_seqs"], "figures": e["figures"],
                "deadlines": e["deadlines"], "acknowledged": None, "resolved": None,
            }
        elif k in ("alert_acknowledged", "alert_resolved") and e["alert_id"] in alerts:
            sig = e["signatures"][0]
            alerts[e["alert_id"]]["acknowledged" if k == "alert_acknowledged" else "resolved"] = {
                "seq": e["seq"], "at": e["recorded_at"], "by": sig["printed_name"], "staff_id": sig["staff_id"],
                "category": e["category"], "explanation": e["explanation"],
            }
        elif k == "alert_cleared" and e["alert_id"] in alerts:  # the system saw the condition end (issue 20)
            alerts[e["alert_id"]]["resolved"] = {
                "seq": e["seq"], "at": e["recorded_at"], "by": "csledger", "staff_id": None,
                "category": "condition_cleared", "explanation": e["explanation"],
            }
    for d in discrepancy_alerts(snap.entries):  # a view of each count discrepancy (one workflow)
        res = None
        if d["resolved_seq"] is not None:
            res = {"seq": d["resolved_seq"], "at": d["resolved_at"], "by": names.get(d["resolved_by"], d["resolved_by"]),
                   "staff_id": d["resolved_by"], "category": d["resolved_category"],
                   "explanation": d["resolved_explanation"]}
        alerts[d["alert_id"]] = {
            "alert_id": d["alert_id"], "seq": d["raised_seq"], "raised_at": d["raised_at"], "rule": d["rule"],
            "severity": d["severity"], "summary": d["summary"], "raised_by": "count",
            "subjects": [{"staff_id": s, "printed_name": names.get(s, s)} for s in d["subjects"]],
            "parameters": {}, "evidence_seqs": d["evidence_seqs"], "figures": d["figures"], "deadlines": {},
            "acknowledged": None, "resolved": res,
        }
    start, end = period.start_utc, period.end_utc
    chosen = []
    for a in alerts.values():
        if a["raised_at"] >= end:
            continue
        in_period = a["raised_at"] >= start
        open_at_start = a["raised_at"] < start and (a["resolved"] is None or a["resolved"]["at"] >= start)
        if in_period or open_at_start:
            a["status"] = "resolved" if a["resolved"] else ("acknowledged" if a["acknowledged"] else "open")
            a["carried_over"] = not in_period
            chosen.append(a)
    chosen.sort(key=lambda a: (SEVERITY_ORDER.get(a["severity"], 9), a["seq"]))
    by_rule = Counter(a["rule"] for a in chosen)
    by_status = Counter(a["status"] for a in chosen)
    return {"alerts": chosen, "by_rule": dict(sorted(by_rule.items())), "by_status": dict(sorted(by_status.items()))}


COLUMNS = [  # weights are points on Letter landscape; the layout scales them to the paper
    layout.Column("Alert", 38), layout.Column("Severity", 40), layout.Column("Rule and parameters", 100),
    layout.Column("Raised", 62), layout.Column("About", 70), layout.Column("What was found", 162),
    layout.Column("Evidence (entries)", 56), layout.Column("Due", 64), layout.Column("Closed", 128),
]


def _closed(a: dict[str, Any], tz: str) -> str:
    parts = []
    for label, c in (("acknowledged", a["acknowledged"]), ("resolved", a["resolved"])):
        if c:
            parts.append(f"{label} {local(c['at'], tz)} by {c['by']} ({c['category']}; entry {c['seq']}): "
                         f"{c['explanation']}")
    return "\n".join(parts) or "OPEN"


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the alert report prints, drawn only from the report data."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    out: list[layout.Block] = [layout.Heading("Alerts raised in the period, and alerts open at its start")]
    if not f["alerts"]:
        out.append(layout.Para("No alert was raised in this period and none was open at its start.", bold=True, size=9))
        return out
    summary = ", ".join(f"{count(n)} {s}" for s, n in f["by_status"].items())
    out.append(layout.Para(
        f"{count(len(f['alerts']))} alert(s): {summary}. Each alert names the rule and parameters that raised "
        "it and the ledger entries and figures it rests on; it stays open until an acknowledge or resolve entry "
        "by a manager or compliance officer who is not a person it is about. Open alerts are shaded."))
    rows, flagged = [], set()
    for i, a in enumerate(f["alerts"]):
        if a["status"] != "resolved":
            flagged.add(i)
        figures = "; ".join(f"{k} {v}" for k, v in sorted(a["figures"].items()))
        params = "\n".join(f"{k}={v}" for k, v in sorted(a["parameters"].items()))
        rows.append([
            a["alert_id"] + (" (carried over)" if a["carried_over"] else ""), a["severity"],
            f"{a['rule']}\n{params}", local(a["raised_at"], tz),
            "\n".join(f"{s['printed_name']} ({s['staff_id']})" for s in a["subjects"]) or "-",
            f"{a['summary']}\n{figures}",
            ", ".join(str(s) for s in a["evidence_seqs"]),
            "\n".join(f"{k}: {local(v, tz)}" for k, v in sorted(a["deadlines"].items())) or "-",
            _closed(a, tz),
        ])
    out.append(layout.Table(COLUMNS, rows, title="Alerts", flagged=frozenset(flagged)))
    out.append(layout.Table([layout.Column("Rule", 30), layout.Column("Alerts", 10, "R")],
                            [[r, count(n)] for r, n in f["by_rule"].items()], title="Alerts per rule"))
    return out


KIND = register(ReportKind("alerts", "Alert report: discrepancies, deadlines and diversion signals", "landscape",
                           compute, blocks, wet_signatures=("reviewed by compliance officer",)))
