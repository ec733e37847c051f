"""prescribers: the projection of ``prescriber_registered`` entries (issue 19)

One row per registrant and DEA number: the latest registration (a renewal supersedes the
earlier entry; entries are never rewritten). Rebuilt and compared by ``verify --deep``.

Revision ID: 0009
Revises: 0008
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "prescribers",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("dea_number", S(length=9), nullable=False),
        sa.Column("name", S(), nullable=False),
        sa.Column("registration_state", S(length=2), nullable=False),
        sa.Column("schedules", S(length=64), nullable=False),
        sa.Column("expires_on", S(length=10), nullable=False),
        sa.Column("state_license_number", S(length=32), nullable=False),
        sa.Column("state_license_state", S(length=2), nullable=False),
        sa.Column("staff_id", S(length=64), nullable=True),
        sa.Column("registered_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("registrant", "dea_number"),
    )


def downgrade() -> None:
    op.drop_table("prescribers")
