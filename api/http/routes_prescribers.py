"""Prescribers (issue 19): who may order a dose here, and their registration.

A manager or administrator registers a prescriber (entry ``prescriber_registered``) with their
DEA registration (a practitioner's, in the clinic's state, covering schedule 3 or 3N), its
expiry and their state licence; the same DEA number again records a renewal. Every
administration must name an active registered prescriber.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status

from api.http import queries
from api.http.deps import IdempotencyKey, LedgerDep, actor
from api.http.schemas import PROBLEM_RESPONSES
from api.http.schemas_prescribers import (
    PrescriberCreate,
    PrescriberPublic,
    PrescriberRegisteredPublic,
)
from ledger import services
from ledger.domain.commands import RegisterPrescriber
from ledger.domain.principal import Principal

router = APIRouter(prefix="/v1/registrants/{dea}", responses=PROBLEM_RESPONSES)


@router.get("/prescribers", response_model=list[PrescriberPublic], tags=["prescribers"], name="list_prescribers")
def list_prescribers(ledger: LedgerDep, who: Annotated[Principal, actor("list_prescribers")]) -> list[dict]:
    """Registered prescribers, each as their latest registration (``active``: not expired today)."""
    return queries.prescribers(ledger, who.registrant)


@router.post("/prescribers", status_code=status.HTTP_201_CREATED, response_model=PrescriberRegisteredPublic,
             tags=["prescribers"], name="register_prescriber")
def register_prescriber(body: PrescriberCreate, ledger: LedgerDep,
                        who: Annotated[Principal, actor("register_prescriber")],
                        idempotency_key: IdempotencyKey = None) -> dict:
    """Register a prescriber (entry ``prescriber_registered``), or record their renewed registration.
    Refused: a DEA number that is not a practitioner's (A, B, F, G, M), a registration or licence
    of another state than the clinic's, schedules without 3 or 3N, an expired registration."""
    return services.register_prescriber(ledger, who, RegisterPrescriber(
        body.name, body.dea_number, body.registration_state, tuple(body.schedules), body.expires_on,
        body.state_license_number, body.state_license_state, body.staff_id), idempotency_key=idempotency_key)
