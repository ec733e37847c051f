"""the count tolerance for opened vials (issue 20)

``policies.open_count_tolerance_ml``: mL per opened container a count may differ from the book
without opening a discrepancy, from the latest ``policy_set`` entry. NULL for a policy set before
the tolerance existed: the default (``ledger.domain.policy.DEFAULT_OPEN_COUNT_TOLERANCE_ML``)
applies, as ``verify --deep``'s rebuild of the projection also leaves it NULL.

Revision ID: 0014
Revises: 0013
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

import ledger.storage.tables

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("policies", sa.Column("open_count_tolerance_ml",
                                        ledger.storage.tables.ExactDecimal(precision=18, scale=3), nullable=True))


def downgrade() -> None:
    op.drop_column("policies", "open_count_tolerance_ml")
