"""http api auth: credentials, sessions, witness assertions, patient access log

Not ledger data: these tables hold secrets and login state. ``patient_access_log`` is
append-only (UPDATE/DELETE/TRUNCATE refused by triggers, as the ledger's own tables).

Revision ID: 0004
Revises: 0003
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("patient_access_log",)
S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "staff_credentials",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("staff_id", S(length=64), nullable=False),
        sa.Column("password_hash", S(length=512), nullable=False),
        sa.Column("password_set_at", S(length=27), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        sa.Column("totp_secret", S(length=64), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", S(length=27), nullable=True),
        sa.Column("updated_at", S(length=27), nullable=False),
        sa.PrimaryKeyConstraint("registrant", "staff_id"),
    )
    op.create_table(
        "api_sessions",
        sa.Column("token_hash", S(length=64), nullable=False),
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("staff_id", S(length=64), nullable=False),
        sa.Column("auth_method", S(length=32), nullable=False),
        sa.Column("created_at", S(length=27), nullable=False),
        sa.Column("last_used_at", S(length=27), nullable=False),
        sa.Column("expires_at", S(length=27), nullable=False),
        sa.Column("revoked_at", S(length=27), nullable=True),
        sa.Column("revoked_reason", S(length=200), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("api_sessions", schema=None) as b:
        b.create_index(b.f("ix_api_sessions_registrant"), ["registrant"], unique=False)
    op.create_table(
        "witness_assertions",
        sa.Column("token_hash", S(length=64), nullable=False),
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("witness_staff_id", S(length=64), nullable=False),
        sa.Column("auth_method", S(length=32), nullable=False),
        sa.Column("actor_staff_id", S(length=64), nullable=False),
        sa.Column("actor_session_hash", S(length=64), nullable=False),
        sa.Column("body_sha256", S(length=64), nullable=False),
        sa.Column("created_at", S(length=27), nullable=False),
        sa.Column("expires_at", S(length=27), nullable=False),
        sa.Column("used_at", S(length=27), nullable=True),
        sa.Column("used_with_key", S(length=128), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "patient_access_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("staff_id", S(length=64), nullable=False),
        sa.Column("patient_id", S(length=64), nullable=False),
        sa.Column("action", S(length=64), nullable=False),
        sa.Column("accessed_at", S(length=27), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("patient_access_log", schema=None) as b:
        b.create_index(b.f("ix_patient_access_log_registrant"), ["registrant"], unique=False)
    _append_only_triggers()


def _append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "sqlite":
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
                )
        else:
            # csledger_append_only() is created by migration 0001.
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION csledger_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION csledger_append_only()")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    with op.batch_alter_table("patient_access_log", schema=None) as b:
        b.drop_index(b.f("ix_patient_access_log_registrant"))
    op.drop_table("patient_access_log")
    op.drop_table("witness_assertions")
    with op.batch_alter_table("api_sessions", schema=None) as b:
        b.drop_index(b.f("ix_api_sessions_registrant"))
    op.drop_table("api_sessions")
    op.drop_table("staff_credentials")
