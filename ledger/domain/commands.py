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
    inventory_type: str  # "initial" | "biennial"
    taken_at: str  # "opening_of_business" | "close_of_business"
    occurred_at: datetime
    items: tuple[InventoryItemInput, ...] = ()
    late_reason: str | None = None
    documents: tuple[str, ...] = ()  # SHA-256 of stored documents (the signed printed inventory)


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


@dataclass(frozen=True)
class RegisterPatient:
    """Name and address go only to the encrypted registry; the entry holds a commitment."""

    name: str
    address: AddressInput


@dataclass(frozen=True)
class ChangePatientDetails:
    patient_id: str
    name: str
    address: AddressInput
    reason: str


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


@dataclass(frozen=True)
class RecordWaste:
    administration_id: str
    ml: str
    method: str
    occurred_at: datetime
    late_reason: str | None = None


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
