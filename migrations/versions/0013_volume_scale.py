"""mL to 3 decimals (syringe resolution) (issue 19)

Volumes are recorded to half a 0.01 mL graduation (0.365 mL). On PostgreSQL every quantity
column (``ExactDecimal``: volumes, strengths, the variance threshold) goes from NUMERIC(18, 2)
to NUMERIC(18, 3): widening the scale keeps every stored value (10.00 is 10.000), and the
application reads it back by the 2-or-3 rule (``ledger.domain.quantities.norm``) as "10.00",
so projections rebuilt by ``verify --deep`` compare equal. All of them, not only the mL ones:
one column type, one rule, nothing to keep apart; the values of the others stay 2-decimal.

On SQLite quantities are text (VARCHAR(24), no affinity to a number), stored as the entry
writes them: nothing to change ("9.635" fits).

The append-only triggers (UPDATE/DELETE) do not fire on ALTER TABLE; the rows are rewritten by
the type change, not updated. Downgrade narrows back to NUMERIC(18, 2) only if no stored value
has a third decimal (it would be rounded), and refuses otherwise.

Revision ID: 0013
Revises: 0012
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _quantity_columns(scale: int) -> list[tuple[str, str]]:
    """(table, column) of every NUMERIC(18, ``scale``) column of the current schema."""
    rows = op.get_bind().execute(sa.text(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND data_type = 'numeric' AND numeric_precision = 18 AND numeric_scale = :s ORDER BY table_name, "
        "ordinal_position"), {"s": scale})
    return [(t, c) for t, c in rows]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: text columns, nothing to widen
    for table, column in _quantity_columns(2):
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE NUMERIC(18, 3)')


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    conn = op.get_bind()
    cols = _quantity_columns(3)
    for table, column in cols:
        finer = conn.execute(sa.text(f'SELECT count(*) FROM "{table}" WHERE "{column}" <> round("{column}", 2)')).scalar()
        if finer:
            raise RuntimeError(f"{table}.{column} holds {finer} value(s) with a third decimal; narrowing would round them")
    for table, column in cols:
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE NUMERIC(18, 2)')
