"""Bodies and answers of the prescriber endpoints (issue 19)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from api.http.schemas import Body, CommandResultPublic, PublicModel, StaffId

State = Annotated[str, Field(min_length=2, max_length=2, examples=["TX"])]
Schedule = Literal["2", "2N", "3", "3N", "4", "5"]


class PrescriberCreate(Body):
    """A prescriber's DEA registration and state licence; the same DEA number again records a
    renewal (it supersedes the earlier registration)."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    dea_number: Annotated[str, Field(min_length=1, max_length=16)]
    registration_state: State
    schedules: Annotated[list[Schedule], Field(min_length=1, max_length=12)]
    expires_on: Annotated[str, Field(min_length=10, max_length=10, pattern=r"^\d{4}-\d{2}-\d{2}$")]
    state_license_number: Annotated[str, Field(min_length=1, max_length=32)]
    state_license_state: State
    staff_id: StaffId | None = None
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "Dr. Dana Prescriber", "dea_number": "BP2345672", "registration_state": "TX",
         "schedules": ["2", "2N", "3", "3N", "4", "5"], "expires_on": "2028-05-31",
         "state_license_number": "Q1234", "state_license_state": "TX"}]})


class PrescriberRegisteredPublic(CommandResultPublic):
    dea_number: str
    name: str
    expires_on: str
    schedules: list[str]
    #: The seq of the registration this one supersedes (a renewal), if any.
    supersedes_seq: int | None = None
    seq: int


class PrescriberPublic(PublicModel):
    dea_number: str
    name: str
    registration_state: str
    schedules: list[str]
    expires_on: str
    state_license_number: str
    state_license_state: str
    staff_id: str | None
    registered_seq: int
    #: The registration has not expired on the clinic's local day.
    active: bool
