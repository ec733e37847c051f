"""Bodies of the clinic-operation commands (``...Create``) and their answers. Quantities are
decimal strings; times carry a zone. A patient's name and address travel only in request and
response bodies, never in a URL or a log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, StrictBool, StrictInt

from api.http.schemas import (
    AddressCreate,
    AddressPublic,
    Body,
    CommandResultPublic,
    IsoDate,
    PublicModel,
    Quantity,
    ScheduleCode,
    When,
)

VialId = Annotated[str, Field(min_length=1, max_length=128, examples=["V14-1"])]
VialIds = Annotated[list[VialId], Field(min_length=1, max_length=200)]
Reason = Annotated[str, Field(min_length=1, max_length=500)]
LateReason = Annotated[str, Field(min_length=1, max_length=500)] | None
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
Dea = Annotated[str, Field(min_length=1, max_length=16, examples=["FB7654329"])]
Whole = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
HHMM = Annotated[str, Field(pattern=r"^[0-2][0-9]:[0-5][0-9]$")]


def _ex(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class ClinicalResultPublic(CommandResultPublic):
    """The entries recorded, plus what the command answers (ids, amounts, deadlines)."""

    model_config = ConfigDict(extra="allow")


class PolicyCreate(Body):
    beyond_use_days: Annotated[StrictInt, Field(ge=1, le=3650)] = 28
    late_entry_limit_hours: Annotated[StrictInt, Field(ge=1, le=24 * 365)] = 24
    variance_threshold_percent: Quantity = "1.00"
    count_schedule: Annotated[str, Field(min_length=1, max_length=32)] = "daily_opening"
    clinic_hours: dict[Annotated[str, Field(max_length=9)], tuple[HHMM, HHMM]] = Field(default_factory=dict, max_length=7)
    dosage_unit: Annotated[str, Field(min_length=1, max_length=32)] = "container"
    reason: Reason = "initial policy"
    passkey_required_for: list[Literal["witnessing", "destruction"]] = Field(
        default_factory=list, max_length=2, description="Where a password key may not sign: the person confirms "
        "with a passkey (every witnessed signature; every signature on a destruction).")
    open_count_tolerance_ml: Quantity = Field(
        default="0.10", description="Issue 20: mL per opened vial a count may differ from the book without opening a "
        "discrepancy (0 to 1.00; 0: exact). Sealed vials are always counted exactly.")
    model_config = _ex({"beyond_use_days": 28, "late_entry_limit_hours": 24, "variance_threshold_percent": "1.00",
                        "count_schedule": "daily_opening", "clinic_hours": {"mon": ["08:00", "18:00"]},
                        "dosage_unit": "container", "reason": "clinic policy adopted 2026-11-25"})


#: Issue 21: a date of birth, the second identifier a pick shows (sealed with the name). The
#: service checks it is a real date from 1900 on and not in the future, naming ``date_of_birth``.
BirthDate = Annotated[str, Field(min_length=1, max_length=10, examples=["1984-03-07"],
                                 description="Date of birth, YYYY-MM-DD (a real date, from 1900, not in the future).")]


class PatientCreate(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    address: AddressCreate
    date_of_birth: BirthDate | None = None
    model_config = _ex({"name": "Jordan Example", "address": {"street": "12 Elm St", "city": "Austin", "state": "TX",
                                                              "postal_code": "78702"}, "date_of_birth": "1984-03-07"})


class PatientDetailsChangeCreate(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    address: AddressCreate
    reason: Reason
    date_of_birth: BirthDate | None = Field(default=None, description="A new date of birth; left out, the one "
                                                                      "registered is kept.")
    model_config = _ex({"name": "Jordan Example", "address": {"street": "40 Oak Ave", "city": "Austin", "state": "TX",
                                                              "postal_code": "78703"}, "reason": "moved"})


class PatientPublic(PublicModel):
    patient_id: str
    name: str
    address: AddressPublic
    date_of_birth: str | None = Field(default=None, description="YYYY-MM-DD; null when none was given.")
    matches_commitment: bool = Field(description="False if the registry row no longer matches the ledger's commitment.")


class DrawCreate(Body):
    vial_id: VialId
    ml: Quantity


class WasteCreate(Body):
    ml: Quantity
    method: Annotated[str, Field(min_length=1, max_length=200, examples=["sharps container, syringe expelled"])]


class AdministrationCreate(Body):
    patient_id: Annotated[str, Field(min_length=1, max_length=32, examples=["P40"])]
    prescriber_dea_number: Dea
    weight_kg: Quantity
    ordered_mg_per_kg: Quantity
    draws: Annotated[list[DrawCreate], Field(min_length=1, max_length=20)]
    ml_given: Quantity
    started_at: When
    ended_at: When
    waste: WasteCreate | None = Field(default=None, description="The remainder, wasted in the same command; needs "
                                      "a Witness-Assertion header.")
    late_reason: LateReason = None
    documents: Annotated[list[Sha256], Field(max_length=20, description=(
        "SHA-256 of stored documents the infusion is recorded from (the scanned downtime paper sheet); "
        "optional."))] = []
    model_config = _ex({"patient_id": "P40", "prescriber_dea_number": "FB7654329", "weight_kg": "80.00",
                        "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": "V14-1", "ml": "1.00"}], "ml_given": "0.80",
                        "started_at": "2026-11-25T09:00:00-06:00", "ended_at": "2026-11-25T09:40:00-06:00",
                        "waste": {"ml": "0.20", "method": "sharps container"}})


class WasteRecordCreate(Body):
    administration_id: Annotated[str, Field(min_length=1, max_length=64)]
    ml: Quantity
    method: Annotated[str, Field(min_length=1, max_length=200)]
    occurred_at: When
    late_reason: LateReason = None
    documents: Annotated[list[Sha256], Field(max_length=20, description=(
        "SHA-256 of stored documents the waste is recorded from (the downtime paper sheet); optional."))] = []
    model_config = _ex({"administration_id": "A52", "ml": "0.20", "method": "sharps container",
                        "occurred_at": "2026-11-25T09:45:00-06:00"})


class CountCreate(Body):
    ndcs: Annotated[list[Annotated[str, Field(max_length=20)]], Field(max_length=50)] = []
    blind: StrictBool = True
    model_config = _ex({"ndcs": ["67457-0001-10"], "blind": True})


class OpenVialCreate(Body):
    vial_id: VialId
    ml: Quantity


class CountLineCreate(Body):
    ndc: Annotated[str, Field(min_length=1, max_length=20)]
    sealed_containers: Whole
    open_containers: Whole = 0
    open_ml: Quantity = "0.00"
    # issue 19: sealed cartons counted as cartons, their units exact (beside sealed_containers)
    sealed_packages: Whole = 0
    open_vials: list[OpenVialCreate] = Field(
        default_factory=list, max_length=50, description="Issue 20 (optional): the opened vials counted one by one, "
        "each opened and on hand; their mL add up to open_ml. A loss found is then taken out of the vial that was short.")


class CountSubmissionCreate(Body):
    lines: Annotated[list[CountLineCreate], Field(min_length=1, max_length=50)]
    occurred_at: When
    late_reason: LateReason = None
    model_config = _ex({"lines": [{"ndc": "67457-0001-10", "sealed_containers": 4, "open_containers": 1,
                                   "open_ml": "6.00"}], "occurred_at": "2026-11-25T08:05:00-06:00"})


class ResolutionCreate(Body):
    category: Literal["documentation_error", "breakage", "spill", "theft_or_loss", "other"]
    explanation: Reason
    fixed_by_seq: Annotated[StrictInt, Field(ge=0, le=2**62)] | None = None
    breakage_seq: Annotated[StrictInt, Field(ge=0, le=2**62, description=(
        "spill | breakage: the breakage_recorded entry (two people who saw it) that happened before the count "
        "and was recorded after it"))] | None = None
    model_config = _ex({"category": "theft_or_loss", "explanation": "vial not found after a search of the med room"})


class DestructionCreate(Body):
    vial_ids: VialIds
    method: Annotated[str, Field(min_length=1, max_length=200)]
    place: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Reason
    occurred_at: When
    late_reason: LateReason = None
    documents: Annotated[list[Sha256], Field(max_length=20)] = []
    model_config = _ex({"vial_ids": ["V14-1"], "method": "chemical digestion (Rx Destroyer)", "place": "med room",
                        "reason": "past beyond-use date", "occurred_at": "2026-11-25T17:00:00-06:00"})


class TransferCreate(Body):
    vial_ids: VialIds
    receiver_dea_number: Dea
    receiver_name: Annotated[str, Field(min_length=1, max_length=200)]
    receiver_address: AddressCreate
    invoice_number: Annotated[str, Field(min_length=1, max_length=64)]
    occurred_at: When
    late_reason: LateReason = None
    # Issue 19: the receiver's DEA registration, checked (current on the day, covering the
    # products' schedule) and copied into the entry; required by the service.
    receiver_registration_expires_on: IsoDate | None = Field(
        default=None, description="The day the receiver's DEA registration expires (required).")
    receiver_schedules: Annotated[list[ScheduleCode], Field(min_length=1, max_length=6)] | None = Field(
        default=None, description="The schedules the receiver's registration covers; ketamine needs 3 or 3N.")
    model_config = _ex({"vial_ids": ["V14-2"], "receiver_dea_number": "FB7654329",
                        "receiver_name": "Calm Waters Ketamine Clinic - Denver",
                        "receiver_address": {"street": "2200 Larimer St", "city": "Denver", "state": "CO",
                                             "postal_code": "80205"},
                        "invoice_number": "TR-2026-001", "occurred_at": "2026-11-25T10:00:00-06:00",
                        "receiver_registration_expires_on": "2028-05-31", "receiver_schedules": ["3", "3N", "4", "5"]})


class ReturnCreate(Body):
    vial_ids: VialIds
    recipient_type: Literal["supplier", "reverse_distributor"]
    recipient_name: Annotated[str, Field(min_length=1, max_length=200)]
    recipient_address: AddressCreate
    recipient_dea_number: Dea
    invoice_number: Annotated[str, Field(min_length=1, max_length=64)]
    occurred_at: When
    late_reason: LateReason = None
    # Issue 19: the recipient's DEA registration, checked and copied into the entry. A supplier
    # recorded here under that DEA number is checked against its recorded registration (these
    # may then be left out); a reverse distributor must give them.
    recipient_registration_expires_on: IsoDate | None = Field(
        default=None, description="The day the recipient's DEA registration expires (a supplier recorded here: "
                                  "taken from its record).")
    recipient_schedules: Annotated[list[ScheduleCode], Field(min_length=1, max_length=6)] | None = Field(
        default=None, description="The schedules the recipient's registration covers; ketamine needs 3 or 3N.")
    model_config = _ex({"vial_ids": ["V14-3"], "recipient_type": "reverse_distributor", "recipient_name": "RetuRx",
                        "recipient_address": {"street": "1 Dock Rd", "city": "Dallas", "state": "TX",
                                              "postal_code": "75201"}, "recipient_dea_number": "RR1234563",
                        "invoice_number": "RD-77", "occurred_at": "2026-11-25T10:00:00-06:00",
                        "recipient_registration_expires_on": "2028-09-30",
                        "recipient_schedules": ["2", "2N", "3", "3N", "4", "5"]},
                       {"vial_ids": ["V14-4"], "recipient_type": "supplier", "recipient_name": "Gulf Medical Supply",
                        "recipient_address": {"street": "5 Depot Rd", "city": "Houston", "state": "TX",
                                              "postal_code": "77002"}, "recipient_dea_number": "PB1234563",
                        "invoice_number": "RA-12", "occurred_at": "2026-11-25T10:00:00-06:00"})


class LostVialCreate(Body):
    vial_id: VialId
    ml: Quantity | None = None


class LossReportCreate(Body):
    discovered_at: When
    loss_type: Literal["night_break_in", "armed_robbery", "employee_pilferage", "customer_theft", "lost_in_transit",
                       "other"]
    police_notified: StrictBool
    losses_past_24_months: Whole
    purchase_value_usd: Quantity
    lost: Annotated[list[LostVialCreate], Field(max_length=200)] = []
    covers_seqs: Annotated[list[Annotated[StrictInt, Field(ge=0, le=2**62)]], Field(max_length=200)] = []
    police_department: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    police_report_number: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    documents: Annotated[list[Sha256], Field(max_length=20)] = []
    # issue 20 (Form 106 complete); "description" is read as the narrative, the word clinics use
    narrative: Annotated[str, Field(min_length=1, max_length=4000)] | None = Field(
        default=None, validation_alias=AliasChoices("narrative", "description"),
        description="What happened: how the loss was discovered and what is known (also accepted as `description`).")
    corrective_measures: Annotated[str, Field(min_length=1, max_length=2000)] | None = None
    other_explanation: Annotated[str, Field(min_length=1, max_length=1000)] | None = Field(
        default=None, description="Required with loss_type \"other\", refused with any other type.")
    contact_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    contact_phone: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    model_config = _ex({"discovered_at": "2026-11-25T07:30:00-06:00", "loss_type": "night_break_in",
                        "police_notified": True, "losses_past_24_months": 0, "purchase_value_usd": "48.00",
                        "lost": [{"vial_id": "V14-4"}], "police_department": "Austin PD",
                        "police_report_number": "26-112233",
                        "narrative": "Back door forced overnight; the safe was opened and one vial taken.",
                        "corrective_measures": "Door replaced, alarm contact added, safe code changed.",
                        "contact_name": "Mia Manager", "contact_phone": "+1 (512) 555-0142"})


class DeaNoticeCreate(Body):
    """Issue 20: the written notice of a theft or loss report went to the DEA field office."""

    loss_report_seq: Annotated[StrictInt, Field(ge=0, le=2**62)]
    sent_at: When
    method: Literal["email", "fax", "phone", "letter", "online"]
    recipient: Annotated[str, Field(min_length=1, max_length=300)]
    document_sha256: Sha256 | None = None
    model_config = _ex({"loss_report_seq": 412, "sent_at": "2026-11-25T11:00:00-06:00", "method": "email",
                        "recipient": "DEA Houston Division, Austin Resident Office"})


class Form106FilingCreate(Body):
    """Issue 20: DEA Form 106 was filed (electronically), with DEA's confirmation number."""

    loss_report_seq: Annotated[StrictInt, Field(ge=0, le=2**62)]
    filed_at: When
    confirmation_number: Annotated[str, Field(min_length=1, max_length=64)]
    document_sha256: Sha256 | None = None
    model_config = _ex({"loss_report_seq": 412, "filed_at": "2026-12-01T15:20:00-06:00",
                        "confirmation_number": "106-2026-0042187"})


class CorrectionLineCreate(Body):
    vial_id: VialId
    direction: Literal["add", "remove"]
    ml: Quantity


class CorrectionCreate(Body):
    corrects_seq: Annotated[StrictInt, Field(ge=0, le=2**62)]
    reason: Reason
    lines: Annotated[list[CorrectionLineCreate], Field(max_length=50)] = []
    model_config = _ex({"corrects_seq": 52, "reason": "0.20 mL typed as 2.00 mL",
                        "lines": [{"vial_id": "V14-1", "direction": "add", "ml": "1.80"}]})


class QuarantineCreate(Body):
    vial_ids: VialIds
    reason: Reason
    model_config = _ex({"vial_ids": ["V14-5"], "reason": "carton seal broken on arrival (DSCSA suspect product)"})


class BreakageLineCreate(Body):
    vial_id: VialId
    ml: Quantity | None = None  # None: all the vial holds


class BreakageCreate(Body):
    """A breakage or spill, recorded when it happened, witnessed by a second person who saw it."""

    what: Literal["breakage", "spill"]
    description: Annotated[str, Field(min_length=1, max_length=1000)]
    recoverable: StrictBool
    lines: Annotated[list[BreakageLineCreate], Field(min_length=1, max_length=50)]
    occurred_at: When
    late_reason: LateReason = None
    model_config = _ex({"what": "spill", "description": "syringe knocked off the tray while drawing up",
                        "recoverable": False, "lines": [{"vial_id": "V14-1", "ml": "1.50"}],
                        "occurred_at": "2026-11-25T09:40:00-06:00"})
