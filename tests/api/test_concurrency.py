"""Two clients recording at once against one registrant over HTTP, on SQLite and PostgreSQL:
every command is recorded exactly once (a retry with its Idempotency-Key adds nothing), and
the chain holds exactly the expected entries, with no gap and no fork.

A failed ``assert`` in a worker thread only raises in that thread (pytest turns it into a
warning), so each worker records its exception and the main thread re-raises it after ``join``.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ledger.integrity.canonical import ZERO_HASH, decode, leaf_hash
from ledger.services.verify import verify
from ledger.storage.store import entries_t
from tests.api.conftest import build_api
from tests.api.test_commands import receipt
from tests.conftest import BACKENDS

PER_CLIENT = 15
#: How often a client retries one command answered "busy" before the test gives up on it.
MAX_ATTEMPTS = 200


def is_retry(r) -> bool:
    """The answers a client must retry with the same Idempotency-Key: the ledger was busy or
    moved under the command (409 ``conflict`` saying "retry"), or the database was away (503)."""
    if r.status_code == 503:
        return True
    return (r.status_code == 409 and r.json()["type"].endswith("/conflict")
            and "retry" in r.json()["detail"])


def run_workers(target, args_list) -> None:
    """Run ``target(*args)`` in one thread per ``args``; re-raise the first worker's exception here."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrapped(*args):
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=a) for a in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_two_clients_at_once(ledger):
    """Deliberate breaks tried (each reverted at once), in ``Ledger.execute``
    (``ledger/storage/store.py``):

    - a stored Idempotency-Key ignored (``if prior is not None and False:``), so a retry runs the
      command again: on both backends the retry of ``nora-0`` got 409 "invoice nora-0 ... is
      already received" inside a worker; its AssertionError was re-raised here and failed the test;
    - a replay answered ``"replayed": false``: failed on both backends with "pia-0: a replay must
      not record again" raised in a worker; the previous version of this test passed (2 passed).
    """
    api = build_api(ledger)
    tokens = {u: api.token(u) for u in ("nora", "pia")}
    with ledger.reading() as c:
        before = c.execute(sa.select(sa.func.count()).select_from(entries_t)
                           .where(entries_t.c.registrant == api.dea)).scalar()
    #: invoice -> the entries of the one answer that recorded it (``replayed`` false)
    recorded: dict[str, list[dict]] = {}
    retries = {"busy": 0, "replay": 0}
    lock = threading.Lock()

    def post_until_answered(c: TestClient, body: dict, headers: dict):
        for _ in range(MAX_ATTEMPTS):
            r = c.post(api.url("/receipts"), json=body, headers=headers)
            if not is_retry(r):
                return r
            with lock:
                retries["busy"] += 1
            time.sleep(0.01)
        raise AssertionError(f"{headers['Idempotency-Key']}: still busy after {MAX_ATTEMPTS} attempts")

    def client(user: str) -> None:
        c = TestClient(api.client.app)
        for i in range(PER_CLIENT):
            invoice = f"{user}-{i}"
            body = receipt(api, invoice=invoice, containers=1)
            h = {"Authorization": f"Bearer {tokens[user]}", "Idempotency-Key": invoice}
            r = post_until_answered(c, body, h)
            assert r.status_code == 201, (invoice, r.status_code, r.text)
            first = r.json()
            assert first["replayed"] is False, (invoice, first)
            assert [e["kind"] for e in first["entries"]] == ["stock_received"], first
            with lock:
                assert invoice not in recorded, f"{invoice} answered twice as newly recorded"
                recorded[invoice] = first["entries"]
            if i % 3 == 0:  # a client retrying after a lost answer gets the first answer back
                again = post_until_answered(c, body, h)
                assert again.status_code == 201, (invoice, again.status_code, again.text)
                assert again.json()["replayed"] is True, f"{invoice}: a replay must not record again"
                assert again.json()["entries"] == first["entries"], invoice
                with lock:
                    retries["replay"] += 1

    run_workers(client, [(u,) for u in tokens])

    expected = {f"{u}-{i}" for u in tokens for i in range(PER_CLIENT)}
    assert set(recorded) == expected
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.seq, entries_t.c.kind, entries_t.c.prev_hash, entries_t.c.leaf_hash,
                                   entries_t.c.canonical)
                         .where(entries_t.c.registrant == api.dea).order_by(entries_t.c.seq)).all()
    # Exactly the expected entries: the set-up ones plus one receipt per command, nothing else.
    assert len(rows) == before + len(expected), (len(rows), before, len(expected))
    assert [r.seq for r in rows] == list(range(len(rows))), "a gap or a duplicate seq"
    new = rows[before:]
    assert all(r.kind == "stock_received" for r in new), [r.kind for r in new]
    invoices = sorted(decode(r.canonical)["invoice_number"] for r in new)
    assert invoices == sorted(expected), "an invoice recorded twice or missing"
    # Each answer names the entry that holds its invoice.
    by_seq = {r.seq: r for r in rows}
    for invoice, entries in recorded.items():
        [e] = entries
        row = by_seq[e["seq"]]
        assert row.leaf_hash == e["leaf_hash"] and decode(row.canonical)["invoice_number"] == invoice
    # Unforked: one chain, each entry linking to the one before it.
    prev = ZERO_HASH
    for r in rows:
        assert r.prev_hash == prev == decode(r.canonical)["prev"], f"seq {r.seq}: chain broken"
        assert leaf_hash(r.canonical).hex() == r.leaf_hash, f"seq {r.seq}"
        prev = r.leaf_hash
    report = verify(ledger, deep=True)
    assert report.ok, report.problems
    print(f"\n{ledger.dialect}: {len(expected)} commands, {retries['busy']} busy retries, "
          f"{retries['replay']} replays")
