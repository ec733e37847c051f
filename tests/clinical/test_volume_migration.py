"""Migration 0013 (issue 19): PostgreSQL's quantity columns go from NUMERIC(18, 2) to
NUMERIC(18, 3) keeping every stored value; SQLite stores quantities as text and needs nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from ledger.services.verify import verify
from tests.clinical.conftest import Ops
from tests.clinical.test_fine_volumes import add_100, dose, receive_100, stored_ml_left
from tests.conftest import fresh_database_url


def _numeric_columns(engine, scale: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND data_type = 'numeric' AND numeric_scale = :s ORDER BY 1, 2"), {"s": scale})]


@pytest.fixture
def pg_url(tmp_path):
    yield from fresh_database_url("postgresql", tmp_path)


def test_migration_0013_widens_postgresql_keeping_every_value(pg_url):
    """A database as it was before issue 19 (NUMERIC(18, 2), 2-decimal data) goes to NUMERIC(18, 3)
    with every stored value and every projection unchanged; narrowing back is refused once a
    third decimal is stored."""
    from alembic import command

    from ledger.storage.store import Ledger, alembic_config, make_engine, migrate

    engine = make_engine(pg_url)
    migrate(engine, "0012")
    with engine.begin() as conn:  # the schema of a database migrated before this change
        for table, column in _numeric_columns(engine, 3):
            conn.execute(sa.text(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE NUMERIC(18, 2)'))
    assert _numeric_columns(engine, 3) == []
    ledger = Ledger(engine)
    ops = Ops(ledger)
    add_100(ops)
    [vid] = receive_100(ops)
    dose(ops, vid, "0.37", "0.37")
    assert stored_ml_left(ledger, vid) == "9.63"
    with ledger.reading() as conn:
        before = [tuple(r) for r in conn.execute(sa.text("SELECT vial_id, CAST(ml_left AS VARCHAR) FROM vials ORDER BY 1"))]

    migrate(engine)
    assert _numeric_columns(engine, 2) == []
    assert ("vials", "ml_left") in _numeric_columns(engine, 3) and ("entry_movements", "ml") in _numeric_columns(engine, 3)
    with ledger.reading() as conn:
        after = [tuple(r) for r in conn.execute(sa.text("SELECT vial_id, CAST(ml_left AS VARCHAR) FROM vials ORDER BY 1"))]
    assert [(v, Decimal(m)) for v, m in after] == [(v, Decimal(m)) for v, m in before]
    assert verify(ledger, deep=True).ok
    dose(ops, vid, "0.365", "0.365")
    assert stored_ml_left(ledger, vid) == "9.265"
    assert verify(ledger, deep=True).ok

    cfg = alembic_config()
    with engine.begin() as conn, pytest.raises(RuntimeError, match="third decimal"):
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0012")
    assert _numeric_columns(engine, 2) == []  # nothing narrowed
    ledger.dispose()
