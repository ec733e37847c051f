"""Crashes: writer processes killed with SIGKILL at random moments. Afterwards every
acknowledged command is present exactly once, none is partial, and ``verify --deep`` passes.
Then, as a client must, every command is retried with its Idempotency-Key (the writers never
retry, so the test does it for them): each one that committed, acknowledged or not, answers its
stored answer and records nothing, each one that did not is recorded once, and no invoice is
ever recorded twice. On SQLite and PostgreSQL. Marked ``slow``; ``.ci/run`` still runs it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from ledger.domain.errors import LedgerError
from ledger.domain.principal import AuthMethod, Principal
from ledger.integrity.canonical import decode, parse_time
from ledger.services.verify import verify
from ledger.storage.store import entries_t
from tests.conftest import BACKENDS, KETAMINE_50, Clinic

WRITER = Path(__file__).resolve().parents[2] / "bench" / "crash_writer.py"
KILLS = int(os.environ.get("CSLEDGER_CRASH_KILLS", "20"))


@pytest.mark.slow
@pytest.mark.serial  # writers killed mid-command: alone on the cores (.ci/run's second pass)
@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_sigkill_writers_lose_nothing_acknowledged(ledger, db_url):
    """Deliberate break tried (reverted at once): ``Ledger.execute`` (``ledger/storage/store.py``)
    ignoring a stored Idempotency-Key (``if prior is not None and False:``). With
    ``CSLEDGER_CRASH_KILLS=3`` both backends failed: "the retry of K00W0-000000 (recorded
    before) was refused: ... invoice K00W0-000000 from Gulf Medical Supply is already received".
    Before this test retried, its "recorded twice" check could not fire: nothing ever sent a
    command twice."""
    clinic = Clinic(ledger)
    rng = random.Random(20261125)
    acked: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(WRITER.parents[1])}

    def reader(proc):
        for line in proc.stdout:
            acked.append(line.strip())

    for k in range(KILLS):
        procs = [subprocess.Popen([sys.executable, str(WRITER), db_url, clinic.dea, f"K{k:02d}W{w}",
                                   clinic.nurse.staff_id, clinic.supplier_id, KETAMINE_50],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
                 for w in range(2)]
        threads = [threading.Thread(target=reader, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        # Kill at a random moment once the writers are mid-stream: wait for this round's first
        # acknowledgement (start-up time varies with machine load), then a random delay.
        start_count = len(acked)
        deadline = time.monotonic() + 120
        while len(acked) == start_count and time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
        for t in threads:
            t.join()

    print(f"\n{len(acked)} commands acknowledged across {KILLS} SIGKILLs")
    assert len(acked) > KILLS  # the writers made progress between kills
    # Each writer prints its invoices in order (PREFIX-000000, -000001, ...) and only after the
    # commit returned, so a killed writer had at most one command in flight: the one after its
    # last acknowledged invoice. It may have committed (killed between commit and print) or not.
    done: Counter[str] = Counter(a.rsplit("-", 1)[0] for a in acked)
    prefixes = [f"K{k:02d}W{w}" for k in range(KILLS) for w in range(2)]
    assert sorted(acked) == sorted(f"{p}-{i:06d}" for p in prefixes for i in range(done[p])), "acknowledged out of order"
    in_flight = {f"{p}-{done[p]:06d}" for p in prefixes}

    before, counts = recorded_invoices(ledger, clinic.dea)
    assert [i for i, n in counts.items() if n > 1] == [], "recorded twice by the writers"
    assert set(acked) <= set(before), f"acknowledged but missing: {sorted(set(acked) - set(before))[:5]}"
    assert set(before) - set(acked) <= in_flight, "an entry no writer was recording"
    committed_unacked = set(before) & in_flight

    # Every client retries a command it got no answer for, with the same Idempotency-Key and the
    # same request; a client may also retry one it did get an answer for (the answer was lost on
    # the way). So retry them all, through the services as the writers called them: a command
    # that committed must answer its stored answer (replayed, the same entries) and record
    # nothing; one that did not commit is recorded now, once.
    replayed = recorded_now = 0
    for inv in sorted(set(acked) | in_flight):
        entry = before.get(inv)
        occurred = parse_time(entry["occurred_at"]) if entry else datetime.now(UTC) - timedelta(minutes=1)
        try:
            res = receive_again(ledger, clinic, inv, occurred)
        except LedgerError as exc:
            pytest.fail(f"the retry of {inv} ({'recorded' if entry else 'not recorded'} before) was refused: {exc}")
        if entry is not None:
            assert res.get("replayed") is True, f"{inv} committed before the kill but its retry recorded again: {res}"
            assert [e["seq"] for e in res["entries"]] == [entry["seq"]], (inv, res, entry["seq"])
            replayed += 1
        else:
            assert not res.get("replayed"), (inv, res)  # recorded now (the services add no flag)
            recorded_now += 1

    after, counts = recorded_invoices(ledger, clinic.dea)
    assert [i for i, n in counts.items() if n > 1] == [], "a command was recorded twice"
    assert set(after) == set(acked) | in_flight, "lost or extra commands after the retries"
    with ledger.reading() as c:
        seqs = [r.seq for r in c.execute(sa.select(entries_t.c.seq).where(entries_t.c.registrant == clinic.dea)
                                         .order_by(entries_t.c.seq))]
    assert seqs == list(range(len(seqs))), "a gap or a duplicate seq"
    print(f"{len(acked)} acknowledged, {len(committed_unacked)} committed but unacknowledged, "
          f"{replayed} retries replayed, {recorded_now} in-flight commands recorded by their retry")
    report = verify(ledger, deep=True)
    assert report.ok, report.problems


def recorded_invoices(ledger, dea: str) -> tuple[dict[str, dict], Counter[str]]:
    """The receipts in the ledger: invoice -> its (first) entry's seq and occurred_at, and how
    many entries carry each invoice."""
    first: dict[str, dict] = {}
    counts: Counter[str] = Counter()
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.seq, entries_t.c.canonical).where(entries_t.c.registrant == dea)
                         .order_by(entries_t.c.seq)).all()
    for r in rows:
        e = decode(r.canonical)
        if e["kind"] == "stock_received":
            counts[e["invoice_number"]] += 1
            first.setdefault(e["invoice_number"], {"seq": r.seq, "occurred_at": e["occurred_at"]})
    return first, counts


def receive_again(ledger, clinic, invoice: str, occurred: datetime) -> dict:
    """The very command ``bench/crash_writer.py`` sends for ``invoice``, with its key."""
    nurse = Principal(clinic.dea, clinic.nurse.staff_id, "", AuthMethod.PASSWORD)
    cmd = ReceiveStock(clinic.supplier_id, invoice, occurred, (ReceivedLineInput(KETAMINE_50, 1, "LOT-CRASH", "2030-01-31"),))
    return services.receive_stock(ledger, nurse, cmd, idempotency_key=invoice)
