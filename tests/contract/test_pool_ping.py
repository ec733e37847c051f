"""PostgreSQL's pooled connections are pinged only after sitting idle (issue 22).

A connection used a moment ago goes straight to the command (a ping per checkout was a round
trip per command); one that sat idle past ``PING_AFTER_IDLE_S`` is pinged first, and if the
server dropped it meanwhile (a restart, a terminated backend) the pool replaces it and the
command runs as if nothing happened.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.storage import engine as engine_mod
from tests.conftest import Clinic, entry_count
from tests.contract.test_ledger_contract import receipt

pytestmark = pytest.mark.postgres


def _drop_every_connection(ledger) -> int:
    """The server ends every connection of the ledger's database (a restart, a failover): how many."""
    admin = sa.create_engine(ledger.engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            return c.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE datname = :d AND pid <> pg_backend_pid()"),
                             {"d": ledger.engine.url.database}).scalar()
    finally:
        admin.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_dropped_while_idle_is_replaced_before_the_command(ledger):
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    before = entry_count(ledger)
    assert _drop_every_connection(ledger) >= 1
    time.sleep(engine_mod.PING_AFTER_IDLE_S + 0.2)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))  # no error: replaced after its ping
    assert ledger.engine.pool.checkedout() == 0
    assert entry_count(ledger) == before + 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_used_a_moment_ago_is_not_pinged(ledger, monkeypatch):
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    pings: list[int] = []
    real = ledger.engine.dialect.do_ping
    monkeypatch.setattr(ledger.engine.dialect, "do_ping", lambda conn: pings.append(1) or real(conn))
    # A window no stall of a busy test machine reaches: "a moment ago" is then certain.
    monkeypatch.setattr(engine_mod, "PING_AFTER_IDLE_S", 60.0)
    for i in range(2, 7):
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, f"INV-{i}"))
    assert len(pings) == 0
    monkeypatch.setattr(engine_mod, "PING_AFTER_IDLE_S", 0.05)
    time.sleep(0.2)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-9"))
    assert len(pings) >= 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_one_failed_ping_replaces_every_pooled_connection(ledger, monkeypatch):
    """After a restart or a failover every idle connection is dead: the first failed ping
    replaces the whole pool, so the connections handed out next are new ones, not dead ones that
    each wait for a ping of their own (review of issue 22)."""
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    held = [ledger.engine.connect() for _ in range(4)]  # four connections in the pool
    for c in held:
        c.exec_driver_sql("SELECT 1")
    for c in held:
        c.close()
    assert _drop_every_connection(ledger) >= 4
    time.sleep(engine_mod.PING_AFTER_IDLE_S + 0.2)
    pings: list[int] = []
    real = ledger.engine.dialect.do_ping
    monkeypatch.setattr(ledger.engine.dialect, "do_ping", lambda conn: pings.append(1) or real(conn))
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))  # its checkout's ping fails
    assert len(pings) == 1
    # From now on nothing is pinged: a dead connection still in the pool would fail below.
    monkeypatch.setattr(engine_mod, "PING_AFTER_IDLE_S", 3600.0)
    again = [ledger.engine.connect() for _ in range(4)]
    try:
        assert [c.exec_driver_sql("SELECT 1").scalar() for c in again] == [1, 1, 1, 1]
    finally:
        for c in again:
            c.close()
    assert len(pings) == 1
