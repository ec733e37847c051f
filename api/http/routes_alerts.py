"""Alerts over HTTP (issue 7): list and filter, acknowledge, resolve. The routes call the alert
services; who may close an alert (a manager or compliance officer who is not its subject) is
decided there, inside the append transaction, like every other rule."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from api.http.deps import IdempotencyKey, LedgerDep, actor
from api.http.schemas import PROBLEM_RESPONSES, When
from api.http.schemas_clinical import ClinicalResultPublic
from ledger.domain.principal import Principal
from ledger.integrity.canonical import format_time
from ledger.services import alerts as alert_service

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["alerts"], responses=PROBLEM_RESPONSES)
AlertId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class AlertClosureCreate(BaseModel):
    """Why an alert is taken up or closed; the signer comes from the login."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"category": "documentation_error", "explanation": "late entry: paper downtime log transcribed next morning"}]})
    category: Annotated[str, Field(min_length=1, max_length=64)]
    explanation: Annotated[str, Field(min_length=1, max_length=1000)]


class AlertPage(BaseModel):
    model_config = ConfigDict(extra="allow")
    items: list[dict[str, Any]]


@router.get("/alerts", response_model=AlertPage, name="list_alerts")
def list_alerts(ledger: LedgerDep, who: Annotated[Principal, actor("list_alerts")],
                status_: Annotated[Literal["open", "acknowledged", "resolved", "all"], Query(alias="status")] = "open",
                rule: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+$")] = None,
                severity: Annotated[Literal["low", "medium", "high", "critical"] | None, Query()] = None,
                subject: Annotated[str | None, Query(max_length=64, description="A staff id the alert is about.")] = None,
                raised_from: Annotated[When | None, Query(description="Inclusive.")] = None,
                raised_to: Annotated[When | None, Query(description="Exclusive.")] = None) -> dict:
    """Alerts with their rule, severity, evidence (entry seqs and figures) and deadlines; open
    ones (not yet resolved) by default. Count discrepancies appear as views of the discrepancy."""
    items = alert_service.list_alerts(
        ledger, who.registrant, status=None if status_ == "all" else status_, rule=rule, severity=severity,
        subject=subject, raised_from=format_time(raised_from) if raised_from else None,
        raised_to=format_time(raised_to) if raised_to else None)
    return {"items": items}


@router.post("/alerts/{alert_id}/acknowledgements", status_code=status.HTTP_201_CREATED,
             response_model=ClinicalResultPublic, name="acknowledge_alert")
def acknowledge_alert(alert_id: AlertId, body: AlertClosureCreate, ledger: LedgerDep,
                      who: Annotated[Principal, actor("acknowledge_alert")],
                      idempotency_key: IdempotencyKey = None) -> dict:
    """Take an alert up (it stays open until resolved)."""
    return alert_service.acknowledge_alert(ledger, who, alert_id, body.category, body.explanation,
                                           idempotency_key=idempotency_key)


@router.post("/alerts/{alert_id}/resolutions", status_code=status.HTTP_201_CREATED,
             response_model=ClinicalResultPublic, name="resolve_alert")
def resolve_alert(alert_id: AlertId, body: AlertClosureCreate, ledger: LedgerDep,
                  who: Annotated[Principal, actor("resolve_alert")],
                  idempotency_key: IdempotencyKey = None) -> dict:
    """Close an alert with its category and explanation."""
    return alert_service.resolve_alert(ledger, who, alert_id, body.category, body.explanation,
                                       idempotency_key=idempotency_key)
