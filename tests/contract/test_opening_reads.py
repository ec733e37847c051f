"""The reads that open an append transaction go together (issue 22): the chain head, the log's
keys and latest checkpoint (for the checkpoint signed before commit), and the group's
idempotency keys. On PostgreSQL that is one round trip, with the advisory lock, instead of three.

What must hold: each is read once per transaction; the rows kept for the checkpoint hook never
reach another transaction; a key rotated between two commands signs the next checkpoint; a
retried key still replays after its command committed. (Read again after a lock another process
held: tests/contract/test_write_slots.py; a key twice in one group:
tests/contract/test_group_commit.py.)
"""

from __future__ import annotations

import pytest

from ledger import services
from ledger.settings import get_settings
from ledger.storage import store
from ledger.storage.checkpoint_store import LATEST_CHECKPOINT_SQL, LOG_KEYS_SQL, log_keys
from ledger.storage.log import attach
from tests.conftest import DEA, Clinic
from tests.contract.test_ledger_contract import receipt

BOTH = pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                               indirect=True)


def _record_reads(monkeypatch) -> list[list[str]]:
    """Every group of statements sent together (``RawSql.batch``) and every single one."""
    sent: list[list[str]] = []
    real_batch, real_cursor = store.RawSql.batch, store.RawSql._cursor
    inside = [False]

    def batch(self, conn, queries):
        sent.append([q for q, _ in queries])
        inside[0] = True
        try:
            return real_batch(self, conn, queries)
        finally:
            inside[0] = False

    def cursor(self, conn, text, params):
        if not inside[0]:
            sent.append([text])
        return real_cursor(self, conn, text, params)

    monkeypatch.setattr(store.RawSql, "batch", batch)
    monkeypatch.setattr(store.RawSql, "_cursor", cursor)
    return sent


@BOTH
def test_the_log_keys_and_checkpoint_go_with_the_head_read_once(ledger, db_url, tmp_path, monkeypatch):
    attach(ledger, get_settings(database_url=db_url, key_dir=tmp_path / "keys"))
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    sent = _record_reads(monkeypatch)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"), idempotency_key="key-2")
    opening = next(g for g in sent if any("FROM entries WHERE registrant = :r ORDER BY seq DESC" in q for q in g))
    assert LOG_KEYS_SQL in opening and LATEST_CHECKPOINT_SQL in opening
    assert any("FROM idempotency_keys" in q for q in opening)
    flat = [q for g in sent for q in g]
    assert flat.count(LOG_KEYS_SQL) == 1 and flat.count(LATEST_CHECKPOINT_SQL) == 1, "read again by the hook"
    assert sum("FROM idempotency_keys" in q for q in flat) == 1


@BOTH
def test_the_rows_kept_for_the_hook_never_reach_another_transaction(ledger, db_url, tmp_path):
    attach(ledger, get_settings(database_url=db_url, key_dir=tmp_path / "keys"))
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    ledger.before_commit.clear()  # no hook takes them now
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))
    with ledger.engine.connect() as conn:  # the pool's most recently used connection
        assert store.PREFETCHED_INFO_KEY not in conn.info
        assert store.prefetched(conn, "log_keys") is None


@BOTH
def test_a_key_rotated_between_two_commands_signs_the_next_checkpoint(ledger, db_url, tmp_path):
    log = attach(ledger, get_settings(database_url=db_url, key_dir=tmp_path / "keys"))
    clinic = Clinic(ledger)
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-1"))
    new, _ = log.rotate(DEA, reason="scheduled")
    services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-2"))
    with ledger.reading() as conn:
        keys = log_keys(conn, DEA)
        last = store.raw(conn).one(conn, LATEST_CHECKPOINT_SQL, {"r": DEA})
    assert keys[0].verifier_key == new.verifier_key
    from ledger.integrity.checkpoints import open_checkpoint

    _, opened = open_checkpoint(last["note"], [keys[0].verifier])
    assert opened.signatures and opened.signatures[0].verified


@BOTH
def test_a_retried_key_replays_in_a_later_transaction(ledger):
    clinic = Clinic(ledger)
    cmd = receipt(clinic, "INV-1")  # the same request, sent twice
    first = services.receive_stock(ledger, clinic.nurse, cmd, idempotency_key="k-1")
    again = services.receive_stock(ledger, clinic.nurse, cmd, idempotency_key="k-1")
    assert again.get("replayed") is True and again["entries"] == first["entries"]
