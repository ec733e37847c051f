"""Two clients recording at once against one registrant over HTTP, on SQLite and PostgreSQL:
every 2xx is exactly one recorded command, and the chain verifies."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ledger.services.verify import verify
from ledger.storage.store import entries_t
from tests.api.conftest import build_api
from tests.api.test_commands import receipt


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_two_clients_at_once(ledger):
    api = build_api(ledger)
    per_client = 15
    tokens = {u: api.token(u) for u in ("nora", "pia")}
    results: dict[str, list] = {u: [] for u in tokens}

    def client(user: str) -> None:
        c = TestClient(api.client.app)
        for i in range(per_client):
            body = receipt(api, invoice=f"{user}-{i}", containers=1)
            h = {"Authorization": f"Bearer {tokens[user]}", "Idempotency-Key": f"{user}-{i}"}
            r = c.post(api.url("/receipts"), json=body, headers=h)
            if i % 5 == 0:  # a client retrying after a lost answer gets the first answer
                again = c.post(api.url("/receipts"), json=body, headers=h)
                assert again.status_code == r.status_code
            results[user].append(r)

    threads = [threading.Thread(target=client, args=(u,)) for u in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [r for rs in results.values() for r in rs if r.status_code == 201]
    assert all(r.status_code in (201, 409) for rs in results.values() for r in rs)
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.seq, entries_t.c.kind).where(entries_t.c.kind == "stock_received")).all()
    assert len(rows) == len(ok) and len(ok) >= per_client  # each 2xx is one entry, retries add nothing
    assert sorted(r.json()["entries"][0]["seq"] for r in ok) == sorted(r.seq for r in rows)
    report = verify(ledger, deep=True)
    assert report.ok, report.problems
