"""cartons and units: product package/unit model, cartons (issue 19)

A product records what its unit is (``unit_kind``: vial, nasal-spray device, pre-filled
syringe), the unit's own NDC (21 CFR 201.25) and the units in one package of its package NDC.
Products added before keep the meaning their entries had: a vial, one per package.
A receipt in packages records each package (``packages``: carton GTIN + serial or csledger's
number, opened by a witnessed ``package_opened``) and its units as ``vials`` rows naming it,
``packaged`` until it is opened. Rebuilt and compared by ``verify --deep`` like every projection.

Revision ID: 0011
Revises: 0010
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("unit_kind", S(length=32), nullable=False, server_default="vial"))
        batch.add_column(sa.Column("unit_ndc", S(length=16), nullable=True))
        batch.add_column(sa.Column("units_per_package", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("vials") as batch:
        batch.add_column(sa.Column("package_id", S(length=128), nullable=True))
        batch.add_column(sa.Column("packaged", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index(batch.f("ix_vials_package_id"), ["package_id"], unique=False)
    op.create_table(
        "packages",
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("package_id", S(length=128), nullable=False),
        sa.Column("ndc_key", S(length=12), nullable=False),
        sa.Column("lot", S(length=64), nullable=False),
        sa.Column("expiry", S(length=10), nullable=False),
        sa.Column("gtin", S(length=14), nullable=True),
        sa.Column("serial", S(length=20), nullable=True),
        sa.Column("units_per_package", sa.Integer(), nullable=False),
        sa.Column("received_seq", sa.BigInteger(), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), nullable=True),
        sa.Column("units_found", sa.Integer(), nullable=True),
        sa.Column("discrepancy_id", S(length=32), nullable=True),
        sa.PrimaryKeyConstraint("registrant", "package_id"),
    )
    with op.batch_alter_table("packages") as batch:
        batch.create_index(batch.f("ix_packages_ndc_key"), ["ndc_key"], unique=False)


def downgrade() -> None:
    op.drop_table("packages")
    with op.batch_alter_table("vials") as batch:
        batch.drop_index(batch.f("ix_vials_package_id"))
        batch.drop_column("packaged")
        batch.drop_column("package_id")
    with op.batch_alter_table("products") as batch:
        batch.drop_column("units_per_package")
        batch.drop_column("unit_ndc")
        batch.drop_column("unit_kind")
