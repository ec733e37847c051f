"""supplier registrations: a supplier's DEA registration (expiry, schedules) and its DSCSA
authorized-trading-partner status on the ``suppliers`` projection (issue 19)

Suppliers added before keep NULL / "" until a ``supplier_registration_recorded`` entry says
them; receipts from them are refused until then. Rebuilt and compared by ``verify --deep``.

Revision ID: 0010
Revises: 0009
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("suppliers") as batch:
        batch.add_column(sa.Column("registration_expires_on", S(length=10), nullable=True))
        batch.add_column(sa.Column("schedules", S(length=32), nullable=False, server_default=""))
        batch.add_column(sa.Column("authorized_trading_partner", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("suppliers") as batch:
        batch.drop_column("authorized_trading_partner")
        batch.drop_column("schedules")
        batch.drop_column("registration_expires_on")
