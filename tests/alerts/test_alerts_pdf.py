"""The alert report's figures, pure: alerts raised in the period, alerts raised earlier and
still open at its start (carried over), count discrepancies as views, who closed what."""

from __future__ import annotations

from datetime import date

from reports.alerts_pdf import compute
from reports.fmt import Period
from reports.source import LedgerState, Snapshot

TZ = "America/Chicago"


def e(seq, kind, at, sigs=(), **f):
    return {"registrant": "AB1234563", "seq": seq, "kind": kind, "occurred_at": at, "recorded_at": at,
            "signatures": list(sigs), **f}


def raised(seq, at, aid, rule="late_entry"):
    return e(seq, "alert_raised", at, alert_id=aid, alert_key=f"k{seq}", rule=rule, severity="low", subjects=["S4"],
             summary="s", parameters={}, evidence_seqs=[seq - 1], figures={}, deadlines={}, raised_by="scan")


SIG = {"staff_id": "S9", "printed_name": "Cole Compliance", "meaning": "approved", "signed_at": "x", "auth_method": "password"}
PRODUCT = {"ndc_key": "67457000110"}


def test_period_selection_carry_over_and_discrepancy_view():
    entries = [
        e(0, "registrant_registered", "2026-10-01T12:00:00.000000Z"),
        e(1, "staff_enrolled", "2026-10-01T12:00:00.000000Z", staff_id="S4", printed_name="Nora Nurse"),
        raised(5, "2026-10-20T15:00:00.000000Z", "AL5"),  # before the period, resolved before it: out
        e(6, "alert_resolved", "2026-10-25T15:00:00.000000Z", [SIG], alert_id="AL5", category="explained",
          explanation="fine"),
        raised(7, "2026-10-28T15:00:00.000000Z", "AL7"),  # before, still open at the start: carried over
        raised(9, "2026-11-03T15:00:00.000000Z", "AL9"),  # in the period, resolved in it
        e(10, "alert_resolved", "2026-11-04T15:00:00.000000Z", [SIG], alert_id="AL9", category="documentation_error",
          explanation="paper log"),
        e(11, "stock_counted", "2026-11-05T14:00:00.000000Z", [{**SIG, "staff_id": "S4", "meaning": "counted"}],
          session_id="C", blind=True, lines=[{"product": PRODUCT, "expected_ml": "10.00", "counted_ml": "9.50",
                                               "difference_ml": "-0.50", "discrepancy_id": "D11-0"}]),
        raised(12, "2026-12-02T15:00:00.000000Z", "AL12"),  # after the period: out
    ]
    snap = Snapshot(LedgerState("AB1234563", 13, "00" * 32), entries)
    f = compute(snap, Period(date(2026, 11, 1), date(2026, 11, 30), TZ))
    got = {a["alert_id"]: (a["status"], a["carried_over"]) for a in f["alerts"]}
    assert got == {"AL7": ("open", True), "AL9": ("resolved", False), "D11-0": ("open", False)}
    assert f["alerts"][0]["alert_id"] == "D11-0"  # a shortage is high severity: listed first
    assert f["alerts"][0]["subjects"] == [{"staff_id": "S4", "printed_name": "Nora Nurse"}]
    al9 = next(a for a in f["alerts"] if a["alert_id"] == "AL9")
    assert al9["resolved"]["by"] == "Cole Compliance" and al9["resolved"]["category"] == "documentation_error"
    assert f["by_status"] == {"open": 2, "resolved": 1}
