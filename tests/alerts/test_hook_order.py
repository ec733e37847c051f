"""The in-transaction alert hook runs before the checkpoint hook, whichever is attached first:
the alert entries a command raises are inside the checkpoint signed by that command."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from ledger.services.alerts import attach_alert_rules
from ledger.services.verify import verify
from ledger.settings import Settings
from ledger.storage.log import attach, latest_checkpoint
from ledger.storage.store import Ledger, make_engine, migrate, tree_size
from tests.alerts.conftest import AlertClinic
from tests.conftest import KETAMINE_50


@pytest.mark.parametrize("alerts_first", [True, False])
def test_alert_entries_are_inside_the_commands_checkpoint(tmp_path, alerts_first):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    engine = make_engine(url)
    migrate(engine)
    ledger = Ledger(engine)
    if alerts_first:
        attach_alert_rules(ledger)
    attach(ledger, Settings(database_url=url, key_dir=tmp_path / "keys"))
    attach_alert_rules(ledger)  # idempotent: a second call adds nothing
    assert sum(getattr(h, "csledger_alerts", False) for h in ledger.before_commit) == 1
    clinic = AlertClinic(ledger)
    res = services.receive_stock(ledger, clinic.nurse, ReceiveStock(
        clinic.supplier_id, "INV-9", ledger.clock() - timedelta(days=2),
        (ReceivedLineInput(KETAMINE_50, 1, "L", "2028-01-31"),), late_reason="outage"))
    assert [e["kind"] for e in res["entries"]] == ["stock_received", "alert_raised"]
    with ledger.reading() as conn:
        assert latest_checkpoint(conn, clinic.dea).tree_size == tree_size(conn, clinic.dea)
    assert verify(ledger, deep=True).ok
    ledger.dispose()
