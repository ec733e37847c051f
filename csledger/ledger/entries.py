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
class SupplierAdded(Event):
    kind: ClassVar[str] = "supplier_added"
    supplier_id: str
    name: str
    address: Address
    dea_number: str


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


@dataclass(frozen=True)
class InventoryTaken(Event):
    """An initial or biennial inventory (21 CFR 1304.11), at opening or close of business."""

    kind: ClassVar[str] = "inventory_taken"
    inventory_type: str  # "initial" | "biennial"
    taken_at: str  # "opening_of_business" | "close_of_business"
    items: tuple[InventoryItem, ...]
    late_reason: str | None = None


@dataclass(frozen=True)
class ReceivedLine:
    product: ProductDescription
    containers: int
    lot: str
    expiry: date
    vial_ids: tuple[str, ...]  # one identity per received container


@dataclass(frozen=True)
class SupplierCopy:
    supplier_id: str
    name: str
    address: Address
    dea_number: str


@dataclass(frozen=True)
class StockReceived(Event):
    """A receipt on an invoice with every element of 21 CFR 1304.22(c)."""

    kind: ClassVar[str] = "stock_received"
    invoice_number: str
    supplier: SupplierCopy
    lines: tuple[ReceivedLine, ...]
    late_reason: str | None = None
    notes: str = field(default="")


EVENT_TYPES: dict[str, type[Event]] = {
    t.kind: t
    for t in (
        RegistrantRegistered,
        ProductAdded,
        SupplierAdded,
        StaffEnrolled,
        RoleGranted,
        RoleRevoked,
        InventoryTaken,
        StockReceived,
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
class RegistrationExpiryRecorded(Event):
    """The registrant's DEA registration and its expiry date (renewals record a new one), so
    the scan can warn before it lapses."""

    kind: ClassVar[str] = "registration_expiry_recorded"
    expires_on: date


EVENT_TYPES.update({t.kind: t for t in (AlertRaised, AlertAcknowledged, AlertResolved, RegistrationExpiryRecorded)})
