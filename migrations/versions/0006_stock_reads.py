"""stock reads: who looked at the book, when (issue 15: blind counts stay blind)

``stock_reads`` records every read of stock figures (the stock and vial endpoints and pages). A
count submitted by counters who read the book while their count session was open lists those
reads in its entry and flags its discrepancy. Append-only, like ``patient_access_log``: a row a
reader could delete would let a counter hide that they looked.

Revision ID: 0006
Revises: 0005
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString
TABLE = "stock_reads"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registrant", S(length=9), nullable=False),
        sa.Column("staff_id", S(length=64), nullable=False),
        sa.Column("read_at", S(length=27), nullable=False),
        sa.Column("what", S(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stock_reads_registrant_staff_at", TABLE, ["registrant", "staff_id", "read_at"], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {TABLE}_no_{action.lower()} BEFORE {action} ON {TABLE} "
                       f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: {action} refused'); END")
    else:
        # csledger_append_only() is created by migration 0001.
        op.execute(f"CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE} "
                   f"FOR EACH ROW EXECUTE FUNCTION csledger_append_only()")
        op.execute(f"CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION csledger_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_update")
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_delete")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}")
        op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}")
    op.drop_index("ix_stock_reads_registrant_staff_at", table_name=TABLE)
    op.drop_table(TABLE)
