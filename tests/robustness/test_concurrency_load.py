"""Concurrency at scale (issue 8): 16 writers x 500 commands, on one registrant and spread over
8 registrants, on SQLite and PostgreSQL. No gap, no fork, nothing lost or doubled, balances
exact, ``verify --deep`` passes. Marked ``slow``; ``.ci/run`` still runs it.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.errors import LedgerError
from ledger.domain.identifiers import dea_check_digit
from ledger.integrity.canonical import decode
from ledger.services.verify import verify
from ledger.storage.store import entries_t
from tests.conftest import BACKENDS, Clinic
from tests.contract.test_ledger_contract import receipt

WRITERS = 16
COMMANDS = int(os.environ.get("CSLEDGER_LOAD_COMMANDS", "500"))


def dea_numbers(n: int) -> list[str]:
    out = []
    for i in range(n):
        body = f"{1000000 + i * 7919:07d}"[:6]
        out.append(f"A{chr(ord('B') + i)}{body}{dea_check_digit(body)}")
    return out


@pytest.mark.slow
@pytest.mark.serial  # sixteen threads racing: alone on the cores (.ci/run's second pass)
@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
@pytest.mark.parametrize("registrants", [1, 8])
def test_sixteen_writers(ledger, registrants):
    clinics = [Clinic(ledger, dea) for dea in dea_numbers(registrants)]
    base = {c.dea: _count(ledger, c.dea) for c in clinics}
    acked: list[tuple[str, str]] = []
    refused: list[LedgerError] = []
    lock = threading.Lock()
    barrier = threading.Barrier(WRITERS)

    def writer(w: int):
        clinic = clinics[w % registrants]
        nurse = clinic.nurse if w % 2 else clinic.nurse2
        barrier.wait()
        for i in range(COMMANDS):
            inv = f"W{w:02d}-{i:04d}"
            try:
                services.receive_stock(ledger, nurse, receipt(clinic, inv, containers=1), idempotency_key=inv)
            except LedgerError as exc:
                with lock:
                    refused.append(exc)
                continue
            with lock:
                acked.append((clinic.dea, inv))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not refused, f"{len(refused)} refused, first: {refused[0]}"
    assert len(acked) == WRITERS * COMMANDS
    with ledger.reading() as c:
        for clinic in clinics:
            rows = c.execute(sa.select(entries_t.c.seq, entries_t.c.canonical).where(entries_t.c.registrant == clinic.dea)
                             .order_by(entries_t.c.seq)).all()
            assert [r.seq for r in rows] == list(range(len(rows))), "gap or fork in seq"
            invoices = Counter(decode(r.canonical).get("invoice_number") for r in rows[base[clinic.dea]:])
            mine = sorted(inv for dea, inv in acked if dea == clinic.dea)
            assert sorted(invoices) == mine and set(invoices.values()) == {1}, "lost or doubled entry"
            ml = c.execute(sa.text("SELECT ml_left FROM vials WHERE registrant = :r"), {"r": clinic.dea}).scalars().all()
            assert sum(Decimal(str(x)) for x in ml) == Decimal("10.00") * len(mine)
    report = verify(ledger, deep=True)
    assert report.ok, report.problems
    assert report.entries == sum(base.values()) + WRITERS * COMMANDS


def _count(ledger, dea: str) -> int:
    with ledger.reading() as c:
        return c.execute(sa.select(sa.func.count()).select_from(entries_t).where(entries_t.c.registrant == dea)).scalar()
