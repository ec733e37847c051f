"""preparations (diluted infusions) and their infusions (issue 19)

The projection of ``preparation_made`` / ``preparation_infused`` / ``preparation_wasted``
entries: one row per bag or syringe, rebuilt and compared by ``verify --deep``. Quantities are
the entries' exact text (a preparation's mg is never rounded, so no fixed-scale column holds it).

Revision ID: 0012
Revises: 0011
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "preparations",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("preparation_id", S(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("patient_id", S(length=32), nullable=False),
        sa.Column("prepared_by", S(length=64), nullable=False),
        sa.Column("ndc_key", S(length=12), nullable=False),
        sa.Column("container", S(length=16), nullable=False),
        sa.Column("ml_drawn", S(length=40), nullable=False),
        sa.Column("mg", S(length=40), nullable=False),
        sa.Column("final_ml", S(length=40), nullable=False),
        sa.Column("started_at", S(length=27), nullable=False),
        sa.Column("beyond_use_at", S(length=27), nullable=False),
        sa.Column("status", S(length=16), nullable=False),
        sa.Column("infused_seq", sa.BigInteger(), nullable=True),
        sa.Column("ml_infused", S(length=40), nullable=True),
        sa.Column("mg_given", S(length=40), nullable=True),
        sa.Column("product_ml_given", S(length=40), nullable=True),
        sa.Column("infusion_started_at", S(length=27), nullable=True),
        sa.Column("infusion_ended_at", S(length=27), nullable=True),
        sa.Column("wasted_seq", sa.BigInteger(), nullable=True),
        sa.Column("mg_wasted", S(length=40), nullable=True),
        sa.PrimaryKeyConstraint("registrant", "preparation_id"),
    )
    op.create_index("ix_preparations_status", "preparations", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_preparations_status", table_name="preparations")
    op.drop_table("preparations")
