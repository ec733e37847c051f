"""Diluted infusions over HTTP (issue 19): a bag or syringe prepared, its infusion, its waste.

A nurse, prescriber or pharmacist prepares (``preparation_made``: the vial draws leave the book
now); a nurse or prescriber records the infusion as the pump reports it (``preparation_infused``);
the remainder is wasted before a witness (``preparation_wasted``, ``Witness-Assertion`` header).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.http.deps import IdempotencyKey, LedgerDep, WitnessDep, actor
from api.http.schemas import PROBLEM_RESPONSES
from api.http.schemas_preparations import (
    InfusionCreate,
    PreparationCreate,
    PreparationInfusedPublic,
    PreparationMadePublic,
    PreparationWasteCreate,
    PreparationWastedPublic,
)
from ledger import services
from ledger.domain.commands import DrawInput, InfusePreparation, MakePreparation, WastePreparation
from ledger.domain.principal import Principal

router = APIRouter(prefix="/v1/registrants/{dea}", responses=PROBLEM_RESPONSES)

PreparationPath = Annotated[str, Path(min_length=1, max_length=32, examples=["P57"])]
CREATED = status.HTTP_201_CREATED


@router.post("/preparations", status_code=CREATED, response_model=PreparationMadePublic,
             tags=["clinic operations"], name="make_preparation")
def make_preparation(body: PreparationCreate, ledger: LedgerDep, who: Annotated[Principal, actor("make_preparation")],
                     idempotency_key: IdempotencyKey = None) -> dict:
    """Record a bag or syringe prepared for one patient's infusion (entry ``preparation_made``):
    its draws take their mL off the vials now. Refused: a vial drawn below zero, quarantined,
    expired or past its beyond-use date; more product than the final volume; a syringe over
    60 mL; a prescriber not registered and active."""
    return services.make_preparation(ledger, who, MakePreparation(
        body.patient_id, body.prescriber_dea_number, body.weight_kg, body.ordered_mg_per_kg,
        tuple(DrawInput(d.vial_id, d.ml) for d in body.draws), body.diluent, body.diluent_ml, body.container,
        body.final_ml, body.started_at, body.late_reason), idempotency_key=idempotency_key)


@router.post("/preparations/{preparation_id}/infusions", status_code=CREATED, response_model=PreparationInfusedPublic,
             tags=["clinic operations"], name="infuse_preparation")
def infuse_preparation(preparation_id: PreparationPath, body: InfusionCreate, ledger: LedgerDep,
                       who: Annotated[Principal, actor("infuse_preparation")],
                       idempotency_key: IdempotencyKey = None) -> dict:
    """Record the infusion from a preparation (entry ``preparation_infused``): mg given = mg x mL
    infused / final mL. Refused: started after the beyond-use time (4 hours after the start of
    preparation) or before the preparation; more than the final volume; a second infusion."""
    return services.infuse_preparation(ledger, who, InfusePreparation(
        preparation_id, body.ml_infused, body.started_at, body.ended_at, body.stop_reason, body.late_reason),
        idempotency_key=idempotency_key)


@router.post("/preparations/{preparation_id}/waste", status_code=CREATED, response_model=PreparationWastedPublic,
             tags=["clinic operations"], name="waste_preparation")
def waste_preparation(preparation_id: PreparationPath, body: PreparationWasteCreate, ledger: LedgerDep,
                      who: Annotated[Principal, actor("waste_preparation")], witness: WitnessDep,
                      idempotency_key: IdempotencyKey = None) -> dict:
    """Waste what is left of a preparation before a witness (entry ``preparation_wasted``): mg -
    mg given exactly, or all of it when never infused (then ``reason`` is required)."""
    return services.waste_preparation(ledger, who, WastePreparation(
        preparation_id, body.method, body.occurred_at, body.ml_remaining, body.reason, body.late_reason),
        witness=witness.principal, idempotency_key=idempotency_key)
