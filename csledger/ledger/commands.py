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


@dataclass(frozen=True)
class TakeInventory:
    inventory_type: str  # "initial" | "biennial"
    taken_at: str  # "opening_of_business" | "close_of_business"
    occurred_at: datetime
    items: tuple[InventoryItemInput, ...] = ()
    late_reason: str | None = None


@dataclass(frozen=True)
class ReceivedLineInput:
    ndc: str
    containers: int
    lot: str
    expiry: str  # YYYY-MM-DD


@dataclass(frozen=True)
class ReceiveStock:
    supplier_id: str
    invoice_number: str
    occurred_at: datetime
    lines: tuple[ReceivedLineInput, ...]
    late_reason: str | None = None
    notes: str = field(default="")
