"""What callers ask for, in the imperative. Fields hold what the caller typed (quantities as
decimal strings); the services validate every field and name the one that is wrong.

No command carries a person's name: who acts comes from the authenticated ``Principal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AddressInput:
    street: str
    city: str
    state: str
    postal_code: str


@dataclass(frozen=True)
class RegisterRegistrant:
    dea_number: str
    name: str
    address: AddressInput
    time_zone: str
    #: The first administrator, enrolled in the same command (the log's seq 1 and 2).
    admin_printed_name: str
    admin_username: str


@dataclass(frozen=True)
class AddProduct:
    ndc: str
    name: str
    drug_code: str
    schedule: str
    form: str
    strength_mg_per_ml: str
    container_ml: str
    #: Issue 19, package hierarchy: what a unit is ("vial", "nasal_spray_device",
    #: "prefilled_syringe"), the unit's own NDC and the units in one package of ``ndc``. None:
    #: taken from csledger's NDC reference when it holds the NDC, else a vial, one per package.
    unit_kind: str | None = None
    unit_ndc: str | None = None
    units_per_package: int | None = None


@dataclass(frozen=True)
class AddSupplier:
    name: str
    address: AddressInput
    dea_number: str
    #: Issue 19, required: its DEA registration's expiry (YYYY-MM-DD) and schedules, and whether
    #: it is an authorized trading partner under DSCSA (checked against its licence).
    registration_expires_on: str | None = None
    schedules: tuple[str, ...] = ()
    authorized_trading_partner: bool | None = None


@dataclass(frozen=True)
class RecordSupplierRegistration:
    """A supplier's renewed (or first recorded) DEA registration and DSCSA status."""

    supplier_id: str
    registration_expires_on: str
    schedules: tuple[str, ...]
    authorized_trading_partner: bool


@dataclass(frozen=True)
class EnrollStaff:
    printed_name: str
    username: str
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantRole:
    staff_id: str
    role: str


@dataclass(frozen=True)
class RevokeRole:
    staff_id: str
    role: str
    reason: str


@dataclass(frozen=True)
class InventoryItemInput:
    ndc: str
    lot: str
    expiry: str  # YYYY-MM-DD
    sealed: bool
    #: For an opened vial, the estimated mL left; ignored (must be absent) for sealed containers.
    ml: str | None = None
    containers: int = 1  # sealed containers of this line; each gets its own identity
    #: Biennial inventories count vials already on the book: name the vial.
    vial_id: str | None = None
    #: An opened vial in an initial inventory: the local day it was first punctured (issue 19),
    #: so its beyond-use clock does not restart at its first draw in csledger. If nobody knows,
    #: a careful estimate marked ``first_puncture_estimated``.
    first_punctured_on: str | None = None  # YYYY-MM-DD
    first_puncture_estimated: bool = False


@dataclass(frozen=True)
class TakeInventory:
    inventory_type: str  # "initial" | "biennial" | "other" (issue 20)
    taken_at: str  # "opening_of_business" | "close_of_business"
    occurred_at: datetime
    items: tuple[InventoryItemInput, ...] = ()
    late_reason: str | None = None
    documents: tuple[str, ...] = ()  # SHA-256 of stored documents (the signed printed inventory)
    #: Issue 20: why an "other" inventory is taken (21 CFR 1304.11(d)/(e)); only for that type.
    reason: str | None = None


@dataclass(frozen=True)
class ReceivedLineInput:
    ndc: str
    containers: int
    lot: str
    expiry: str  # YYYY-MM-DD
    #: Raw GS1 DataMatrix scans of the cartons (one per container), parsed with ``biip``.
    scans: tuple[str, ...] = ()
    #: Or the product identifier already parsed by a scanner page: GTIN and one serial per carton.
    gtin: str | None = None
    serials: tuple[str, ...] = ()
    #: Containers the invoice lists, to check against what arrived.
    invoiced_containers: int | None = None
    #: Receive suspect product straight into quarantine.
    quarantine: bool = False
    #: Issue 19: packages (cartons, kits) received, as the invoice lists them; then ``containers``
    #: may be None (or the units, packages x units per package, as a check) and scans, GTIN and
    #: serials name the packages. Without it the line is in units, as before.
    packages: int | None = None
    #: Packages the invoice lists, to check against what arrived.
    invoiced_packages: int | None = None


@dataclass(frozen=True)
class ReceiveStock:
    supplier_id: str
    invoice_number: str
    occurred_at: datetime
    lines: tuple[ReceivedLineInput, ...]
    late_reason: str | None = None
    notes: str = field(default="")
    dscsa_reference: str | None = None  # transaction information / statement reference
    documents: tuple[str, ...] = ()  # SHA-256 of stored documents (invoice scan, ...)


# --- clinic operations (issue 3) ----------------------------------------------------------------


@dataclass(frozen=True)
class SetPolicy:
    beyond_use_days: int = 28
    late_entry_limit_hours: int = 24
    variance_threshold_percent: str = "1.00"
    count_schedule: str = "daily_opening"
    clinic_hours: dict[str, tuple[str, str]] = field(default_factory=dict)
    dosage_unit: str = "container"
    reason: str = "initial policy"
    passkey_required_for: tuple[str, ...] = ()
    #: Issue 20: mL per opened container a count may differ from the book without a discrepancy.
    open_count_tolerance_ml: str = "0.10"


@dataclass(frozen=True)
class RegisterPatient:
    """Name and address go only to the encrypted registry; the entry holds a commitment."""

    name: str
    address: AddressInput
    #: Issue 21: the date of birth (ISO "1984-03-07"), sealed with the name; optional.
    date_of_birth: str | None = None


@dataclass(frozen=True)
class ChangePatientDetails:
    """New details; a date of birth left out (None) keeps the one registered."""

    patient_id: str
    name: str
    address: AddressInput
    reason: str
    date_of_birth: str | None = None


@dataclass(frozen=True)
class DrawInput:
    vial_id: str
    ml: str


@dataclass(frozen=True)
class WasteInput:
    ml: str
    method: str


@dataclass(frozen=True)
class AdministerDose:
    patient_id: str
    prescriber_dea_number: str
    weight_kg: str
    ordered_mg_per_kg: str
    draws: tuple[DrawInput, ...]
    ml_given: str
    started_at: datetime
    ended_at: datetime
    #: The remainder wasted in the same command (both entries in one transaction), witnessed.
    waste: WasteInput | None = None
    late_reason: str | None = None
    #: SHA-256 of stored documents the infusion is recorded from (issue 21: the scanned downtime
    #: paper sheet of a backfilled infusion); cited by the dose entry and its waste.
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordWaste:
    administration_id: str
    ml: str
    method: str
    occurred_at: datetime
    late_reason: str | None = None
    #: SHA-256 of stored documents the waste is recorded from (issue 21: the downtime paper sheet).
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartCount:
    ndcs: tuple[str, ...] = ()  # empty: every product of the registrant
    blind: bool = True


@dataclass(frozen=True)
class CountLineInput:
    ndc: str
    sealed_containers: int
    open_containers: int = 0
    open_ml: str = "0.00"
    #: Issue 19: sealed packages (cartons) counted as packages, their units exact; sealed units
    #: outside a sealed package stay in ``sealed_containers``.
    sealed_packages: int = 0
    #: Issue 20 (optional): the opened vials counted one by one; their mL add up to ``open_ml``.
    open_vials: tuple[OpenVialInput, ...] = ()


@dataclass(frozen=True)
class OpenVialInput:
    """Issue 20: one opened vial of a count line and the mL counted in it."""

    vial_id: str
    ml: str


@dataclass(frozen=True)
class SubmitCount:
    session_id: str
    lines: tuple[CountLineInput, ...]
    occurred_at: datetime
    late_reason: str | None = None


@dataclass(frozen=True)
class ResolveDiscrepancy:
    discrepancy_id: str
    category: str  # documentation_error | breakage | spill | theft_or_loss | other
    explanation: str
    fixed_by_seq: int | None = None  # documentation_error: the late entry that was missing
    breakage_seq: int | None = None  # spill | breakage: the breakage recorded when it happened


@dataclass(frozen=True)
class DestroyStock:
    vial_ids: tuple[str, ...]
    method: str
    place: str
    reason: str
    occurred_at: datetime
    late_reason: str | None = None
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransferStock:
    vial_ids: tuple[str, ...]
    receiver_dea_number: str
    receiver_name: str
    receiver_address: AddressInput
    invoice_number: str
    occurred_at: datetime
    late_reason: str | None = None
    #: Issue 19: the receiver's DEA registration (expiry YYYY-MM-DD, schedules): required; a
    #: transfer to an expired registration or one without the products' schedule is refused.
    receiver_registration_expires_on: str | None = None
    receiver_schedules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ReturnStock:
    vial_ids: tuple[str, ...]
    recipient_type: str  # "supplier" | "reverse_distributor"
    recipient_name: str
    recipient_address: AddressInput
    recipient_dea_number: str
    invoice_number: str
    occurred_at: datetime
    late_reason: str | None = None
    #: Issue 19: the recipient's DEA registration (expiry YYYY-MM-DD, schedules). A supplier
    #: recorded here (by its DEA number) is checked against its recorded registration, and these
    #: may be left out; a reverse distributor (or a supplier not recorded) must give them.
    recipient_registration_expires_on: str | None = None
    recipient_schedules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LostVialInput:
    vial_id: str
    ml: str | None = None  # None: the whole vial (all mL left) is gone


@dataclass(frozen=True)
class ReportTheftOrLoss:
    discovered_at: datetime
    loss_type: str  # night_break_in | armed_robbery | employee_pilferage | customer_theft | lost_in_transit | other
    police_notified: bool
    losses_past_24_months: int
    purchase_value_usd: str
    lost: tuple[LostVialInput, ...] = ()
    covers_seqs: tuple[int, ...] = ()
    police_department: str | None = None
    police_report_number: str | None = None
    documents: tuple[str, ...] = ()
    # Issue 20 (Form 106 complete): required on new reports; ``other_explanation`` only (and
    # always) with loss_type "other". Keyword fields at the end, so positional callers still fit.
    narrative: str | None = None
    corrective_measures: str | None = None
    other_explanation: str | None = None
    contact_name: str | None = None
    contact_phone: str | None = None


@dataclass(frozen=True)
class RecordDeaNotice:
    """Issue 20: the written notice of report ``loss_report_seq`` went to DEA."""

    loss_report_seq: int
    sent_at: datetime
    method: str  # email | fax | phone | letter | online
    recipient: str
    document_sha256: str | None = None


@dataclass(frozen=True)
class RecordForm106Filing:
    """Issue 20: DEA Form 106 for report ``loss_report_seq`` was filed, with DEA's confirmation."""

    loss_report_seq: int
    filed_at: datetime
    confirmation_number: str
    document_sha256: str | None = None


@dataclass(frozen=True)
class CorrectionLineInput:
    vial_id: str
    direction: str  # "add" | "remove"
    ml: str


@dataclass(frozen=True)
class CorrectEntry:
    corrects_seq: int
    reason: str
    lines: tuple[CorrectionLineInput, ...] = ()


@dataclass(frozen=True)
class QuarantineStock:
    vial_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class ReleaseQuarantine:
    vial_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class StoreDocument:
    content: bytes
    media_type: str
    title: str


@dataclass(frozen=True)
class BreakageLineInput:
    vial_id: str
    ml: str | None = None  # None: the whole vial (all mL left)


@dataclass(frozen=True)
class RecordBreakage:
    what: str  # "breakage" | "spill"
    description: str
    recoverable: bool
    lines: tuple[BreakageLineInput, ...]
    occurred_at: datetime
    late_reason: str | None = None


@dataclass(frozen=True)
class RegisterPrescriber:
    """A prescriber (issue 19): registering the same DEA number again supersedes the earlier one."""

    name: str
    dea_number: str
    registration_state: str
    schedules: tuple[str, ...]
    expires_on: str  # YYYY-MM-DD
    state_license_number: str
    state_license_state: str
    staff_id: str | None = None


# --- preparations and infusions (issue 19, preparations part) ---------------------------------


@dataclass(frozen=True)
class MakePreparation:
    """A bag or syringe-pump syringe prepared for one patient's infusion: the vial draws
    (product mL), the diluent and its mL, the container and its final mL. ``started_at`` is the
    start of preparation (its 4-hour beyond-use time runs from it)."""

    patient_id: str
    prescriber_dea_number: str
    weight_kg: str
    ordered_mg_per_kg: str
    draws: tuple[DrawInput, ...]
    diluent: str
    diluent_ml: str
    container: str  # "bag" | "syringe"
    final_ml: str
    started_at: datetime
    late_reason: str | None = None


@dataclass(frozen=True)
class InfusePreparation:
    """The infusion from a preparation, as the pump reports it (``ml_infused``: diluted mL)."""

    preparation_id: str
    ml_infused: str
    started_at: datetime
    ended_at: datetime
    stop_reason: str | None = None  # why it stopped before the final volume, if it did
    late_reason: str | None = None


@dataclass(frozen=True)
class WastePreparation:
    """What is left of a preparation, wasted before a witness. ``ml_remaining`` is the diluted
    volume discarded as measured (a record only: what was wasted is mg - mg given); ``reason``
    is required when the preparation was never infused."""

    preparation_id: str
    method: str
    occurred_at: datetime
    ml_remaining: str | None = None
    reason: str | None = None
    late_reason: str | None = None


# --- esketamine (Spravato) sessions (issue 19, esketamine part) ---------------------------------


@dataclass(frozen=True)
class RecordEsketamineSession:
    """A nasal-spray session: the devices used (by id, each whole), the dose (56 or 84 mg), when
    the patient self-administered (the first device) and the observation after it (>= 2 h)."""

    patient_id: str
    prescriber_dea_number: str
    device_ids: tuple[str, ...]
    dose_mg: str
    administered_at: datetime
    observation_started_at: datetime
    observation_ended_at: datetime
    late_reason: str | None = None


# --- package hierarchy (issue 19, packages part) ------------------------------------------------


@dataclass(frozen=True)
class OpenPackage:
    """Open a sealed package (carton, kit) before a witness and record the units found in it."""

    package_id: str
    units_found: int
    occurred_at: datetime
    late_reason: str | None = None
