"""patient access log: one row per report (issue 16)

A report that decrypts many patients' names and addresses (the administration log, and
``verify-report`` re-reading them) writes ONE row to ``patient_access_log``: its reader, the
report (kind, period and ledger tree size, in ``report``) and every patient it included (a
JSON list in ``patient_ids``; ``patient_id`` is ``*``). Single reads keep one row per patient
and leave both new columns empty. The table stays append-only (its triggers are untouched:
SQLite's ADD COLUMN keeps them).

Revision ID: 0007
Revises: 0006
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString
TABLE = "patient_access_log"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("report", S(length=200), nullable=True))
    op.add_column(TABLE, sa.Column("patient_ids", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column(TABLE, "patient_ids")
    op.drop_column(TABLE, "report")
