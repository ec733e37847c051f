"""Bodies and answers of the esketamine (Spravato) session endpoint (issue 19)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from api.http.schemas import Body, CommandResultPublic, Quantity, When

DeviceId = Annotated[str, Field(min_length=1, max_length=128, examples=["V20-1"])]


class EsketamineSessionCreate(Body):
    """A nasal-spray session: the patient self-administered the devices named (each used whole)
    under the recording person's direct observation, then was monitored at least 2 hours."""

    patient_id: Annotated[str, Field(min_length=1, max_length=32, examples=["P40"])]
    prescriber_dea_number: Annotated[str, Field(min_length=1, max_length=16, examples=["FB7654329"])]
    device_ids: Annotated[list[DeviceId], Field(min_length=1, max_length=6, description=(
        "The devices used, by id (each a tracked unit, used whole): 2 for 56 mg, 3 for 84 mg."))]
    dose_mg: Annotated[Quantity, Field(description="The dose: 56.00 or 84.00 (devices x 28 mg).")]
    administered_at: Annotated[When, Field(description="When the patient used the first device.")]
    observation_started_at: When
    observation_ended_at: Annotated[When, Field(description=(
        "When the patient was judged safe to leave: at least 2 hours after administration (Spravato REMS)."))]
    late_reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"patient_id": "P40", "prescriber_dea_number": "FB7654329", "device_ids": ["V20-1", "V20-2"],
         "dose_mg": "56.00", "administered_at": "2026-11-25T09:00:00-06:00",
         "observation_started_at": "2026-11-25T09:00:00-06:00",
         "observation_ended_at": "2026-11-25T11:05:00-06:00"}]})


class EsketamineSessionPublic(CommandResultPublic):
    """The session recorded: its id, the dose and devices, and the minutes observed."""

    session_id: str
    dose_mg: str
    devices: list[str]
    mg_per_device: str
    observed_minutes: int
