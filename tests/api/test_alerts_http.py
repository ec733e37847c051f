"""Alerts over HTTP (issue 7): a late receipt raises an alert in its own transaction; the
compliance officer lists it with its evidence and resolves it; the nurse it is about cannot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.services.alerts import attach_alert_rules
from tests.api.test_commands import receipt


def test_list_and_resolve_an_alert_over_http(api):
    attach_alert_rules(api.ledger)
    body = receipt(api, containers=1)
    body["occurred_at"] = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    body["late_reason"] = "network down; transcribed from the paper downtime log"
    r = api.client.post(api.url("/receipts"), json=body, headers=api.headers("nora"))
    assert r.status_code == 201, r.text
    receipt_seq = next(e["seq"] for e in r.json()["entries"] if e["kind"] == "stock_received")

    listed = api.client.get(api.url("/alerts"), headers=api.headers("casey"))
    assert listed.status_code == 200, listed.text
    late = [a for a in listed.json()["items"] if receipt_seq in a["evidence_seqs"]]
    assert len(late) == 1, listed.json()
    alert_id = late[0]["alert_id"]
    assert api.client.get(api.url("/alerts"), headers=api.headers("nora")).status_code == 403

    closure = {"category": "documentation_error", "explanation": "downtime log checked against the invoice"}
    assert api.client.post(api.url(f"/alerts/{alert_id}/resolutions"), json=closure,
                           headers=api.headers("nora")).status_code == 403
    done = api.client.post(api.url(f"/alerts/{alert_id}/resolutions"), json=closure,
                           headers=api.headers("casey", **{"Idempotency-Key": "resolve-1"}))
    assert done.status_code == 201, done.text
    assert [e["kind"] for e in done.json()["entries"]] == ["alert_resolved"]
    still_open = api.client.get(api.url("/alerts"), headers=api.headers("casey")).json()["items"]
    assert alert_id not in {a["alert_id"] for a in still_open}
    resolved = api.client.get(api.url("/alerts?status=resolved"), headers=api.headers("casey")).json()["items"]
    assert alert_id in {a["alert_id"] for a in resolved}
    bad = api.client.post(api.url(f"/alerts/{alert_id}/resolutions"), json={"category": "x", "explanation": "y"},
                          headers=api.headers("casey"))
    assert bad.status_code in (409, 422) and bad.headers["content-type"].startswith("application/problem+json")
