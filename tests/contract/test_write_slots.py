"""Write slots (issue 22): at most N append transactions of one process run at once, in order of
arrival, and a registrant never waits on another registrant's lock or commit.

Why it exists: with 20 registrants writing at once the process spent more time handing the
interpreter lock between threads (PostgreSQL) or sleeping in SQLite's busy handler than doing
the work (figures in docs/benchmarks.md). These tests check the limit, its order, that commands
queued behind a slot still commit as one group, and that a waiter that is stopped gives its
slot back.
"""

from __future__ import annotations

import threading
import time

import pytest

from ledger import services
from ledger.domain.errors import LedgerError
from ledger.domain.identifiers import dea_check_digit
from ledger.services.verify import verify
from ledger.storage.store import Ledger, WriteSlots, make_engine, write_slots_for
from tests.conftest import DEA, DEA2, Clinic
from tests.contract.test_ledger_contract import receipt

DEA3 = "AB" + "700001" + str(dea_check_digit("700001"))

BOTH = pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                               indirect=True)


def _until(cond, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


def test_one_slot_on_sqlite_two_on_postgresql():
    assert write_slots_for("sqlite") == 1
    assert write_slots_for("postgresql") == 2
    with pytest.raises(ValueError, match="at least 1"):
        WriteSlots(0)


def test_waiters_are_handed_their_slot_in_order_of_arrival():
    slots = WriteSlots(1)
    order: list[int] = []
    slots.__enter__()  # the test holds the only slot

    def run(i: int) -> None:
        with slots:
            order.append(i)

    threads = []
    for i in range(6):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)
        _until(lambda n=i + 1: slots.waiting() == n, f"thread {i} never queued for a slot")
    slots.__exit__(None, None, None)
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a waiter was never handed the slot"
    assert order == list(range(6))
    assert slots.waiting() == 0 and slots._free == 1


def test_never_more_than_n_at_once_and_a_holder_may_nest():
    slots = WriteSlots(2)
    inside, most, lock = [0], [0], threading.Lock()

    def run() -> None:
        for _ in range(50):
            with slots:
                with slots:  # a command started inside another registrant's command
                    with lock:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.0005)
                    with lock:
                        inside[0] -= 1

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a thread never got a slot"
    assert most[0] == 2  # 8 threads for 400 turns: both slots were used, never a third
    assert slots._free == 2 and slots.waiting() == 0


class _Stopped(Exception):
    pass


class _StopsWaiter(WriteSlots):
    """A waiter stopped (say, by KeyboardInterrupt) while waiting: before or after it is handed
    the slot."""

    def __init__(self, *, after_handed: bool):
        super().__init__(1)
        self.after_handed = after_handed

    def _wait_for(self, turn: threading.Lock) -> None:
        if self.after_handed:
            turn.acquire()
        raise _Stopped()


@pytest.mark.parametrize("after_handed", [False, True])
def test_a_waiter_that_is_stopped_gives_its_turn_back(after_handed):
    slots = _StopsWaiter(after_handed=after_handed)
    slots.__enter__()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with slots:
                pass
        except _Stopped as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    if after_handed:
        _until(lambda: slots.waiting() == 1, "the waiter never queued")
    slots.__exit__(None, None, None)
    t.join(30)
    assert len(errors) == 1
    assert slots.waiting() == 0 and slots._free == 1, "a stopped waiter kept (or lost) the slot"
    with slots:  # and the slot is usable: this would hang if it had been lost
        pass


@BOTH
def test_commands_queued_behind_a_held_slot_commit_as_one_group(ledger):
    """The batch is taken once the slot is had: commands that arrived meanwhile join it."""
    clinic = Clinic(ledger)
    ledger.write_slots = WriteSlots(1)
    commits = ledger.commits
    ledger.write_slots.__enter__()  # as if another registrant's transaction were in flight
    results: dict[str, object] = {}

    def run(inv: str) -> None:
        try:
            results[inv] = services.receive_stock(ledger, clinic.nurse, receipt(clinic, inv))
        except LedgerError as exc:
            results[inv] = exc

    threads = []
    for i in range(5):
        t = threading.Thread(target=run, args=(f"INV-Q{i}",))
        t.start()
        threads.append(t)
        _until(lambda n=i + 1: ledger.waiting(DEA) == n, "the command never queued")
    assert ledger.write_slots.waiting() == 1  # only the group's leader waits for a slot
    ledger.write_slots.__exit__(None, None, None)
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a queued command never finished"
    assert all(isinstance(r, dict) for r in results.values()), results
    assert ledger.commits == commits + 1, "the five queued commands were not one commit"
    assert verify(ledger, deep=True).ok


@BOTH
def test_registrants_in_one_process_share_the_slots_and_all_record(ledger, db_url):
    """Three registrants, three writers each, on a ledger with the default slots: no command is
    lost or refused as busy, never more transactions run at once than there are slots (group
    commit alone would allow one per registrant), and every chain verifies."""
    clinics = [Clinic(ledger), Clinic(ledger, DEA2), Clinic(ledger, DEA3)]
    slots = ledger.write_slots.slots
    inside, most, lock = [0], [0], threading.Lock()

    def count(ctx) -> None:  # inside the transaction, before commit
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.001)
        with lock:
            inside[0] -= 1

    ledger.before_commit.append(count)
    errors: list[BaseException] = []

    def run(clinic: Clinic, w: int) -> None:
        for k in range(10):
            try:
                services.receive_stock(ledger, clinic.nurse, receipt(clinic, f"INV-{w}-{k}"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(c, w)) for c in clinics for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a writer never finished"
    assert not errors, errors[:3]
    assert 1 <= most[0] <= slots
    report = verify(ledger, deep=True)
    assert report.ok, report
    for dea in (DEA, DEA2, DEA3):
        with ledger.reading() as c:
            n = c.exec_driver_sql("SELECT count(*) FROM entries WHERE registrant = ? AND kind = 'stock_received'"
                                  if ledger.dialect == "sqlite" else
                                  "SELECT count(*) FROM entries WHERE registrant = %s AND kind = 'stock_received'",
                                  (dea,)).scalar()
        assert n == 30, (dea, n)


def test_a_ledger_takes_its_slots_from_the_database_kind(tmp_path):
    ledger = Ledger(make_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    try:
        assert ledger.write_slots.slots == 1
    finally:
        ledger.dispose()
