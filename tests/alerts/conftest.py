"""Fixtures for the alert tests: a clinic with a manager and a compliance officer, a ledger
whose clock the test sets, and the alert rules attached as in production."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ledger.services.alerts import attach_alert_rules
from ledger.storage.store import Ledger
from tests.conftest import Clinic, migrated_engine


class Clock:
    """A settable clock: ``Ledger(clock=...)`` stamps recorded_at with it."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 2, 15, 0, tzinfo=UTC))  # a Monday, 09:00 in Austin


@pytest.fixture
def ledger(db_url, clock) -> Iterator[Ledger]:
    lg = Ledger(migrated_engine(db_url), clock=clock)
    attach_alert_rules(lg)
    yield lg
    lg.dispose()


class AlertClinic(Clinic):
    def __init__(self, ledger: Ledger):
        super().__init__(ledger)
        self.manager = self.enroll("Mara Manager", "mara", "manager")
        self.compliance = self.enroll("Cole Compliance", "cole", "compliance_officer")
        self.manager_nurse = self.enroll("Nia Nurse-Manager", "nia", "nurse", "manager")


@pytest.fixture
def clinic(ledger) -> AlertClinic:
    return AlertClinic(ledger)
