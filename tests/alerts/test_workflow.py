"""The alert workflow on both backends: a rule fires in the triggering entry's transaction,
the alert is a projection rebuilt by ``verify --deep``, and it closes only by an acknowledge or
resolve entry from a manager or compliance officer who is not the person it is about."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.services import alerts as alert_service
from ledger.services.verify import verify
from tests.conftest import BACKENDS, KETAMINE_50, entry_count

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def receive(clinic, who, late: timedelta, invoice: str, reason: str | None = "paper log during network outage"):
    cmd = ReceiveStock(clinic.supplier_id, invoice, clinic.ledger.clock() - late,
                       (ReceivedLineInput(KETAMINE_50, 2, "LOT-1", "2028-06-30"),),
                       late_reason=reason if late > timedelta(hours=24) else None)
    return services.receive_stock(clinic.ledger, who, cmd)


def test_late_entry_fires_just_above_24h_not_at_it(clinic):
    at = receive(clinic, clinic.nurse, timedelta(hours=24), "INV-A")
    assert [e["kind"] for e in at["entries"]] == ["stock_received"]
    above = receive(clinic, clinic.nurse, timedelta(hours=24, seconds=1), "INV-B")
    assert [e["kind"] for e in above["entries"]] == ["stock_received", "alert_raised"]
    seq = above["entries"][0]["seq"]
    [alert] = alert_service.list_alerts(clinic.ledger, clinic.dea)
    assert alert["alert_id"] == f"AL{seq + 1}"
    assert alert["rule"] == "late_entry" and alert["severity"] == "low" and alert["status"] == "open"
    assert alert["evidence_seqs"] == [seq]
    assert alert["figures"]["hours_late"] == "24.00"  # 24 h 1 s, at 2 places
    assert alert["subjects"] == [clinic.nurse.staff_id]
    assert alert["parameters"] == {"late_entry_hours": "24", "late_entry_serious_days": "7"}
    assert "paper log during network outage" in alert["summary"]


def test_late_entry_over_a_week_is_medium(clinic):
    receive(clinic, clinic.nurse, timedelta(days=7, seconds=1), "INV-W")
    [alert] = alert_service.list_alerts(clinic.ledger, clinic.dea)
    assert alert["severity"] == "medium"
    assert alert["figures"]["hours_late"] == "168.00"


def test_acknowledge_then_resolve_and_deep_verify(clinic):
    receive(clinic, clinic.nurse, timedelta(days=2), "INV-1")
    [alert] = alert_service.list_alerts(clinic.ledger, clinic.dea, status="open")
    aid = alert["alert_id"]
    ack = alert_service.acknowledge_alert(clinic.ledger, clinic.manager, aid, "documentation_error",
                                          "Asked Nora for the paper receiving log")
    assert [e["kind"] for e in ack["entries"]] == ["alert_acknowledged"]
    [alert] = alert_service.list_alerts(clinic.ledger, clinic.dea, status="open")
    assert alert["status"] == "acknowledged" and alert["acknowledged_by"] == clinic.manager.staff_id
    with pytest.raises(Conflict):
        alert_service.acknowledge_alert(clinic.ledger, clinic.compliance, aid, "other", "acknowledging twice here")
    alert_service.resolve_alert(clinic.ledger, clinic.compliance, aid, "documentation_error",
                                "Paper log matches the invoice; entered late after the outage")
    assert alert_service.list_alerts(clinic.ledger, clinic.dea, status="open") == []
    [done] = alert_service.list_alerts(clinic.ledger, clinic.dea, status="resolved")
    assert done["resolved_by"] == clinic.compliance.staff_id
    assert done["resolved_category"] == "documentation_error"
    with pytest.raises(Conflict):
        alert_service.resolve_alert(clinic.ledger, clinic.manager, aid, "other", "resolving a second time")
    report = verify(clinic.ledger, deep=True)
    assert report.ok, report.problems


def test_refusals_write_nothing(clinic):
    receive(clinic, clinic.manager_nurse, timedelta(days=2), "INV-2")
    [alert] = alert_service.list_alerts(clinic.ledger, clinic.dea)
    aid = alert["alert_id"]
    assert alert["subjects"] == [clinic.manager_nurse.staff_id]
    before = entry_count(clinic.ledger)
    cases = [
        (clinic.manager_nurse, aid, "documentation_error", "I entered it late myself", Forbidden),  # about them
        (clinic.nurse, aid, "documentation_error", "a nurse may not close alerts", Forbidden),  # wrong role
        (clinic.pharmacist, aid, "documentation_error", "a pharmacist may not either", Forbidden),
        (clinic.manager, aid, "not_a_category", "unknown category given here", InvalidInput),
        (clinic.manager, aid, "other", "short", InvalidInput),
        (clinic.manager, "AL99999", "other", "no such alert exists here", NotFound),
        (clinic.manager, "D12", "other", "not an alert id at all", InvalidInput),
    ]
    for who, alert_id, category, explanation, exc in cases:
        for op in (alert_service.acknowledge_alert, alert_service.resolve_alert):
            with pytest.raises(exc):
                op(clinic.ledger, who, alert_id, category, explanation)
    assert entry_count(clinic.ledger) == before
    assert alert_service.list_alerts(clinic.ledger, clinic.dea)[0]["status"] == "open"


def test_scan_does_not_raise_twice(clinic):
    receive(clinic, clinic.nurse, timedelta(days=3), "INV-3")
    first = alert_service.scan(clinic.ledger, clinic.dea)
    assert first.raised == []  # the in-transaction hook already raised it; the scan agrees
    assert len(alert_service.list_alerts(clinic.ledger, clinic.dea)) == 1


def test_late_entry_limit_comes_from_the_registrants_policy(clinic):
    """The in-transaction rules read the policy in force (issue 22 reads it with the registrant's
    row, once per command): a 4-hour limit fires at 5 hours, where the default 24 would not."""
    from ledger.domain.commands import SetPolicy

    services.set_policy(clinic.ledger, clinic.admin, SetPolicy(late_entry_limit_hours=4, reason="tighter logging"))
    cmd = ReceiveStock(clinic.supplier_id, "INV-P", clinic.ledger.clock() - timedelta(hours=5),
                       (ReceivedLineInput(KETAMINE_50, 2, "LOT-1", "2028-06-30"),),
                       late_reason="paper log during network outage")
    res = services.receive_stock(clinic.ledger, clinic.nurse, cmd)
    assert [e["kind"] for e in res["entries"]] == ["stock_received", "alert_raised"]
    [alert] = alert_service.list_alerts(clinic.ledger, clinic.dea)
    assert alert["rule"] == "late_entry" and alert["parameters"]["late_entry_hours"] == "4"
