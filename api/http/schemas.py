"""Request and response bodies: ``...Create`` (what a caller sends) and ``...Public`` (what the
API answers). Quantities travel as decimal strings ("10.00"), never JSON numbers with fractions:
binary floating point cannot hold 0.1, and a dose must be exactly what the nurse typed.

Shapes are checked here (types, lengths, unknown fields refused); the meaning (a valid NDC, a
DEA check digit, a supplier that exists) is checked by the services, which name the bad field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
)


def _decimal_text(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError('must be a decimal string such as "10.00"')
    if isinstance(value, float):
        raise ValueError('quantities are decimal strings such as "10.00"; JSON numbers with fractions are '
                         'refused because binary floating point cannot hold them exactly')
    if isinstance(value, int):
        return str(value)
    return value


_TIME_TEXT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _time_text(value: Any) -> Any:
    """A time travels as ISO 8601 text: a JSON number (seconds? milliseconds?) or a bare date is
    refused, not read as a Unix time."""
    if not isinstance(value, str) or not _TIME_TEXT.match(value):
        raise ValueError('must be an ISO 8601 date and time with a time zone, such as "2026-11-25T09:30:00-06:00"')
    return value


#: A moment: ISO 8601 text with a time zone (never a number).
When = Annotated[AwareDatetime, BeforeValidator(_time_text)]

#: An exact quantity (mL, mg, kg, mg/mL) as a decimal string with at most 2 places.
Quantity = Annotated[str, BeforeValidator(_decimal_text),
                     Field(min_length=1, max_length=32, pattern=r"^\s*[0-9]+(\.[0-9]+)?\s*$", examples=["10.00"])]
Text = Annotated[str, Field(min_length=1, max_length=200)]
ShortText = Annotated[str, Field(min_length=1, max_length=64)]
LongText = Annotated[str, Field(max_length=1000)]
IsoDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", min_length=10, max_length=10, examples=["2028-03-31"])]
StaffId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", examples=["S4"])]
Count = Annotated[StrictInt, Field(ge=1, le=1000)]
TotpCode = Annotated[str, Field(pattern=r"^[0-9]{6}$", examples=["492039"])]
Password = Annotated[str, Field(min_length=1, max_length=128, examples=["correct horse battery staple"])]
RoleName = Literal["nurse", "pharmacist", "prescriber", "manager", "compliance_officer", "auditor", "administrator"]


class Body(BaseModel):
    """Every request body: unknown fields are refused, so a typo is a 422, not silently lost."""

    model_config = ConfigDict(extra="forbid")


class PublicModel(BaseModel):
    pass


# --- sessions and witnesses -------------------------------------------------------------------


class LoginCreate(Body):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Password
    totp: TotpCode | None = Field(default=None, description="Six-digit TOTP code; needed by administrators and managers.")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"username": "nora", "password": "correct horse battery staple"},
        {"username": "morgan", "password": "correct horse battery staple", "totp": "492039"},
    ]})


class SessionPublic(PublicModel):
    access_token: str = Field(description="Opaque bearer token; send as `Authorization: Bearer <token>`.")
    token_type: Literal["bearer"] = "bearer"
    expires_at: str
    idle_timeout_seconds: int
    registrant: str
    staff_id: str
    printed_name: str
    roles: list[str]
    auth_method: str
    password_change_required: bool


class WhoAmIPublic(PublicModel):
    registrant: str
    staff_id: str
    printed_name: str
    roles: list[str]
    auth_method: str
    expires_at: str
    password_change_required: bool


class PasswordChangeCreate(Body):
    current_password: Password
    new_password: Password
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"current_password": "temporary password 1", "new_password": "four quiet harbor lamps"}]})


class StaffPasswordCreate(Body):
    password: Password = Field(description="Temporary password; its owner must change it at first login.")
    enroll_totp: StrictBool | None = Field(
        default=None, description="Create a new TOTP secret (default: only if the roles need one and none exists).")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"password": "temporary password 1"}, {"password": "temporary password 1", "enroll_totp": True}]})


class CredentialPublic(PublicModel):
    staff_id: str
    password_change_required: bool
    totp_secret: str | None = Field(default=None, description="Shown once, when a TOTP secret was created.")
    totp_uri: str | None = None


class SessionsRevokedPublic(PublicModel):
    staff_id: str
    revoked: int


class WitnessAssertionCreate(Body):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Password | None = Field(default=None, description="The witness's password (method `password`).")
    totp: TotpCode | None = None
    method: Literal["password", "passkey"] = Field(
        default="password", description="`passkey`: the witness confirms with their passkey; no password is sent. "
        "The command then answers 428 with the statement and WebAuthn options; send it again with the "
        "authenticator's answer in `Passkey-Signature`.")
    body_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 (hex) of the exact bytes of "
                                      "the command body the witness is signing for.")]
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"username": "ned", "password": "correct horse battery staple",
         "body_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]})


class WitnessAssertionPublic(PublicModel):
    assertion: str = Field(description="Send as the `Witness-Assertion` header of the command; single use.")
    expires_at: str
    witness_staff_id: str
    witness_printed_name: str
    body_sha256: str


# --- reference data ---------------------------------------------------------------------------


class AddressCreate(Body):
    street: Text
    city: Annotated[str, Field(min_length=1, max_length=100)]
    state: Annotated[str, Field(min_length=2, max_length=2, examples=["TX"])]
    postal_code: Annotated[str, Field(min_length=5, max_length=10, examples=["78701"])]


class AddressPublic(PublicModel):
    street: str
    city: str
    state: str
    postal_code: str


class ProductCreate(Body):
    ndc: Annotated[str, Field(min_length=1, max_length=20, examples=["67457-0001-10"])]
    name: Text
    drug_code: Annotated[str, Field(min_length=1, max_length=4, examples=["7285"])]
    schedule: Annotated[str, Field(min_length=1, max_length=4, examples=["III"])]
    form: ShortText
    strength_mg_per_ml: Quantity
    container_ml: Quantity
    # issue 19, package hierarchy: omitted figures come from csledger's NDC reference
    unit_kind: Literal["vial", "nasal_spray_device", "prefilled_syringe"] | None = Field(
        default=None, description="What one unit (one tracked container) is; from the NDC reference when omitted.")
    unit_ndc: Annotated[str, Field(min_length=1, max_length=20, examples=["67457-0001-00"])] | None = Field(
        default=None, description="The unit's own NDC (21 CFR 201.25), e.g. the vial's; from the NDC reference "
                                  "when omitted.")
    units_per_package: Count | None = Field(
        default=None, description="Units in one package (carton, kit) of `ndc`; from the NDC reference when "
                                  "omitted, else 1.")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ndc": "67457-0001-10", "name": "Ketamine HCl injection 50 mg/mL", "drug_code": "7285", "schedule": "III",
         "form": "injection", "strength_mg_per_ml": "50.00", "container_ml": "10.00",
         "unit_kind": "vial", "units_per_package": 10}]})


class ProductPublic(PublicModel):
    ndc: str
    ndc_key: str
    name: str
    drug_code: str
    schedule: str
    form: str
    strength_mg_per_ml: str
    container_ml: str
    added_seq: int
    unit_kind: str = "vial"  # issue 19
    unit_ndc: str | None = None
    units_per_package: int = 1


ScheduleCode = Literal["2", "2N", "3", "3N", "4", "5"]


class SupplierRegistrationCreate(Body):
    """A supplier's DEA registration as the clinic checked it (issue 19), and its DSCSA status."""

    registration_expires_on: IsoDate = Field(description="The day its DEA registration expires.")
    schedules: Annotated[list[ScheduleCode], Field(min_length=1, max_length=6)] = Field(
        description="The schedules its registration covers (N: non-narcotic); ketamine needs 3 or 3N.")
    authorized_trading_partner: StrictBool = Field(
        description="Whether it is an authorized trading partner under DSCSA (a licensed distributor, "
                    "manufacturer or repackager); receipts from one that is not are refused.")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"registration_expires_on": "2028-05-31", "schedules": ["2", "2N", "3", "3N", "4", "5"],
         "authorized_trading_partner": True}]})


class SupplierCreate(SupplierRegistrationCreate):
    name: Text
    address: AddressCreate
    dea_number: Annotated[str, Field(min_length=1, max_length=16, examples=["PB1234563"])]
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "Gulf Medical Supply", "address": {"street": "5 Depot Rd", "city": "Houston", "state": "TX",
                                                    "postal_code": "77002"}, "dea_number": "PB1234563",
         "registration_expires_on": "2028-05-31", "schedules": ["2", "2N", "3", "3N", "4", "5"],
         "authorized_trading_partner": True}]})


class SupplierPublic(PublicModel):
    supplier_id: str
    name: str
    address: AddressPublic
    dea_number: str
    added_seq: int
    registration_expires_on: str | None = Field(description="None: not recorded yet (receipts wait for it).")
    schedules: list[str]
    authorized_trading_partner: bool | None




class StaffCreate(Body):
    printed_name: Annotated[str, Field(min_length=1, max_length=100)]
    username: Annotated[str, Field(min_length=2, max_length=64)]
    roles: Annotated[list[RoleName], Field(max_length=7)] = []
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"printed_name": "Nora Nurse", "username": "nora", "roles": ["nurse"]}]})


class StaffPublic(PublicModel):
    staff_id: str
    printed_name: str
    username: str
    roles: list[str]
    enrolled_seq: int
    has_password: bool


class RoleGrantCreate(Body):
    role: RoleName
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "pharmacist"}]})


class RoleRevokeCreate(Body):
    role: RoleName
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"role": "pharmacist", "reason": "left the clinic on 2026-11-20"}]})


# --- stock ------------------------------------------------------------------------------------


class InventoryItemCreate(Body):
    ndc: Annotated[str, Field(min_length=1, max_length=20)]
    lot: ShortText
    expiry: IsoDate
    sealed: StrictBool
    ml: Quantity | None = Field(default=None, description="Estimated mL left in an opened vial; absent when sealed.")
    containers: Count = 1
    vial_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Biennial inventories count vials already on the book: name the vial.")
    first_punctured_on: IsoDate | None = Field(
        default=None, description="An opened vial of an initial inventory: the local day it was first punctured "
                                  "(required; its beyond-use date runs from it). Absent when sealed.")
    first_puncture_estimated: StrictBool = Field(
        default=False, description="True when first_punctured_on is an estimate (nobody knows the day).")


class InventoryCreate(Body):
    inventory_type: Literal["initial", "biennial", "other"] = Field(description=(
        "initial: creates the book (nothing to compare with); biennial, other: names the vials on the book found, "
        "compared with the book at that instant, each difference opening a discrepancy (issue 20)."))
    taken_at: Literal["opening_of_business", "close_of_business"]
    occurred_at: When
    items: Annotated[list[InventoryItemCreate], Field(max_length=500)] = []
    late_reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(default=None, description=(
        "Why an 'other' inventory is taken (21 CFR 1304.11(d)/(e): a newly controlled substance, a change of "
        "ownership); only for that type."))
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inventory_type": "initial", "taken_at": "opening_of_business", "occurred_at": "2026-11-25T08:00:00-06:00",
         "items": [{"ndc": "67457-0001-10", "lot": "KA2601", "expiry": "2028-03-31", "sealed": True, "containers": 4},
                   {"ndc": "67457-0001-10", "lot": "KA2601", "expiry": "2028-03-31", "sealed": False, "ml": "6.00",
                    "first_punctured_on": "2026-11-20", "first_puncture_estimated": False}]}]})


class ReceivedLineCreate(Body):
    ndc: Annotated[str, Field(min_length=1, max_length=20)]
    containers: Count | None = Field(
        default=None, description="Units (vials, devices) received one by one; with `packages`, optional: the "
                                  "units the packages hold, as a check.")
    # issue 19, package hierarchy
    packages: Annotated[StrictInt, Field(ge=1, le=200)] | None = Field(
        default=None, description="Packages (cartons, kits) received, as the invoice lists them: their units go on "
                                  "the book sealed in them until a witnessed opening. Scans, GTIN and serials then "
                                  "name the packages.")
    invoiced_packages: Annotated[StrictInt, Field(ge=0, le=1000)] | None = Field(
        default=None, description="Packages the invoice lists, checked against what arrived.")
    lot: ShortText
    expiry: IsoDate
    scans: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=1000)] = Field(
        default=[], description="Raw GS1 DataMatrix scans of the cartons, one per container.")
    gtin: Annotated[str, Field(min_length=8, max_length=14, pattern=r"^[0-9]+$")] | None = None
    serials: Annotated[list[Annotated[str, Field(min_length=1, max_length=20)]], Field(max_length=1000)] = []
    invoiced_containers: Annotated[StrictInt, Field(ge=0, le=1000)] | None = Field(
        default=None, description="Containers the invoice lists, checked against what arrived.")
    quarantine: StrictBool = Field(default=False, description="Receive suspect product straight into quarantine.")


class ReceiptCreate(Body):
    supplier_id: ShortText
    invoice_number: ShortText
    occurred_at: When
    lines: Annotated[list[ReceivedLineCreate], Field(min_length=1, max_length=200)]
    late_reason: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    notes: LongText = ""
    dscsa_reference: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="DSCSA transaction information / statement reference.")
    documents: Annotated[list[Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]], Field(max_length=20)] = []
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"supplier_id": "SUP8", "invoice_number": "GMS-2026-0412", "occurred_at": "2026-11-25T09:30:00-06:00",
         "lines": [{"ndc": "67457-0001-10", "containers": 10, "lot": "KA2611", "expiry": "2028-06-30"}]}]})


class VialPublic(PublicModel):
    vial_id: str
    ndc_key: str
    lot: str
    expiry: str
    state: str
    ml_left: str
    mg_left: str
    strength_mg_per_ml: str
    container_ml: str
    added_seq: int
    last_seq: int
    package_id: str | None = Field(default=None, description="The package (carton, kit) the unit was received in.")
    packaged: bool = Field(default=False, description="Still in its sealed package: opened (witnessed) before use.")


class VialPage(PublicModel):
    items: list[VialPublic]
    next_cursor: str | None


class LotStock(PublicModel):
    lot: str
    expiry: str
    containers: int
    ml: str
    mg: str


class ProductStock(PublicModel):
    ndc_key: str
    ndc: str
    name: str
    containers_sealed: int
    containers_open: int
    ml: str
    mg: str
    lots: list[LotStock]


class StockPublic(PublicModel):
    registrant: str
    products: list[ProductStock]
    total_mg_by_drug_code: dict[str, str]


# --- command results and the record -----------------------------------------------------------


class AppendedPublic(PublicModel):
    seq: int
    kind: str
    leaf_hash: str


class CommandResultPublic(PublicModel):
    """What every recorded command answers: the entries it appended (or, for a retry with the
    same Idempotency-Key and body, the first answer with ``replayed: true``)."""

    command: str
    registrant: str
    entries: list[AppendedPublic]
    replayed: bool = False


class ProductAddedPublic(CommandResultPublic):
    ndc_key: str
    warnings: list[str] = Field(default=[], description="What the product's figures could not be checked against, "
                                "e.g. an NDC that csledger's NDC reference does not hold.")


class SupplierAddedPublic(CommandResultPublic):
    supplier_id: str


class SupplierRegistrationPublic(CommandResultPublic):
    supplier_id: str


class StaffEnrolledPublic(CommandResultPublic):
    staff_id: str
    #: Who signed ``approved``: a second manager or administrator, or the actor when they are the
    #: registrant's only one (``enrolled_alone``).
    approved_by: str
    enrolled_alone: bool


class RoleGrantedPublic(CommandResultPublic):
    approved_by: str
    granted_alone: bool


class StockRecordedPublic(CommandResultPublic):
    vial_ids: list[str]
    total_ml: str | None = None
    package_ids: list[str] = Field(default=[], description="The packages (cartons, kits) a receipt in packages "
                                   "recorded; their units are `vial_ids`, sealed in them until opened.")


class InventoryLinePublic(PublicModel):
    """Issue 20: one product of an inventory against the book at that instant."""

    ndc: str
    name: str
    expected_sealed_containers: int
    expected_open_containers: int
    expected_ml: str
    found_sealed_containers: int
    found_open_containers: int
    found_ml: str
    difference_ml: str
    vials_not_found: list[str]
    discrepancy_id: str | None


class InventoryRecordedPublic(StockRecordedPublic):
    discrepancy_ids: list[str] = Field(default=[], description="The discrepancies the inventory opened: one per "
                                       "product found different from the book (resolve each like a count's).")
    lines: list[InventoryLinePublic] = Field(default=[], description="The comparison with the book, per product "
                                             "(empty for an initial inventory, which creates the book).")


class EntryPublic(PublicModel):
    registrant: str
    seq: int
    kind: str
    occurred_at: str
    recorded_at: str
    leaf_hash: str
    entry: dict[str, Any] = Field(description="The entry object, decoded from its canonical bytes.")


class EntryPage(PublicModel):
    items: list[EntryPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class EntryCanonicalPublic(PublicModel):
    registrant: str
    seq: int
    leaf_hash: str
    canonical: str = Field(description="The entry's canonical JSON text (RFC 8785), exactly as hashed.")


class PatientAccessPublic(PublicModel):
    id: int
    staff_id: str
    patient_id: str = Field(description="The patient read; `*` for a report's row (see `patient_ids`).")
    action: str
    accessed_at: str
    report: str | None = Field(default=None, description="A report's row: the report (kind, period, tree size).")
    patient_ids: list[str] | None = Field(
        default=None, description="A report's row: every patient whose name and address it decrypted.")


class PatientAccessPage(PublicModel):
    items: list[PatientAccessPublic]
    next_cursor: str | None


class Problem(PublicModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] = []


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": Problem.model_json_schema()}}}


#: The problem responses every ``/v1`` route may give, for the OpenAPI document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _problem("Not authenticated: no, unknown, expired or revoked token; failed login; witness refused"),
    403: _problem("Authenticated, but not allowed here: role, registrant, password change pending"),
    404: _problem("Unknown registrant, staff member, product, supplier, vial or entry"),
    409: _problem("Conflicts with what is recorded, or an Idempotency-Key reused for another body"),
    413: _problem("Request body too large"),
    422: _problem("Malformed input: the offending fields are listed"),
}
