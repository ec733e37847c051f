"""A database that answers "read-only transaction" (SQLSTATE 25006) is one that is unavailable
for writes: a standby still in recovery, or an old primary fenced after a failover
(docs/operations.md). The client is told to retry with the same Idempotency-Key (503
``database-unavailable``), never handed a 500, and the retry on the writable database records
once."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.api.conftest import Api, entry_count
from tests.api.test_documents_http import PDF, upload

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _read_only(api: Api, on: bool) -> None:
    engine = api.ledger.engine
    with engine.connect() as c:
        c.execute(sa.text("SET TRANSACTION READ WRITE"))  # the first statement: even once read-only
        name = c.execute(sa.text("SELECT current_database()")).scalar_one()
        c.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'))
        c.commit()
    engine.dispose()  # pooled connections keep the old setting; new ones read the database's


def test_a_read_only_database_is_503_retry_and_the_retry_records_once(api: Api) -> None:
    key = api.key()
    api.headers("nora")  # log in while the database is writable (a login writes its session)
    before = entry_count(api)
    _read_only(api, True)
    try:
        r = upload(api, PDF, key=key)
        assert r.status_code == 503, r.text
        assert r.json()["type"].endswith("/database-unavailable") and r.headers["Retry-After"] == "1"
    finally:
        _read_only(api, False)
    assert entry_count(api) == before
    first = upload(api, PDF, key=key)
    assert first.status_code == 201, first.text
    again = upload(api, PDF, key=key)
    assert again.json()["replayed"] is True and entry_count(api) == before + 1
