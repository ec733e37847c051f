"""clinic operations: vial life and DSCSA identity, policies, patients (ids + commitments, and
the encrypted registry), administrations, count sessions, discrepancies, documents

Revision ID: 0003
Revises: 0002
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import ledger.storage.tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: New append-only tables; the trigger function ``csledger_append_only`` comes from 0001.
APPEND_ONLY = ("document_blobs",)

S = sqlmodel.sql.sqltypes.AutoString
DEC = ledger.storage.tables.ExactDecimal(precision=18, scale=2)


def _install_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "sqlite":
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
                )
        elif dialect == "postgresql":
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION csledger_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION csledger_append_only()")
        else:
            raise RuntimeError(f"no append-only triggers for dialect {dialect}")


def upgrade() -> None:
    # Nullable columns: SQLite's ALTER TABLE ADD COLUMN takes them without a table rebuild.
    op.add_column("vials", sa.Column("gtin", S(length=14), nullable=True))
    op.add_column("vials", sa.Column("serial", S(length=20), nullable=True))
    op.add_column("vials", sa.Column("opened_at", S(length=27), nullable=True))
    op.add_column("vials", sa.Column("opened_by", S(length=64), nullable=True))
    op.add_column("vials", sa.Column("beyond_use_date", S(length=10), nullable=True))

    op.create_table(
        "policies",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("beyond_use_days", sa.Integer(), nullable=False),
        sa.Column("late_entry_limit_hours", sa.Integer(), nullable=False),
        sa.Column("variance_threshold_percent", DEC, nullable=False),
        sa.Column("count_schedule", S(length=64), nullable=False),
        sa.Column("clinic_hours", S(), nullable=False),
        sa.Column("dosage_unit", S(length=16), nullable=False),
        sa.Column("set_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("registrant"),
    )
    op.create_table(
        "patients",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("patient_id", S(length=32), nullable=False),
        sa.Column("commitment", S(length=64), nullable=False),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("registrant", "patient_id"),
    )
    op.create_table(
        "administrations",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("administration_id", S(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("patient_id", S(length=32), nullable=False),
        sa.Column("performed_by", S(length=64), nullable=False),
        sa.Column("ndc_key", S(length=12), nullable=False),
        sa.Column("strength_mg_per_ml", DEC, nullable=False),
        sa.Column("ml_drawn", DEC, nullable=False),
        sa.Column("ml_given", DEC, nullable=False),
        sa.Column("ml_wasted", DEC, nullable=False),
        sa.Column("occurred_at", S(length=27), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.PrimaryKeyConstraint("registrant", "administration_id"),
    )
    op.create_index("ix_administrations_status", "administrations", ["status"], unique=False)
    op.create_table(
        "count_sessions",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("session_id", S(length=32), nullable=False),
        sa.Column("blind", sa.Boolean(), nullable=False),
        sa.Column("ndc_keys", S(), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("started_seq", sa.BigInteger(), nullable=False),
        sa.Column("started_by", S(length=64), nullable=False),
        sa.Column("submitted_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("registrant", "session_id"),
    )
    op.create_table(
        "discrepancies",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("discrepancy_id", S(length=32), nullable=False),
        sa.Column("count_seq", sa.BigInteger(), nullable=False),
        sa.Column("ndc_key", S(length=12), nullable=False),
        sa.Column("expected_ml", DEC, nullable=False),
        sa.Column("counted_ml", DEC, nullable=False),
        sa.Column("difference_ml", DEC, nullable=False),
        sa.Column("expected_sealed_containers", sa.Integer(), nullable=False),
        sa.Column("counted_sealed_containers", sa.Integer(), nullable=False),
        sa.Column("counters", S(), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("category", S(length=32), nullable=True),
        sa.Column("resolved_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("registrant", "discrepancy_id"),
    )
    op.create_table(
        "documents",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("sha256", S(length=64), nullable=False),
        sa.Column("media_type", S(length=100), nullable=False),
        sa.Column("title", S(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("registrant", "sha256"),
    )
    op.create_table(
        "document_blobs",
        sa.Column("sha256", S(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "patient_registry",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("patient_id", S(length=32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", S(length=27), nullable=False),
        sa.PrimaryKeyConstraint("registrant", "patient_id"),
    )
    op.create_table(
        "patient_key_check",
        sa.Column("name", S(length=32), nullable=False),
        sa.Column("check_value", S(length=128), nullable=False),
        sa.Column("created_at", S(length=27), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    _install_triggers()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    for table in ("patient_key_check", "patient_registry", "document_blobs", "documents", "discrepancies",
                  "count_sessions", "administrations", "patients", "policies"):
        if table == "administrations":
            op.drop_index("ix_administrations_status", table_name=table)
        op.drop_table(table)
    with op.batch_alter_table("vials") as batch_op:
        for col in ("beyond_use_date", "opened_by", "opened_at", "serial", "gtin"):
            batch_op.drop_column(col)
