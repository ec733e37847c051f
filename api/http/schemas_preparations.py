"""Bodies and answers of the preparation (diluted infusion) endpoints (issue 19)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from api.http.schemas import Body, CommandResultPublic, Quantity, When

VialId = Annotated[str, Field(min_length=1, max_length=128, examples=["V14-1"])]
PreparationId = Annotated[str, Field(min_length=1, max_length=32, examples=["P57"])]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class PreparationDrawCreate(Body):
    vial_id: VialId
    ml: Annotated[Quantity, Field(description="Product mL drawn from the vial (syringe resolution).")]


class PreparationCreate(Body):
    """A bag or syringe-pump syringe prepared for one patient's infusion: the vial draws, the
    diluent, the final volume. Its administration must begin within 4 hours of ``started_at``
    (USP <797> immediate use)."""

    patient_id: Annotated[str, Field(min_length=1, max_length=32, examples=["P40"])]
    prescriber_dea_number: Annotated[str, Field(min_length=1, max_length=16, examples=["FB7654329"])]
    weight_kg: Quantity
    ordered_mg_per_kg: Quantity
    draws: Annotated[list[PreparationDrawCreate], Field(min_length=1, max_length=20)]
    diluent: Annotated[str, Field(min_length=1, max_length=100, examples=["0.9% sodium chloride"])]
    diluent_ml: Quantity
    container: Literal["bag", "syringe"]
    final_ml: Annotated[Quantity, Field(description="The final volume the concentration is read against "
                                                    "(mg / final mL, derived, never stored rounded).")]
    started_at: Annotated[When, Field(description="The start of preparation; the 4-hour beyond-use time runs from it.")]
    late_reason: Reason | None = None
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"patient_id": "P40", "prescriber_dea_number": "FB7654329", "weight_kg": "80.00", "ordered_mg_per_kg": "0.50",
         "draws": [{"vial_id": "V14-1", "ml": "0.80"}], "diluent": "0.9% sodium chloride", "diluent_ml": "100.00",
         "container": "bag", "final_ml": "100.80", "started_at": "2026-11-25T08:40:00-06:00"}]})


class InfusionCreate(Body):
    """The infusion from a preparation, as the pump reports it (never "bag volume minus remainder":
    bags are overfilled)."""

    ml_infused: Annotated[Quantity, Field(description="Diluted mL the pump infused.")]
    started_at: When
    ended_at: When
    stop_reason: Reason | None = Field(default=None, description="Why it stopped before the final volume, if it did.")
    late_reason: Reason | None = None
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ml_infused": "70.00", "started_at": "2026-11-25T09:00:00-06:00", "ended_at": "2026-11-25T09:30:00-06:00",
         "stop_reason": "patient asked to stop"}]})


class PreparationWasteCreate(Body):
    """What is left of a preparation, wasted before a witness (``Witness-Assertion``)."""

    method: Annotated[str, Field(min_length=1, max_length=200, examples=["bag emptied into drug disposal container"])]
    occurred_at: When
    ml_remaining: Quantity | None = Field(default=None, description="Diluted mL discarded, as measured (a record "
                                          "only: what is wasted is the preparation's mg less the mg given).")
    reason: Reason | None = Field(default=None, description="Required when the preparation was never infused "
                                  "(past its beyond-use time, cancelled).")
    late_reason: Reason | None = None
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"method": "bag emptied into drug disposal container", "occurred_at": "2026-11-25T09:35:00-06:00",
         "ml_remaining": "30.80"}]})


class PreparationMadePublic(CommandResultPublic):
    """The preparation recorded: its id, exact mg, the concentration shown (never stored), and
    when it must be in use by."""

    preparation_id: str
    ml_drawn: str
    mg: str
    final_ml: str
    concentration_mg_per_ml: str
    beyond_use_at: str
    opened_vials: list[str]
    beyond_use_dates: dict[str, str]


class PreparationInfusedPublic(CommandResultPublic):
    preparation_id: str
    ml_infused: str
    mg_given: str
    mg_remaining: str
    stopped_early: bool


class PreparationWastedPublic(CommandResultPublic):
    preparation_id: str
    waste_seq: int
    mg_wasted: str
    product_ml_wasted: str
    reconciled: bool
