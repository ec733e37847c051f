"""alerts: the alert projection and the notification record (issue 7)

``alerts`` is a projection of the alert entries (rebuilt by ``verify --deep``);
``alert_notifications`` records which deadline went out on which channel.

Revision ID: 0005
Revises: 0004
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("alert_id", S(length=32), nullable=False),
        sa.Column("alert_key", S(length=200), nullable=False),
        sa.Column("rule", S(length=64), nullable=False),
        sa.Column("severity", S(length=16), nullable=False),
        sa.Column("subjects", S(), nullable=False),
        sa.Column("summary", S(), nullable=False),
        sa.Column("parameters", S(), nullable=False),
        sa.Column("evidence_seqs", S(), nullable=False),
        sa.Column("figures", S(), nullable=False),
        sa.Column("deadlines", S(), nullable=False),
        sa.Column("raised_seq", sa.BigInteger(), nullable=False),
        sa.Column("raised_at", S(length=27), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("acknowledged_seq", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", S(length=64), nullable=True),
        sa.Column("acknowledged_category", S(length=32), nullable=True),
        sa.Column("acknowledged_explanation", S(), nullable=True),
        sa.Column("resolved_seq", sa.BigInteger(), nullable=True),
        sa.Column("resolved_by", S(length=64), nullable=True),
        sa.Column("resolved_category", S(length=32), nullable=True),
        sa.Column("resolved_explanation", S(), nullable=True),
        sa.Column("resolved_at", S(length=27), nullable=True),
        sa.PrimaryKeyConstraint("registrant", "alert_id"),
    )
    op.create_index("ix_alerts_registrant_key", "alerts", ["registrant", "alert_key"], unique=False)
    op.create_table(
        "alert_notifications",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("alert_id", S(length=32), nullable=False),
        sa.Column("channel", S(length=16), nullable=False),
        sa.Column("sent_at", S(length=27), nullable=False),
        sa.Column("detail", S(), nullable=False),
        sa.PrimaryKeyConstraint("registrant", "alert_id", "channel"),
    )


def downgrade() -> None:
    op.drop_table("alert_notifications")
    op.drop_index("ix_alerts_registrant_key", table_name="alerts")
    op.drop_table("alerts")
