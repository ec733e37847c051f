"""Packages (issue 19, package hierarchy: cartons are not vials).

A receipt in packages (``POST /receipts`` with ``packages`` on a line) puts each package's units
on the book sealed in it; they are drawn from only after the package is opened here, by one
authenticated person (the caller) and witnessed by a second (``Witness-Assertion``), who record
the units found (entry ``package_opened``). A shortfall opens a discrepancy over the missing
units, which a manager who neither opened nor witnessed resolves (``POST
/discrepancies/{id}/resolution``). ``GET /packages`` lists the packages received.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import Field, StrictInt

from api.http import queries
from api.http.auth import Witness
from api.http.deps import IdempotencyKey, LedgerDep, OptionalWitnessDep, actor
from api.http.routes_stock import note_stock_read
from api.http.schemas import PROBLEM_RESPONSES, Body, PublicModel, When
from api.http.schemas_clinical import ClinicalResultPublic
from ledger import services
from ledger.domain.commands import OpenPackage
from ledger.domain.principal import Principal

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["packages"], responses=PROBLEM_RESPONSES)

#: A package id: csledger's ``P<seq>-<n>``, or the carton's GTIN and serial, ``(01)<GTIN>(21)<serial>``.
PackageId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.()-]+$")]


class PackageOpeningCreate(Body):
    """A sealed package opened before a witness: the units found in it."""

    units_found: Annotated[StrictInt, Field(ge=0, le=1000, description=(
        "Units (vials, devices) found in the package; fewer than it was received holding opens a discrepancy, "
        "more is refused."))]
    occurred_at: When
    late_reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"units_found": 10, "occurred_at": "2026-11-25T09:45:00-06:00"}]}}


class PackageOpenedPublic(ClinicalResultPublic):
    package_id: str
    package_opened_seq: int
    units_found: list[str]
    units_missing: list[str]
    discrepancy_id: str | None


class PackagePublic(PublicModel):
    package_id: str
    ndc_key: str
    lot: str
    expiry: str
    gtin: str | None
    serial: str | None
    units_per_package: int
    received_seq: int
    opened_seq: int | None
    units_found: int | None
    discrepancy_id: str | None
    #: sealed: not opened, its units on hand; opened; gone: its units left sealed (moved whole)
    state: Literal["sealed", "opened", "gone"]
    units_on_hand: int


def _p(w: Witness | None) -> Principal | None:
    return w.principal if w is not None else None


@router.post("/packages/{package_id}/openings", status_code=status.HTTP_201_CREATED,
             response_model=PackageOpenedPublic, name="open_package")
def open_package(package_id: PackageId, body: PackageOpeningCreate, ledger: LedgerDep,
                 who: Annotated[Principal, actor("open_package")], witness: OptionalWitnessDep,
                 idempotency_key: IdempotencyKey = None) -> dict:
    """Open a sealed package (carton, kit) before a second person (``Witness-Assertion``) and
    record the units found (entry ``package_opened``): they become usable; missing units open a
    discrepancy (a manager resolves it). Opening twice, a package not received here or not on
    hand, and more units than it held are refused."""
    return services.open_package(ledger, who, OpenPackage(package_id, body.units_found, body.occurred_at,
                                                          body.late_reason),
                                 witness=_p(witness), idempotency_key=idempotency_key)


@router.get("/packages", response_model=list[PackagePublic], name="list_packages")
def list_packages(request: Request, ledger: LedgerDep, who: Annotated[Principal, actor("list_packages")],
                  sealed: Annotated[bool | None, Query(description="true: only sealed packages; false: only "
                                                                   "those opened or gone.")] = None) -> list[dict]:
    """The packages received in packages, in order of receipt, with the units of each on hand."""
    note_stock_read(request, ledger, who, "GET /packages")
    return [{**{k: r[k] for k in PackagePublic.model_fields if k in r}, "state": r["state"],
             "units_on_hand": r["units_on_hand"]} for r in queries.packages(ledger, who.registrant, sealed=sealed)]
