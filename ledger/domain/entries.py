"""The events of the ledger: one frozen type per entry kind, named in the past tense.

An entry is self-describing: it copies whatever is needed to read its quantities (NDC, strength,
container volume, the supplier's name, address and DEA number), so no later change to a table
changes what an old entry means. Reference data (registrants, products, suppliers, staff, roles)
are entries too; the tables are projections of them.

Field scales: every ``Decimal`` here is mL, mg, kg or mg/mL at 2 decimals (see ``quantities``).
Dates (``expiry``) are ISO ``YYYY-MM-DD``; times are aware datetimes, written as UTC text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import ClassVar

#: Fields of the entry envelope; an event's own fields may not reuse these names.
ENVELOPE_FIELDS = frozenset(
    {"registrant", "seq", "kind", "schema_version", "occurred_at", "recorded_at", "signatures", "prev"}
)


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str]
    schema_version: ClassVar[int] = 1


@dataclass(frozen=True)
class Address:
    street: str
    city: str
    state: str
    postal_code: str


@dataclass(frozen=True)
class ProductDescription:
    """What a container is, copied into every entry that moves stock."""

    ndc: str  # as printed on the package
    ndc_key: str  # normalized 11-digit (5-4-2) or 12-digit (6-4-2) key, no hyphens
    name: str
    drug_code: str  # DEA controlled-substance code; 7285 for ketamine
    schedule: str  # "III" for ketamine
    form: str  # finished form, e.g. "injection"
    strength_mg_per_ml: Decimal
    container_ml: Decimal
    # Issue 19, package hierarchy: ``ndc`` is the package's NDC (carton, box, kit); a unit is one
    # tracked container (a ``vials`` row) of ``container_ml`` at ``strength_mg_per_ml``. Defaults
    # keep entries recorded before meaning what they meant: a unit was a vial, one per package.
    unit_kind: str = "vial"  # "vial" | "nasal_spray_device" | "prefilled_syringe"
    unit_ndc: str | None = None  # the unit's own NDC (21 CFR 201.25), when it has one
    units_per_package: int = 1  # units in one package of the package NDC ``ndc``


#: What a unit of a product may be (``ProductDescription.unit_kind``).
UNIT_KINDS = ("vial", "nasal_spray_device", "prefilled_syringe")


# --- reference data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrantRegistered(Event):
    """Seq 0 of every log: the DEA-registered location the log belongs to."""

    kind: ClassVar[str] = "registrant_registered"
    dea_number: str
    name: str
    address: Address
    time_zone: str
    log_id: str  # random at init; part of the checkpoint origin


@dataclass(frozen=True)
class ProductAdded(Event):
    kind: ClassVar[str] = "product_added"
    product: ProductDescription


@dataclass(frozen=True)
class DeaRegistration:
    """A counterparty's DEA registration as the clinic checked it (issue 19): the schedules it
    covers (``ledger.domain.prescribers.SCHEDULES`` codes) and the day it expires."""

    expires_on: date
    schedules: tuple[str, ...]


@dataclass(frozen=True)
class SupplierAdded(Event):
    kind: ClassVar[str] = "supplier_added"
    supplier_id: str
    name: str
    address: Address
    dea_number: str
    #: Issue 19: its registration and whether it is an authorized trading partner under DSCSA
    #: (21 U.S.C. 360eee-1(b)(3)); None on suppliers added before (receipts then wait for a
    #: ``supplier_registration_recorded`` entry).
    registration: DeaRegistration | None = None
    authorized_trading_partner: bool | None = None


@dataclass(frozen=True)
class SupplierRegistrationRecorded(Event):
    """A supplier's DEA registration (renewed, or recorded for a supplier added before issue 19)
    and its DSCSA authorized-trading-partner status; supersedes what was recorded before."""

    kind: ClassVar[str] = "supplier_registration_recorded"
    supplier_id: str
    registration: DeaRegistration
    authorized_trading_partner: bool


@dataclass(frozen=True)
class StaffEnrolled(Event):
    kind: ClassVar[str] = "staff_enrolled"
    staff_id: str
    printed_name: str
    username: str


@dataclass(frozen=True)
class RoleGranted(Event):
    kind: ClassVar[str] = "role_granted"
    staff_id: str
    role: str


@dataclass(frozen=True)
class RoleRevoked(Event):
    kind: ClassVar[str] = "role_revoked"
    staff_id: str
    role: str
    reason: str


@dataclass(frozen=True)
class StaffCredentialEnrolled(Event):
    """A credential a staff member signs with from now on (issue 17).

    Signed by the new credential itself (``performed``: proof that its owner holds it) and, except
    for the registrant's first (root) credential, ``approved`` by an enrolled manager or
    administrator with a credential of their own. The root is the first administrator's, made at
    ``init``; its ``fingerprint`` is printed then and pinned beside the verifier keys. For
    passkeys the root fixes the WebAuthn relying party (``rp_id``, ``origins``) every passkey
    signature of the registrant is checked against."""

    kind: ClassVar[str] = "staff_credential_enrolled"
    staff_id: str
    credential_id: str
    method: str  # "password_key" | "passkey"
    public_key: str  # base64url: raw Ed25519 key, or the passkey's COSE key
    fingerprint: str  # sha256:<hex> of method and public key
    #: The credential this one replaces (revoked by this entry), if any.
    replaces: str | None = None
    #: Root only: the WebAuthn relying party (RP ID and allowed origins) of this registrant.
    rp_id: str | None = None
    origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class StaffCredentialRevoked(Event):
    """A credential no longer signs: revoked by its owner or by a manager or administrator."""

    kind: ClassVar[str] = "staff_credential_revoked"
    staff_id: str
    credential_id: str
    reason: str


# --- stock ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InventoryItem:
    """One container on hand. Sealed containers are counted exactly (ml == container_ml);
    an opened multiple-dose vial may be estimated in mL (21 CFR 1304.11(e)(3))."""

    vial_id: str
    product: ProductDescription
    lot: str
    expiry: date
    sealed: bool
    ml: Decimal
    estimated: bool
    #: An opened vial of an initial inventory (issue 19): the local day it was first punctured
    #: (``first_puncture_estimated`` when that day is an estimate) and the beyond-use date that
    #: follows under the policy then in force. Absent in inventories recorded before: those
    #: vials' clocks started at their first draw in csledger.
    first_punctured_on: date | None = None
    first_puncture_estimated: bool = False
    beyond_use_date: date | None = None


@dataclass(frozen=True)
class InventoryLine:
    """Issue 20: one product of a biennial or other inventory against the book at that instant
    (``ledger.domain.inventory.compare``, which ``verify --deep`` runs again). ``expected_*`` is
    the book, ``found_*`` what the inventory listed; a vial on the book and not listed was not
    found (``vials_not_found``: exactly the vials an accepted loss then takes off the book). Any
    difference opens ``discrepancy_id`` (``D<seq>-<i>``), the same discrepancy a count opens."""

    product: ProductDescription
    expected_sealed_containers: int
    expected_open_containers: int
    expected_ml: Decimal
    found_sealed_containers: int
    found_open_containers: int
    found_ml: Decimal
    difference_ml: Decimal  # found - expected, signed
    vials_not_found: tuple[str, ...]
    discrepancy_id: str | None


@dataclass(frozen=True)
class InventoryTaken(Event):
    """An initial, biennial or other inventory (21 CFR 1304.11), at opening or close of business.

    Issue 20: every inventory is witnessed by a second person. A biennial or other inventory
    (``reason``: 1304.11(d)/(e), e.g. a newly controlled substance, a change of ownership) is
    compared with the book at that instant, product by product (``lines``); each difference opens a
    discrepancy. An initial inventory creates the book, so it has nothing to compare with and its
    ``lines`` are empty. Entries recorded before issue 20 lack ``lines`` and ``reason``."""

    kind: ClassVar[str] = "inventory_taken"
    inventory_type: str  # "initial" | "biennial" | "other"
    taken_at: str  # "opening_of_business" | "close_of_business"
    items: tuple[InventoryItem, ...]
    late_reason: str | None = None
    #: SHA-256 of stored documents, e.g. the signed printed inventory (issue 3).
    documents: tuple[str, ...] = ()
    #: Issue 20: the comparison with the book (empty for an initial inventory).
    lines: tuple[InventoryLine, ...] = ()
    #: Issue 20: why an "other" inventory was taken (21 CFR 1304.11(d)/(e)); None otherwise.
    reason: str | None = None


@dataclass(frozen=True)
class ReceivedLine:
    product: ProductDescription
    containers: int
    lot: str
    expiry: date
    vial_ids: tuple[str, ...]  # one identity per received container
    #: DSCSA product identifier: the GTIN of the cartons and their serials (vial identity is
    #: GTIN + serial where the package carries one; otherwise csledger numbers the vials).
    gtin: str | None = None
    serials: tuple[str, ...] = ()
    #: Containers the invoice says were shipped, when the receiver checked it; a mismatch is
    #: recorded, never silently "fixed" (invoice/receiving mismatch is an inspection finding).
    invoiced_containers: int | None = None
    #: Suspect product is received straight into quarantine: on hand, never drawn from.
    quarantined: bool = False
    # Issue 19, package hierarchy: a line received in packages (cartons, kits), as the invoice and
    # the DSCSA data speak of them. ``containers`` stays the units (commercial containers, 21 CFR
    # 1300.01: vials, devices), ``vial_ids`` one per unit, package by package; ``package_ids`` one
    # per package (carton GTIN + serial, or csledger's number); ``gtin``/``serials`` then name the
    # packages. Units of a package of more than one stay in it, sealed, until a witnessed
    # ``package_opened``. Absent (None) on lines received unit by unit, as every line before.
    packages: int | None = None
    units_per_package: int = 1
    invoiced_packages: int | None = None
    package_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SupplierCopy:
    supplier_id: str
    name: str
    address: Address
    dea_number: str
    #: Issue 19: the registration and DSCSA status the receipt was checked against (absent on
    #: receipts recorded before).
    registration: DeaRegistration | None = None
    authorized_trading_partner: bool | None = None


@dataclass(frozen=True)
class StockReceived(Event):
    """A receipt on an invoice with every element of 21 CFR 1304.22(c)."""

    kind: ClassVar[str] = "stock_received"
    invoice_number: str
    supplier: SupplierCopy
    lines: tuple[ReceivedLine, ...]
    late_reason: str | None = None
    notes: str = field(default="")
    #: DSCSA transaction information / statement reference, kept 6 years with the receipt.
    dscsa_reference: str | None = None
    #: SHA-256 of stored documents (invoice scan, transaction statement) belonging to the receipt.
    documents: tuple[str, ...] = ()


# --- clinic operations (issue 3) ----------------------------------------------------------------
# Quantities follow the module's scales (mg, kg, mg/kg, mg/mL: 2 decimals; mL measured by a person:
# 2 decimals when exact to 0.01, else 3, ``quantities.parse_volume``, issue 19). Every entry that
# moves stock copies the product, so it reads alone; patients appear only as an id and a keyed
# commitment (HMAC) of name and address: the names live in the encrypted registry, never here.


@dataclass(frozen=True)
class PolicySet(Event):
    """The registrant's policy, whole (every value, not a diff), so its history is auditable.
    Until the first one, the defaults in ``policy.DEFAULT_POLICY`` apply."""

    kind: ClassVar[str] = "policy_set"
    beyond_use_days: int  # an opened multiple-dose vial is discarded this many days after first puncture
    late_entry_limit_hours: int  # entries typed later than this after their event must say why
    variance_threshold_percent: Decimal  # |audit variance| above this is flagged
    count_schedule: str  # e.g. "daily_opening", "each_shift", "weekly"
    #: Local opening hours: {"mon": ["08:00", "18:00"], ...}; a missing day is closed.
    clinic_hours: dict[str, tuple[str, str]]
    dosage_unit: str  # "container" | "ml": what one unit is for the 5% transfer rule
    reason: str
    #: Where a password key may not sign and the person confirms with a passkey (issue 17):
    #: "witnessing" (every witnessed signature), "destruction" (every signature on a Form 41).
    passkey_required_for: tuple[str, ...] = ()
    #: Issue 20: mL per opened container a count may differ from the book without opening a
    #: discrepancy (``policy.DEFAULT_OPEN_COUNT_TOLERANCE_ML`` when absent: recorded before it).
    open_count_tolerance_ml: Decimal | None = None


@dataclass(frozen=True)
class PatientRegistered(Event):
    """A patient in the encrypted registry; the commitment binds the name and address recorded."""

    kind: ClassVar[str] = "patient_registered"
    #: 2 (issue 18): ``commitment`` is the salted SHA-256 commitment anyone holding its opening can
    #: check (``ledger.integrity.patient_commitments``); 1: an HMAC only the patient key checks.
    #: Offline checkers read the version to know an opening is owed, so none can be withheld.
    schema_version: ClassVar[int] = 2
    patient_id: str
    commitment: str  # hex; see ``schema_version`` for which construction
    #: hex SHA-256 of the registry row's sealed bytes (nonce || AES-GCM ciphertext): lets
    #: ``verify --deep`` see a changed row without the patient key, and reveals nothing.
    sealed_sha256: str


@dataclass(frozen=True)
class PatientDetailsChanged(Event):
    """The registry's name or address for a patient changed: the new commitment, and why."""

    kind: ClassVar[str] = "patient_details_changed"
    schema_version: ClassVar[int] = 2  # as in ``PatientRegistered``
    patient_id: str
    commitment: str
    reason: str
    sealed_sha256: str  # of the re-sealed registry row, as in ``PatientRegistered``


@dataclass(frozen=True)
class Draw:
    """Volume drawn from one vial for one administration."""

    vial_id: str
    product: ProductDescription
    lot: str
    expiry: date
    ml: Decimal
    #: True when this draw punctured a sealed vial (it opened the vial and set its beyond-use date).
    opened_vial: bool
    beyond_use_date: date


@dataclass(frozen=True)
class DoseAdministered(Event):
    """One infusion: the dose ordered (mg/kg x weight), what was drawn from which vial, what was
    given, and when it ran. Its waste is counted once, from ``dose_wasted`` entries."""

    kind: ClassVar[str] = "dose_administered"
    administration_id: str
    patient_id: str
    patient_commitment: str
    prescriber_dea_number: str
    weight_kg: Decimal
    ordered_mg_per_kg: Decimal
    ordered_mg: Decimal  # weight x mg/kg, rounded half-up to 0.01 mg
    draws: tuple[Draw, ...]
    ml_drawn: Decimal
    ml_given: Decimal
    mg_given: Decimal
    started_at: str  # UTC text
    ended_at: str
    late_reason: str | None = None
    #: The prescriber's name as registered (issue 19; ``prescriber_registered``), so the entry
    #: reads alone. Entries recorded before prescribers were registered lack the key.
    prescriber_name: str | None = None
    #: SHA-256 of stored documents the infusion was recorded from (issue 21: the scanned downtime
    #: paper sheet). Entries recorded before issue 21 lack the key (readers: ``.get("documents", ())``).
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class DoseWasted(Event):
    """The remainder of an administered dose, wasted with a witness (a different, authenticated
    person). Not Form 41: the non-retrievable destruction rule does not apply to wastage."""

    kind: ClassVar[str] = "dose_wasted"
    administration_id: str
    administration_seq: int
    product: ProductDescription
    ml: Decimal
    mg: Decimal
    method: str
    late_reason: str | None = None
    #: SHA-256 of stored documents the waste was recorded from (issue 21: the downtime paper
    #: sheet). Entries recorded before issue 21 lack the key.
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class CountStarted(Event):
    """A count session opens; blind by default (its answers never carry the expected quantity)."""

    kind: ClassVar[str] = "count_started"
    session_id: str
    blind: bool
    products: tuple[ProductDescription, ...]


@dataclass(frozen=True)
class CountedVial:
    """Issue 20: one opened vial named in a count: its book mL when the count was submitted and
    the mL counted in it."""

    vial_id: str
    expected_ml: Decimal
    counted_ml: Decimal


@dataclass(frozen=True)
class CountedLine:
    product: ProductDescription
    sealed_containers: int
    open_containers: int
    open_ml: Decimal  # estimated, for opened vials
    counted_ml: Decimal
    #: The book when the count was submitted (taken by the system, not shown to the counters).
    expected_sealed_containers: int
    expected_open_containers: int
    expected_ml: Decimal
    difference_ml: Decimal  # counted - expected, signed text
    discrepancy_id: str | None
    #: Issue 19: sealed packages (cartons) counted as packages, whose units ``sealed_containers``
    #: includes, and the sealed packages the book held.
    sealed_packages: int = 0
    expected_sealed_packages: int = 0
    #: Issue 20: the tolerance that applied to the line (the policy's mL per opened container x
    #: the opened containers, when the containers counted are the book's and nobody read the
    #: book; else 0.00: exact), and whether the difference was within it (then no discrepancy).
    #: None / False on lines recorded before the tolerance existed.
    tolerance_ml: Decimal | None = None
    within_tolerance: bool = False
    #: Issue 20: the opened vials, when the counters named them one by one: each with the book
    #: and what was counted in it, so a loss can come out of the vial that was short.
    open_vials: tuple[CountedVial, ...] = ()


@dataclass(frozen=True)
class BookRead:
    """A counter read stock figures while their blind count was open (the count is not blind)."""

    staff_id: str
    read_at: str  # UTC text
    what: str  # the endpoint or page that showed the figures


@dataclass(frozen=True)
class StockCounted(Event):
    """A two-person count, submitted: counted, expected and the difference per product; a
    difference opens a discrepancy (the book stays as computed until it is resolved). A blind
    count whose counters read the book while it was open lists those reads, and every line opens
    a discrepancy: a count taken after looking cannot confirm the book."""

    kind: ClassVar[str] = "stock_counted"
    session_id: str
    blind: bool
    lines: tuple[CountedLine, ...]
    late_reason: str | None = None
    book_reads: tuple[BookRead, ...] = ()
    #: Issue 20: the policy's tolerance in force, mL per opened container (None: recorded before
    #: the tolerance existed, when every difference opened a discrepancy).
    open_count_tolerance_ml: Decimal | None = None


@dataclass(frozen=True)
class VialAdjustment:
    vial_id: str
    product: ProductDescription
    ml: Decimal  # positive: removed from the vial (a loss); see each entry for direction
    whole_vial: bool  # the vial is gone (lost), not just short


@dataclass(frozen=True)
class DiscrepancyResolved(Event):
    """A manager who did not count explains and categorises a count difference."""

    kind: ClassVar[str] = "discrepancy_resolved"
    discrepancy_id: str
    count_seq: int
    category: str  # documentation_error | breakage | spill | theft_or_loss | other
    explanation: str
    #: For a documentation error: the (late) entry that was missing and now explains the difference.
    fixed_by_seq: int | None
    #: For a spill or breakage: the ``breakage_recorded`` entry (two people who saw it) that explains it.
    breakage_seq: int | None = None
    #: Whether the same command takes mL off the book in the ``loss_adjusted`` entry right after
    #: (issue 17): the resolution's signatures cover that entry only when this says so, so no one
    #: can append a loss adjustment under a resolution that made none.
    adjusts_stock: bool = False


@dataclass(frozen=True)
class LossAdjusted(Event):
    """An accepted loss (breakage, spill, theft or loss) taken off the book, vial by vial."""

    kind: ClassVar[str] = "loss_adjusted"
    discrepancy_id: str
    category: str
    adjustments: tuple[VialAdjustment, ...]
    #: The count that found the loss and the resolution that accepted it (the entry reads alone).
    count_seq: int | None = None
    resolution_seq: int | None = None


@dataclass(frozen=True)
class RegistrantCopy:
    dea_number: str
    name: str
    address: Address


@dataclass(frozen=True)
class DestroyedItem:
    """One Form 41 line: a vial destroyed, full package or partial amount."""

    vial_id: str
    product: ProductDescription
    lot: str
    full_package: bool
    ml: Decimal
    mg: Decimal
    #: Issue 19: the sealed package (carton) the unit was destroyed in, whole, if it was.
    package_id: str | None = None


@dataclass(frozen=True)
class StockDestroyed(Event):
    """DEA Form 41: destroyed on site, non-retrievable, with two authorized employee witnesses."""

    kind: ClassVar[str] = "stock_destroyed"
    registrant_copy: RegistrantCopy
    items: tuple[DestroyedItem, ...]
    method: str
    place: str
    reason: str
    late_reason: str | None = None
    documents: tuple[str, ...] = ()


@dataclass(frozen=True)
class MovedVial:
    vial_id: str
    product: ProductDescription
    lot: str
    expiry: date
    ml: Decimal
    #: Issue 19: the sealed package (carton) the unit moved in, whole, if it did.
    package_id: str | None = None


@dataclass(frozen=True)
class StockTransferred(Event):
    """Sealed stock transferred to another registered practitioner (21 CFR 1307.11, 5% rule)."""

    kind: ClassVar[str] = "stock_transferred"
    receiver_dea_number: str
    receiver_name: str
    receiver_address: Address
    invoice_number: str
    vials: tuple[MovedVial, ...]
    #: Dosage units of this year's practitioner transfers, including this one, and all units
    #: distributed and dispensed: the figures the 5% rule was checked on.
    year_transfer_units: Decimal
    year_total_units: Decimal
    late_reason: str | None = None
    #: Issue 19: the receiver's DEA registration the transfer was checked against (current on
    #: the day, covering the products' schedules); None on transfers recorded before.
    receiver_registration: DeaRegistration | None = None


@dataclass(frozen=True)
class StockReturned(Event):
    """Returned to a supplier or handed to a reverse distributor (Part 1317), on an invoice."""

    kind: ClassVar[str] = "stock_returned"
    recipient_type: str  # "supplier" | "reverse_distributor"
    recipient_name: str
    recipient_address: Address
    recipient_dea_number: str
    invoice_number: str
    vials: tuple[MovedVial, ...]
    late_reason: str | None = None
    #: Issue 19: the recipient's DEA registration the return was checked against (current on the
    #: day, covering the products' schedules); for a recorded supplier, its ``supplier_id`` and
    #: DSCSA authorized-trading-partner status as recorded then. None on returns recorded before.
    recipient_registration: DeaRegistration | None = None
    supplier_id: str | None = None
    authorized_trading_partner: bool | None = None


@dataclass(frozen=True)
class TheftOrLossReported(Event):
    """Theft or significant loss (21 CFR 1301.76(b), DEA Form 106 fields)."""

    kind: ClassVar[str] = "theft_or_loss_reported"
    registrant_copy: RegistrantCopy
    discovered_at: str  # UTC text
    loss_type: str
    police_notified: bool
    police_department: str | None
    police_report_number: str | None
    losses_past_24_months: int
    purchase_value_usd: Decimal
    #: Vials lost now (taken off the book by this entry).
    lost: tuple[VialAdjustment, ...]
    #: Loss adjustments already on the book that this report covers (not moved again).
    covers_seqs: tuple[int, ...]
    notice_due_at: str  # written notice within one business day of discovery
    form_106_due_at: str  # Form 106 within 45 days
    documents: tuple[str, ...] = ()
    # Issue 20 (Form 106 complete): what happened, what was done so it does not happen again,
    # the explanation a loss of type "other" needs, and whom DEA may call. Defaults keep reports
    # recorded before meaning what they meant (readers use ``.get``).
    narrative: str | None = None
    corrective_measures: str | None = None
    other_explanation: str | None = None
    contact_name: str | None = None
    contact_phone: str | None = None


@dataclass(frozen=True)
class CorrectionLine:
    vial_id: str
    product: ProductDescription
    direction: str  # "add" (back into the vial) | "remove" (out of the vial)
    ml: Decimal


@dataclass(frozen=True)
class EntryCorrected(Event):
    """A correction never edits: it names the entry it corrects, says why, and carries the
    compensating quantities."""

    kind: ClassVar[str] = "entry_corrected"
    corrects_seq: int
    corrects_kind: str
    reason: str
    lines: tuple[CorrectionLine, ...]


@dataclass(frozen=True)
class StockQuarantined(Event):
    """Suspect product (DSCSA) set aside: on hand, never drawn from."""

    kind: ClassVar[str] = "stock_quarantined"
    vial_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class QuarantineReleased(Event):
    kind: ClassVar[str] = "quarantine_released"
    vial_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class DocumentStored(Event):
    """A document kept content-addressed: the entry holds its SHA-256, the bytes sit beside."""

    kind: ClassVar[str] = "document_stored"
    sha256: str
    media_type: str
    title: str
    size_bytes: int


CLINICAL_EVENTS: tuple[type[Event], ...] = (
    PolicySet, PatientRegistered, PatientDetailsChanged, DoseAdministered, DoseWasted, CountStarted,
    StockCounted, DiscrepancyResolved, LossAdjusted, StockDestroyed, StockTransferred, StockReturned,
    TheftOrLossReported, EntryCorrected, StockQuarantined, QuarantineReleased, DocumentStored,
)


EVENT_TYPES: dict[str, type[Event]] = {
    t.kind: t
    for t in (
        RegistrantRegistered,
        ProductAdded,
        SupplierAdded,
        SupplierRegistrationRecorded,
        StaffEnrolled,
        RoleGranted,
        RoleRevoked,
        InventoryTaken,
        StockReceived,
        *CLINICAL_EVENTS,
    )
}


# --- alerts (issue 7) -------------------------------------------------------------------------
# Appended after EVENT_TYPES and registered with ``update`` so the clinic-operations kinds above
# and these never edit the same lines.


@dataclass(frozen=True)
class AlertRaised(Event):
    """A rule found something a person must look at. The alert stays open until an
    ``alert_resolved`` entry; ``alert_key`` makes raising idempotent (a rule never raises the same
    key twice). ``subjects`` are the staff the alert is about (they may not close it). Patient
    names never appear here: evidence is entry seqs and figures (decimal strings)."""

    kind: ClassVar[str] = "alert_raised"
    alert_id: str
    alert_key: str
    rule: str
    severity: str  # "low" | "medium" | "high" | "critical"
    subjects: tuple[str, ...]
    summary: str
    parameters: dict[str, str]
    evidence_seqs: tuple[int, ...]
    figures: dict[str, str]
    #: Named due times (UTC text), e.g. {"dea_notice": ..., "form_106": ...}.
    deadlines: dict[str, str]
    raised_by: str  # "in_transaction" | "scan"


@dataclass(frozen=True)
class AlertAcknowledged(Event):
    """Someone responsible has seen the alert and is following it up; it stays open."""

    kind: ClassVar[str] = "alert_acknowledged"
    alert_id: str
    category: str
    explanation: str


@dataclass(frozen=True)
class AlertResolved(Event):
    """The alert is closed, with its category (documentation error, ...) and explanation."""

    kind: ClassVar[str] = "alert_resolved"
    alert_id: str
    category: str
    explanation: str


@dataclass(frozen=True)
class AlertCleared(Event):
    """The condition an alert reported no longer holds, as the system saw it (issue 20): an
    overdue-count alert clears when a count or an inventory is recorded. Unsigned, like
    ``alert_raised``; ``evidence_seq`` is the signed entry that cleared it, and ``verify --deep``
    checks that it does."""

    kind: ClassVar[str] = "alert_cleared"
    alert_id: str
    evidence_seq: int
    explanation: str


@dataclass(frozen=True)
class RegistrationExpiryRecorded(Event):
    """The registrant's DEA registration and its expiry date (renewals record a new one), so
    the scan can warn before it lapses."""

    kind: ClassVar[str] = "registration_expiry_recorded"
    expires_on: date


EVENT_TYPES.update({t.kind: t for t in (AlertRaised, AlertAcknowledged, AlertResolved, AlertCleared,
                                         RegistrationExpiryRecorded)})


# --- breakage and spills at the time (issue 15) ---------------------------------------------


@dataclass(frozen=True)
class BreakageRecorded(Event):
    """A vial broken or a spill, recorded when it happened and signed by two people who saw it.
    Not recoverable: the mL in ``lines`` leave the book with this entry. Recoverable (the drug
    can be collected): the vials stay on hand, set aside (never drawn from), and leave later by
    destruction (Form 41). ``after_counts`` names the counts of these products that had already
    been recorded when this entry was, though they were taken after the event (so they could not
    see it): such an entry explains a count's difference after the fact."""

    kind: ClassVar[str] = "breakage_recorded"
    what: str  # "breakage" | "spill"
    description: str
    recoverable: bool
    lines: tuple[VialAdjustment, ...]
    after_counts: tuple[int, ...] = ()
    late_reason: str | None = None


EVENT_TYPES.update({BreakageRecorded.kind: BreakageRecorded})


# --- staff credentials (issue 17) -------------------------------------------------------------
# Registered here (after the classes above) so ``verify --deep`` and ``verify-bundle`` know the
# kinds; who may sign them is the credential chain's rule (``ledger.integrity.credential_chain``).
EVENT_TYPES.update({t.kind: t for t in (StaffCredentialEnrolled, StaffCredentialRevoked)})


# --- report key (issue 18) --------------------------------------------------------------------


@dataclass(frozen=True)
class ReportKeyCertified(Event):
    """The registrant's report key: every report PDF carries a certification signature (PAdES,
    DocMDP P=1) by the key this self-signed X.509 certificate names; ``verify-report`` accepts a
    signer only if its certificate is one of these entries at or before the report's tree size.
    Signed by an administrator; the private key stays in the key folder (never the database)."""

    kind: ClassVar[str] = "report_key_certified"
    certificate: str  # base64 of the DER certificate
    fingerprint: str  # sha256:<hex> of the DER certificate
    algorithm: str = "ecdsa-p256"


EVENT_TYPES.update({ReportKeyCertified.kind: ReportKeyCertified})


# --- prescribers (issue 19) -------------------------------------------------------------------


@dataclass(frozen=True)
class PrescriberRegistered(Event):
    """A practitioner who may order doses here (21 CFR 1306.03): their DEA registration (a
    practitioner type, in the clinic's state, with its schedules and expiry) and state licence.
    Registering the same DEA number again (a renewal, a new expiry) supersedes the earlier entry:
    the ``prescribers`` projection keeps the latest; nothing is rewritten. ``staff_id`` names the
    enrolled staff member (role prescriber) when the prescriber is one."""

    kind: ClassVar[str] = "prescriber_registered"
    dea_number: str
    name: str
    registration_state: str  # the DEA registration's state: the clinic's
    schedules: tuple[str, ...]  # of "2", "2N", "3", "3N", "4", "5", in that order
    expires_on: date
    state_license_number: str
    state_license_state: str
    staff_id: str | None = None


EVENT_TYPES.update({PrescriberRegistered.kind: PrescriberRegistered})


# --- preparations and infusions (issue 19, preparations part) ---------------------------------
# A diluted infusion: ketamine drawn from vials into a bag or a syringe-pump syringe with a
# diluent, then infused at a rate, the remainder wasted before a witness. The preparation stores
# its mg (exact: the sum of mL x strength of its draws, never rounded) and its final mL; the
# concentration is derived (mg / final mL) and never stored rounded. mg given = mg x mL infused /
# final mL (half-even to 0.01 mg) and mg wasted = mg - mg given, so mg drawn = given + wasted
# exactly whatever the dilution. ``product_ml_*`` split the product mL drawn the same way
# (product mL given = mL drawn x mg given / mg, half-even to 0.001 mL; wasted = drawn - given), so
# the audit, which counts in product mL, balances exactly too.


@dataclass(frozen=True)
class PreparationMade(Event):
    """A bag or syringe prepared for one patient's infusion (USP <797> immediate use: its
    administration begins within 4 hours of the start of preparation, ``beyond_use_at``).
    ``draws`` take their mL off the vials now (as a direct dose's do)."""

    kind: ClassVar[str] = "preparation_made"
    preparation_id: str
    patient_id: str
    patient_commitment: str
    prescriber_dea_number: str
    prescriber_name: str
    weight_kg: Decimal
    ordered_mg_per_kg: Decimal
    ordered_mg: Decimal  # weight x mg/kg, rounded half-up to 0.01 mg (as a direct dose's)
    draws: tuple[Draw, ...]
    ml_drawn: Decimal  # product mL, the sum of the draws
    mg: Decimal  # exact: sum of draw mL x strength
    diluent: str  # e.g. "0.9% sodium chloride"
    diluent_ml: Decimal
    container: str  # "bag" | "syringe"
    final_ml: Decimal  # the labelled final volume the concentration is read against
    started_at: str  # UTC text: the start of preparation (the entry's event time)
    beyond_use_at: str  # UTC text: started_at + 4 h
    late_reason: str | None = None


@dataclass(frozen=True)
class PreparationInfused(Event):
    """The infusion from a preparation: started (not after its beyond-use time), stopped, and
    the volume infused as the pump reports it (never "bag volume minus remainder": bags are
    overfilled). A stopped-early infusion is normal; its remainder is wasted."""

    kind: ClassVar[str] = "preparation_infused"
    preparation_id: str
    preparation_seq: int
    patient_id: str
    product: ProductDescription
    ordered_mg: Decimal  # the preparation's order, copied (the dose check reads this entry alone)
    vials_drawn: int  # the preparation's draws (each may be off by half a graduation)
    mg: Decimal  # the preparation's, copied so the entry reads alone
    ml_drawn: Decimal  # the preparation's product mL
    final_ml: Decimal
    ml_infused: Decimal  # as the pump reports it, diluted mL
    mg_given: Decimal  # mg x ml_infused / final_ml, half-even to 0.01 mg
    product_ml_given: Decimal  # ml_drawn x mg_given / mg, half-even to 0.001 mL (2 decimals when exact)
    started_at: str
    ended_at: str
    stopped_early: bool  # ml_infused < final_ml
    stop_reason: str | None = None
    late_reason: str | None = None


@dataclass(frozen=True)
class PreparationWasted(Event):
    """What is left of a preparation, wasted before a witness (a different, authenticated
    person): mg - mg given exactly (the whole preparation when it was never infused, e.g. past
    its beyond-use time or cancelled). Wastage, not Form 41."""

    kind: ClassVar[str] = "preparation_wasted"
    preparation_id: str
    preparation_seq: int
    product: ProductDescription
    mg: Decimal  # exact: the preparation's mg - mg given
    product_ml: Decimal  # the preparation's product mL drawn - product mL given
    infused: bool  # False: never infused, wasted whole
    method: str
    ml_remaining: Decimal | None = None  # diluted mL discarded, as measured (a record; not used to count)
    reason: str | None = None  # why a never-infused preparation is wasted
    late_reason: str | None = None


EVENT_TYPES.update({t.kind: t for t in (PreparationMade, PreparationInfused, PreparationWasted)})


# --- esketamine (Spravato) sessions (issue 19, esketamine part) ---------------------------------
# A flat-dose, device product: the patient self-administers 2 or 3 nasal-spray devices (28 mg
# each) under a healthcare provider's direct observation, then is monitored at least 2 hours
# (Spravato REMS). Each device is one tracked unit (a ``vials`` row), single use, taken whole:
# it leaves the book with the session. Rules: ``ledger.domain.esketamine``.


@dataclass(frozen=True)
class DeviceUsed:
    """One nasal-spray device used whole in a session."""

    vial_id: str
    lot: str
    expiry: date
    ml: Decimal  # the device's whole content: the product's container_ml
    mg: Decimal  # ml x strength (28.00 for Spravato)


@dataclass(frozen=True)
class EsketamineSessionRecorded(Event):
    """An esketamine nasal-spray treatment session (21 CFR 1304.22(c): date, patient, quantity,
    who administered): the devices the patient self-administered under the direct observation of
    the signer (``directly_observed_by``, the performer, a healthcare provider), the flat dose
    (devices x mg per device: 56 or 84 mg), the prescriber's order, and the REMS observation
    (at least 2 hours after administration). ``administered_at`` is the first device."""

    kind: ClassVar[str] = "esketamine_session_recorded"
    session_id: str
    patient_id: str
    patient_commitment: str
    prescriber_dea_number: str
    prescriber_name: str
    product: ProductDescription
    devices: tuple[DeviceUsed, ...]
    mg_per_device: Decimal
    dose_mg: Decimal  # len(devices) x mg_per_device
    ml_used: Decimal  # sum of the devices' ml
    administered_at: str  # UTC text (the entry's event time)
    observation_started_at: str
    observation_ended_at: str
    directly_observed_by: str  # staff id: the signer, who watched the self-administration
    directly_observed_by_name: str
    late_reason: str | None = None


EVENT_TYPES.update({EsketamineSessionRecorded.kind: EsketamineSessionRecorded})


# --- package hierarchy: cartons opened (issue 19, packages part) -------------------------------


@dataclass(frozen=True)
class PackageOpened(Event):
    """A sealed package (carton, kit) opened by one person and witnessed by a second, who record
    the units found in it. Found units go into usable stock; the units not found (a shortfall)
    stay on the book, unusable, under the discrepancy this entry opens (``discrepancy_id``) until a
    manager resolves it: an accepted loss then takes them off the book (``loss_adjusted``).
    Finding more units than the package holds is refused: they are not on the book."""

    kind: ClassVar[str] = "package_opened"
    package_id: str
    product: ProductDescription
    lot: str
    expiry: date
    receipt_seq: int  # the ``stock_received`` entry that put the package and its units on the book
    units_per_package: int  # what the package should hold, as received
    units_found: tuple[str, ...]  # vial ids of the units found, now usable
    units_missing: tuple[str, ...]  # vial ids of the units not found (the shortfall)
    discrepancy_id: str | None  # opened when units are missing
    gtin: str | None = None
    serial: str | None = None
    late_reason: str | None = None


EVENT_TYPES.update({PackageOpened.kind: PackageOpened})


# --- Form 106 follow-up: the notice sent to DEA and the form filed (issue 20) -----------------


@dataclass(frozen=True)
class DeaNoticeSent(Event):
    """The written notice of a theft or significant loss went to the DEA field office (21 CFR
    1301.76(b): within one business day of discovery). Names its ``theft_or_loss_reported``
    entry; one per report. ``late`` says it went after ``due_at`` (the report's due time): a late
    notice is still recorded, never refused."""

    kind: ClassVar[str] = "dea_notice_sent"
    loss_report_seq: int
    sent_at: str  # UTC text
    method: str  # email | fax | phone | letter | online
    recipient: str  # the DEA field office (name, address) or the person reached
    due_at: str  # the report's notice_due_at, copied
    late: bool
    document_sha256: str | None = None  # a stored copy of the notice


@dataclass(frozen=True)
class Form106Filed(Event):
    """DEA Form 106 was filed (DEA accepts it only electronically) with the confirmation number
    DEA's system gave. Names its ``theft_or_loss_reported`` entry; one per report; ``late`` when
    filed after the report's Form 106 due time."""

    kind: ClassVar[str] = "form_106_filed"
    loss_report_seq: int
    filed_at: str  # UTC text
    confirmation_number: str
    due_at: str  # the report's form_106_due_at, copied
    late: bool
    document_sha256: str | None = None  # a stored copy of DEA's confirmation


EVENT_TYPES.update({t.kind: t for t in (DeaNoticeSent, Form106Filed)})
