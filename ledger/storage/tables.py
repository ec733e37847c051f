"""SQLModel tables. The schema itself is created only by the Alembic migrations.

Conventions (both backends identical, so the contract tests compare like with like):
- Quantities are ``ExactDecimal``: NUMERIC on PostgreSQL; on SQLite, whose NUMERIC affinity
  would turn "10.00" into a binary float, fixed-scale TEXT. Python always sees ``Decimal``.
- Times are the entry's UTC text ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sorts like time, exact on both).
- ``entries``, ``entry_movements``, ``merkle_nodes`` and ``checkpoints`` are append-only; the
  migrations install triggers that refuse UPDATE and DELETE on them. So are ``log_keys``,
  ``witness_policies`` and ``cosignatures`` (migration 0002).
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from ledger.domain.quantities import norm


class ExactDecimal(TypeDecorator):
    """A Decimal stored exactly: NUMERIC(18, 3) on PostgreSQL, text on SQLite, by the 2-or-3
    rule (``ledger.domain.quantities.norm``): scale 2 when exact to 0.01 ("10.00"), else 3
    ("9.635", a volume at syringe resolution, issue 19). A value with a fourth decimal is a
    programming error (``ValueError``), never rounded: rounding here would store another figure
    than the entry records. Reads give back the same form (PostgreSQL pads to scale 3; the
    padding is taken off), so a projection read equals its rebuild digit for digit."""

    impl = sa.Numeric(18, 3)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(24))
        return dialect.type_descriptor(sa.Numeric(18, 3, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes Decimal, got {type(value).__name__}")
        value = norm(value)
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return norm(Decimal(value))


def Dec(**kw):  # noqa: N802 - reads like a column type
    return Field(sa_type=ExactDecimal, **kw)


TIME = 27  # len("2026-11-25T22:11:29.000000Z")


class Entry(SQLModel, table=True):
    __tablename__ = "entries"
    registrant: str = Field(primary_key=True, max_length=9)
    seq: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(max_length=64)
    schema_version: int
    occurred_at: str = Field(max_length=TIME)
    recorded_at: str = Field(max_length=TIME)
    prev_hash: str = Field(max_length=64)
    leaf_hash: str = Field(max_length=64)
    canonical: bytes = Field(sa_type=sa.LargeBinary)
    command_id: str = Field(max_length=36, index=True)


class EntryMovement(SQLModel, table=True):
    """Stock movements copied out of the canonical bytes, so balances are sums, not JSON scans."""

    __tablename__ = "entry_movements"
    registrant: str = Field(primary_key=True, max_length=9)
    seq: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    line: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    vial_id: str = Field(max_length=128, index=True)
    ndc_key: str = Field(max_length=12)
    ml: Decimal = Dec()


class Registrant(SQLModel, table=True):
    __tablename__ = "registrants"
    dea_number: str = Field(primary_key=True, max_length=9)
    name: str
    street: str
    city: str
    state: str = Field(max_length=2)
    postal_code: str = Field(max_length=10)
    time_zone: str = Field(max_length=64)
    log_id: str = Field(max_length=64)
    registered_seq: int


class Product(SQLModel, table=True):
    __tablename__ = "products"
    registrant: str = Field(primary_key=True, max_length=9)
    ndc_key: str = Field(primary_key=True, max_length=12)
    ndc: str = Field(max_length=16)
    name: str
    drug_code: str = Field(max_length=4)
    schedule: str = Field(max_length=4)
    form: str
    strength_mg_per_ml: Decimal = Dec()
    container_ml: Decimal = Dec()
    added_seq: int
    # issue 19, package hierarchy (migration 0011): what a unit is, its own NDC, units per package
    unit_kind: str = Field(default="vial", max_length=32)
    unit_ndc: str | None = Field(default=None, max_length=16)
    units_per_package: int = 1


class Supplier(SQLModel, table=True):
    __tablename__ = "suppliers"
    registrant: str = Field(primary_key=True, max_length=9)
    supplier_id: str = Field(primary_key=True, max_length=64)
    name: str
    street: str
    city: str
    state: str = Field(max_length=2)
    postal_code: str = Field(max_length=10)
    dea_number: str = Field(max_length=9)
    added_seq: int
    # issue 19: its DEA registration and DSCSA status (None/"" for suppliers added before)
    registration_expires_on: str | None = Field(default=None, max_length=10)
    schedules: str = Field(default="", max_length=32)
    authorized_trading_partner: bool | None = Field(default=None)


class Staff(SQLModel, table=True):
    __tablename__ = "staff"
    registrant: str = Field(primary_key=True, max_length=9)
    staff_id: str = Field(primary_key=True, max_length=64)
    printed_name: str
    username: str = Field(max_length=64)
    enrolled_seq: int


class StaffRole(SQLModel, table=True):
    __tablename__ = "staff_roles"
    registrant: str = Field(primary_key=True, max_length=9)
    staff_id: str = Field(primary_key=True, max_length=64)
    role: str = Field(primary_key=True, max_length=32)
    granted_seq: int


class Vial(SQLModel, table=True):
    __tablename__ = "vials"
    registrant: str = Field(primary_key=True, max_length=9)
    vial_id: str = Field(primary_key=True, max_length=128)
    ndc_key: str = Field(max_length=12, index=True)
    lot: str = Field(max_length=64)
    expiry: str = Field(max_length=10)
    state: str = Field(max_length=16)
    ml_left: Decimal = Dec()
    strength_mg_per_ml: Decimal = Dec()
    container_ml: Decimal = Dec()
    added_seq: int
    last_seq: int
    # issue 3: DSCSA identity and the multiple-dose vial's life (USP <797>: 28 days after puncture)
    gtin: str | None = Field(default=None, max_length=14)
    serial: str | None = Field(default=None, max_length=20)
    opened_at: str | None = Field(default=None, max_length=TIME)
    opened_by: str | None = Field(default=None, max_length=64)
    beyond_use_date: str | None = Field(default=None, max_length=10)
    # issue 19, package hierarchy (migration 0011): the package (carton) the unit came in, and
    # whether it is still in it: not drawn from or moved alone until a witnessed opening finds it
    package_id: str | None = Field(default=None, max_length=128, index=True)
    packaged: bool = False


class Invoice(SQLModel, table=True):
    """Which invoices have been received, so a duplicate from the same supplier is refused."""

    __tablename__ = "invoices"
    registrant: str = Field(primary_key=True, max_length=9)
    supplier_id: str = Field(primary_key=True, max_length=64)
    invoice_number: str = Field(primary_key=True, max_length=64)
    seq: int


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    registrant: str = Field(primary_key=True, max_length=9)
    key: str = Field(primary_key=True, max_length=128)
    command: str = Field(max_length=64)
    request_hash: str = Field(max_length=64)
    response: str
    created_at: str = Field(max_length=TIME)


class MerkleNode(SQLModel, table=True):
    """Perfect-subtree hashes of each registrant's RFC 9162 tree (level 0 = leaf hashes)."""

    __tablename__ = "merkle_nodes"
    registrant: str = Field(primary_key=True, max_length=9)
    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    hash: bytes = Field(sa_type=sa.LargeBinary)


class Checkpoint(SQLModel, table=True):
    """Signed checkpoints (C2SP signed notes), append-only."""

    __tablename__ = "checkpoints"
    registrant: str = Field(primary_key=True, max_length=9)
    tree_size: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    root_hash: str = Field(max_length=64)
    note: str
    signed_at: str = Field(max_length=TIME)


class LogKey(SQLModel, table=True):
    """Public verifier keys of each registrant's log, one row per generation, append-only.

    Why a table and not an entry: the key signs checkpoints *over* the entries, so a rotation
    must be recordable when the private key is lost and nothing can be appended; the current
    key is the highest generation, older ones are retired but kept so old checkpoints verify.
    The private half never touches the database (see ``ledger.log``).
    """

    __tablename__ = "log_keys"
    registrant: str = Field(primary_key=True, max_length=9)
    generation: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    origin: str = Field(max_length=255)
    verifier_key: str = Field(max_length=512)
    #: Smallest tree size this key signs; the previous generation signs sizes below it.
    first_size: int = Field(sa_type=sa.BigInteger)
    created_at: str = Field(max_length=TIME)
    reason: str


class WitnessPolicy(SQLModel, table=True):
    """Which witnesses a registrant's checkpoints go to and how many cosignatures count.

    Append-only history: the policy in force is the highest version. ``witnesses`` is JSON
    ``[{"verifier_key": ..., "url": ...}, ...]``; ``threshold`` is N of those M.
    """

    __tablename__ = "witness_policies"
    registrant: str = Field(primary_key=True, max_length=9)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    threshold: int
    witnesses: str
    set_at: str = Field(max_length=TIME)


class Cosignature(SQLModel, table=True):
    """A witness's cosignature/v1 line over one stored checkpoint, append-only."""

    __tablename__ = "cosignatures"
    registrant: str = Field(primary_key=True, max_length=9)
    tree_size: int = Field(primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False})
    witness: str = Field(primary_key=True, max_length=255)
    key_id: str = Field(primary_key=True, max_length=8)
    line: str
    received_at: str = Field(max_length=TIME)


APPEND_ONLY_TABLES = ("entries", "entry_movements", "merkle_nodes", "checkpoints",
                      "log_keys", "witness_policies", "cosignatures",
                      "document_blobs")  # issue 3 (migration 0003)
PROJECTION_MODELS = {
    "registrants": Registrant,
    "products": Product,
    "suppliers": Supplier,
    "staff": Staff,
    "staff_roles": StaffRole,
    "vials": Vial,
    "invoices": Invoice,
}
metadata = SQLModel.metadata


# --- clinic operations (issue 3) ----------------------------------------------------------------
# Projections of the clinical entries (rebuilt and compared by ``verify --deep``), and beside
# them the two stores that cannot be rebuilt from entries: document bytes (content-addressed,
# append-only) and the encrypted patient registry (health data: never in an entry).


class Policy(SQLModel, table=True):
    """The policy in force (the latest ``policy_set``); no row means the defaults."""

    __tablename__ = "policies"
    registrant: str = Field(primary_key=True, max_length=9)
    beyond_use_days: int
    late_entry_limit_hours: int
    variance_threshold_percent: Decimal = Dec()
    count_schedule: str = Field(max_length=64)
    clinic_hours: str  # JSON as in the entry
    dosage_unit: str = Field(max_length=16)
    set_seq: int = Field(sa_type=sa.BigInteger)
    passkey_required_for: str | None = Field(default=None, max_length=200)  # JSON list (issue 17)
    #: Issue 20: mL per opened container a count may differ without a discrepancy; None: the
    #: policy was set before the tolerance existed (the default applies, ``policy.from_row``).
    open_count_tolerance_ml: Decimal | None = Dec(default=None, nullable=True)


class Patient(SQLModel, table=True):
    """Patient ids and their current commitment (no name, no address)."""

    __tablename__ = "patients"
    registrant: str = Field(primary_key=True, max_length=9)
    patient_id: str = Field(primary_key=True, max_length=32)
    commitment: str = Field(max_length=64)
    registered_seq: int = Field(sa_type=sa.BigInteger)
    last_seq: int = Field(sa_type=sa.BigInteger)


class Administration(SQLModel, table=True):
    """Each infusion with what was drawn, given and wasted; unreconciled until drawn = given + wasted."""

    __tablename__ = "administrations"
    registrant: str = Field(primary_key=True, max_length=9)
    administration_id: str = Field(primary_key=True, max_length=32)
    seq: int = Field(sa_type=sa.BigInteger)
    patient_id: str = Field(max_length=32)
    performed_by: str = Field(max_length=64)
    ndc_key: str = Field(max_length=12)
    strength_mg_per_ml: Decimal = Dec()
    ml_drawn: Decimal = Dec()
    ml_given: Decimal = Dec()
    ml_wasted: Decimal = Dec()
    occurred_at: str = Field(max_length=TIME)
    status: str = Field(max_length=16, index=True)  # unreconciled | reconciled


class CountSession(SQLModel, table=True):
    __tablename__ = "count_sessions"
    registrant: str = Field(primary_key=True, max_length=9)
    session_id: str = Field(primary_key=True, max_length=32)
    blind: bool
    ndc_keys: str  # JSON list
    status: str = Field(max_length=16)  # open | submitted
    started_seq: int = Field(sa_type=sa.BigInteger)
    started_by: str = Field(max_length=64)
    submitted_seq: int | None = Field(default=None, sa_type=sa.BigInteger)


class Discrepancy(SQLModel, table=True):
    """A count difference: open until a manager who did not count resolves it."""

    __tablename__ = "discrepancies"
    registrant: str = Field(primary_key=True, max_length=9)
    discrepancy_id: str = Field(primary_key=True, max_length=32)
    count_seq: int = Field(sa_type=sa.BigInteger)
    ndc_key: str = Field(max_length=12)
    expected_ml: Decimal = Dec()
    counted_ml: Decimal = Dec()
    difference_ml: Decimal = Dec()
    expected_sealed_containers: int
    counted_sealed_containers: int
    counters: str  # JSON list of staff ids
    status: str = Field(max_length=16)  # open | resolved
    category: str | None = Field(default=None, max_length=32)
    resolved_seq: int | None = Field(default=None, sa_type=sa.BigInteger)


class Document(SQLModel, table=True):
    """Which documents a registrant stored (projection of ``document_stored``)."""

    __tablename__ = "documents"
    registrant: str = Field(primary_key=True, max_length=9)
    sha256: str = Field(primary_key=True, max_length=64)
    media_type: str = Field(max_length=100)
    title: str
    size_bytes: int = Field(sa_type=sa.BigInteger)
    seq: int = Field(sa_type=sa.BigInteger)


class DocumentBlob(SQLModel, table=True):
    """Document bytes by SHA-256, append-only (the same bytes are stored once)."""

    __tablename__ = "document_blobs"
    sha256: str = Field(primary_key=True, max_length=64)
    content: bytes = Field(sa_type=sa.LargeBinary)
    size_bytes: int = Field(sa_type=sa.BigInteger)


class PatientRecord(SQLModel, table=True):
    """The encrypted registry: AES-GCM of the name and address, bound to (registrant, patient)."""

    __tablename__ = "patient_registry"
    registrant: str = Field(primary_key=True, max_length=9)
    patient_id: str = Field(primary_key=True, max_length=32)
    sealed: bytes = Field(sa_type=sa.LargeBinary)
    updated_at: str = Field(max_length=TIME)


class PatientKeyCheck(SQLModel, table=True):
    """A key-check value of the patient key, so a wrong key is detected at start, not after
    records were written under it."""

    __tablename__ = "patient_key_check"
    name: str = Field(primary_key=True, max_length=32)
    check_value: str = Field(max_length=128)
    created_at: str = Field(max_length=TIME)


PROJECTION_MODELS.update({
    "policies": Policy, "patients": Patient, "administrations": Administration,
    "count_sessions": CountSession, "discrepancies": Discrepancy, "documents": Document,
})


# --- HTTP API authentication (issue 5) ---------------------------------------------------------
# Not ledger data: secrets are mutable, never hashed into the chain, and never projections of the
# entries. Who holds which role still comes only from ``staff_roles`` (entries). Queries on these
# tables live in ``api.http.auth_store``.


class StaffCredential(SQLModel, table=True):
    """A staff member's login secret: an argon2 hash (pwdlib), the TOTP secret, the lock-out state."""

    __tablename__ = "staff_credentials"
    registrant: str = Field(primary_key=True, max_length=9)
    staff_id: str = Field(primary_key=True, max_length=64)
    password_hash: str = Field(max_length=512)
    password_set_at: str = Field(max_length=TIME)
    #: Set when an administrator (or the console) set the password: the owner must change it.
    must_change_password: bool = False
    totp_secret: str | None = Field(default=None, max_length=64)
    failed_logins: int = 0
    locked_until: str | None = Field(default=None, max_length=TIME)
    updated_at: str = Field(max_length=TIME)
    #: The password key record (issue 17): the signing key wrapped under the password, JSON.
    signing_key: str | None = Field(default=None, sa_type=sa.Text)


class ApiSession(SQLModel, table=True):
    """A bearer token (stored as its SHA-256 only), with idle and absolute expiry and revocation."""

    __tablename__ = "api_sessions"
    token_hash: str = Field(primary_key=True, max_length=64)
    registrant: str = Field(max_length=9, index=True)
    staff_id: str = Field(max_length=64)
    auth_method: str = Field(max_length=32)
    created_at: str = Field(max_length=TIME)
    last_used_at: str = Field(max_length=TIME)
    expires_at: str = Field(max_length=TIME)
    revoked_at: str | None = Field(default=None, max_length=TIME)
    revoked_reason: str | None = Field(default=None, max_length=200)
    #: The opened signing key sealed under the bearer token (useless without the token).
    signing_key: str | None = Field(default=None, sa_type=sa.Text)


class WitnessAssertionRecord(SQLModel, table=True):
    """A witness's single-use assertion, bound to the SHA-256 of one command body and to the
    session (device) of the staff member who asked for it."""

    __tablename__ = "witness_assertions"
    token_hash: str = Field(primary_key=True, max_length=64)
    registrant: str = Field(max_length=9)
    witness_staff_id: str = Field(max_length=64)
    auth_method: str = Field(max_length=32)
    actor_staff_id: str = Field(max_length=64)
    actor_session_hash: str = Field(max_length=64)
    body_sha256: str = Field(max_length=64)
    created_at: str = Field(max_length=TIME)
    expires_at: str = Field(max_length=TIME)
    used_at: str | None = Field(default=None, max_length=TIME)
    #: The idempotency key of the request that used it: a retry of that same request may reuse it.
    used_with_key: str | None = Field(default=None, max_length=128)
    #: The witness's opened signing key sealed under the assertion token (password confirmations).
    signing_key: str | None = Field(default=None, sa_type=sa.Text)
    #: The statement nonce and the method ("password_key" | "passkey") of the confirmation.
    nonce: str | None = Field(default=None, max_length=64)
    method: str | None = Field(default=None, max_length=32)


class PatientAccessRecord(SQLModel, table=True):
    """Append-only: who read which patient's identifying data, when and how (compliance reads it)."""

    __tablename__ = "patient_access_log"
    id: int | None = Field(default=None, primary_key=True)
    registrant: str = Field(max_length=9, index=True)
    staff_id: str = Field(max_length=64)
    patient_id: str = Field(max_length=64)
    action: str = Field(max_length=64)
    accessed_at: str = Field(max_length=TIME)
    #: A report's one row (issue 16; ``patient_id`` is ``*``): the report (kind, period, tree
    #: size) and every patient whose name it decrypted, a JSON list. Empty for a single read.
    report: str | None = Field(default=None, max_length=200)
    patient_ids: str | None = Field(default=None, sa_type=sa.Text)


class StockRead(SQLModel, table=True):
    """Append-only: who read stock figures (the book), when and where. A blind count lists the
    reads its counters made while it was open (issue 15)."""

    __tablename__ = "stock_reads"
    __table_args__ = (sa.Index("ix_stock_reads_registrant_staff_at", "registrant", "staff_id", "read_at"),)
    id: int | None = Field(default=None, primary_key=True)
    registrant: str = Field(max_length=9)
    staff_id: str = Field(max_length=64)
    read_at: str = Field(max_length=TIME)
    what: str = Field(max_length=64)


# --- alerts (issue 7) ---------------------------------------------------------------------------


class Alert(SQLModel, table=True):
    """Alerts raised by the rules: a projection of ``alert_raised`` / ``alert_acknowledged`` /
    ``alert_resolved`` entries, rebuilt and compared by ``verify --deep``. JSON columns hold the
    entry's own JSON (sorted keys), so a rebuild compares equal text."""

    __tablename__ = "alerts"
    __table_args__ = (sa.Index("ix_alerts_registrant_key", "registrant", "alert_key"),)
    registrant: str = Field(primary_key=True, max_length=9)
    alert_id: str = Field(primary_key=True, max_length=32)
    alert_key: str = Field(max_length=200)
    rule: str = Field(max_length=64)
    severity: str = Field(max_length=16)
    subjects: str  # JSON list of staff ids
    summary: str
    parameters: str  # JSON
    evidence_seqs: str  # JSON list
    figures: str  # JSON
    deadlines: str  # JSON {name: UTC time}
    raised_seq: int = Field(sa_type=sa.BigInteger)
    raised_at: str = Field(max_length=TIME)
    status: str = Field(max_length=16)  # open | acknowledged | resolved
    acknowledged_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    acknowledged_by: str | None = Field(default=None, max_length=64)
    acknowledged_category: str | None = Field(default=None, max_length=32)
    acknowledged_explanation: str | None = None
    resolved_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    resolved_by: str | None = Field(default=None, max_length=64)
    resolved_category: str | None = Field(default=None, max_length=32)
    resolved_explanation: str | None = None
    resolved_at: str | None = Field(default=None, max_length=TIME)


class AlertNotification(SQLModel, table=True):
    """Which deadline alert went out on which channel (e-mail, webhook). Operational state, not a
    projection: a failed send has no row and is retried by the next scan."""

    __tablename__ = "alert_notifications"
    registrant: str = Field(primary_key=True, max_length=9)
    alert_id: str = Field(primary_key=True, max_length=32)
    channel: str = Field(primary_key=True, max_length=16)
    sent_at: str = Field(max_length=TIME)
    detail: str


PROJECTION_MODELS["alerts"] = Alert


# --- prescribers (issue 19) ---------------------------------------------------------------------


class Prescriber(SQLModel, table=True):
    """Registered prescribers: the latest ``prescriber_registered`` entry per DEA number (a
    renewal supersedes), rebuilt and compared by ``verify --deep``."""

    __tablename__ = "prescribers"
    registrant: str = Field(primary_key=True, max_length=9)
    dea_number: str = Field(primary_key=True, max_length=9)
    name: str
    registration_state: str = Field(max_length=2)
    schedules: str = Field(max_length=64)  # JSON list, e.g. ["3", "3N", "4", "5"]
    expires_on: str = Field(max_length=10)  # YYYY-MM-DD
    state_license_number: str = Field(max_length=32)
    state_license_state: str = Field(max_length=2)
    staff_id: str | None = Field(default=None, max_length=64)
    registered_seq: int = Field(sa_type=sa.BigInteger)


PROJECTION_MODELS["prescribers"] = Prescriber


# --- preparations and infusions (issue 19) ----------------------------------------------------


class Preparation(SQLModel, table=True):
    """Each bag or syringe prepared for an infusion, with its infusion and waste (projection of
    ``preparation_made`` / ``_infused`` / ``_wasted``). Quantities are the entries' exact text:
    a preparation's mg is never rounded, so no fixed-scale column may hold it."""

    __tablename__ = "preparations"
    registrant: str = Field(primary_key=True, max_length=9)
    preparation_id: str = Field(primary_key=True, max_length=32)
    seq: int = Field(sa_type=sa.BigInteger)
    patient_id: str = Field(max_length=32)
    prepared_by: str = Field(max_length=64)
    ndc_key: str = Field(max_length=12)
    container: str = Field(max_length=16)  # bag | syringe
    ml_drawn: str = Field(max_length=40)
    mg: str = Field(max_length=40)
    final_ml: str = Field(max_length=40)
    started_at: str = Field(max_length=TIME)
    beyond_use_at: str = Field(max_length=TIME)
    status: str = Field(max_length=16, index=True)  # prepared | infused | wasted
    infused_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    ml_infused: str | None = Field(default=None, max_length=40)
    mg_given: str | None = Field(default=None, max_length=40)
    product_ml_given: str | None = Field(default=None, max_length=40)
    infusion_started_at: str | None = Field(default=None, max_length=TIME)
    infusion_ended_at: str | None = Field(default=None, max_length=TIME)
    wasted_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    mg_wasted: str | None = Field(default=None, max_length=40)


PROJECTION_MODELS["preparations"] = Preparation


# --- package hierarchy (issue 19, packages part) ------------------------------------------------


class Package(SQLModel, table=True):
    """Each package (carton, kit) received in packages (projection of ``stock_received`` lines
    with packages, and ``package_opened``). Its units are ``vials`` rows naming it."""

    __tablename__ = "packages"
    registrant: str = Field(primary_key=True, max_length=9)
    package_id: str = Field(primary_key=True, max_length=128)
    ndc_key: str = Field(max_length=12, index=True)
    lot: str = Field(max_length=64)
    expiry: str = Field(max_length=10)
    gtin: str | None = Field(default=None, max_length=14)
    serial: str | None = Field(default=None, max_length=20)
    units_per_package: int
    received_seq: int = Field(sa_type=sa.BigInteger)
    opened_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    units_found: int | None = None
    discrepancy_id: str | None = Field(default=None, max_length=32)


PROJECTION_MODELS["packages"] = Package
