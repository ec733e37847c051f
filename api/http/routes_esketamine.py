"""Esketamine (Spravato) nasal-spray sessions over HTTP (issue 19).

The healthcare provider who directly observed the patient's self-administration records the
session (a nurse, prescriber or pharmacist): the devices used (each a tracked unit, used whole),
the flat dose (56 or 84 mg), the prescriber, and the REMS observation of at least 2 hours. The
entry is ``esketamine_session_recorded``; the devices leave the book with it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status

from api.http.deps import IdempotencyKey, LedgerDep, actor
from api.http.schemas import PROBLEM_RESPONSES
from api.http.schemas_esketamine import EsketamineSessionCreate, EsketamineSessionPublic
from ledger import services
from ledger.domain.commands import RecordEsketamineSession
from ledger.domain.principal import Principal

router = APIRouter(prefix="/v1/registrants/{dea}", responses=PROBLEM_RESPONSES)


@router.post("/esketamine-sessions", status_code=status.HTTP_201_CREATED, response_model=EsketamineSessionPublic,
             tags=["clinic operations"], name="record_esketamine_session")
def record_esketamine_session(body: EsketamineSessionCreate, ledger: LedgerDep,
                              who: Annotated[Principal, actor("record_esketamine_session")],
                              idempotency_key: IdempotencyKey = None) -> dict:
    """Record an esketamine nasal-spray session (entry ``esketamine_session_recorded``), signed by
    the caller, who directly observed it. Refused: a dose other than 56 or 84 mg or other than the
    devices named x 28 mg; a device of a non-device product or of a second product; a device
    already used, quarantined or not on hand; an observation under 2 hours after administration,
    or ending before it starts; a prescriber not registered and active."""
    return services.record_esketamine_session(ledger, who, RecordEsketamineSession(
        body.patient_id, body.prescriber_dea_number, tuple(body.device_ids), body.dose_mg, body.administered_at,
        body.observation_started_at, body.observation_ended_at, body.late_reason), idempotency_key=idempotency_key)
