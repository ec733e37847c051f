"""Tampering by someone with full SQL access (triggers dropped): each is detected by ``verify``
or ``verify --deep`` and pinpointed to the entry. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from csledger.ledger import services
from csledger.ledger.store import entries_t
from csledger.ledger.verify import verify
from tests.conftest import BACKENDS, DEA, Clinic
from tests.contract.test_ledger_contract import receipt


def drop_all_triggers(ledger):
    with ledger.engine.begin() as c:
        for t in ("entries", "entry_movements", "merkle_nodes", "checkpoints"):
            if ledger.dialect == "sqlite":
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_update")
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_delete")
            else:
                c.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}")


@pytest.fixture
def tampered(ledger):
    c = Clinic(ledger)
    for i in range(4):
        services.receive_stock(ledger, c.nurse, receipt(c, f"INV-{i}"))
    assert verify(ledger, deep=True).ok
    drop_all_triggers(ledger)
    with ledger.reading() as conn:
        rows = conn.execute(sa.select(entries_t).where(entries_t.c.registrant == DEA).order_by(entries_t.c.seq)).mappings().all()
    return ledger, [dict(r) for r in rows]


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_reordered_entries_are_caught(tampered):
    ledger, rows = tampered
    a, b = rows[-3], rows[-2]
    with ledger.engine.begin() as c:
        for src, dst in ((a, b), (b, a)):
            c.execute(sa.update(entries_t).where(entries_t.c.registrant == DEA, entries_t.c.seq == dst["seq"]).values(
                canonical=src["canonical"], leaf_hash=src["leaf_hash"], prev_hash=src["prev_hash"]))
    report = verify(ledger)
    assert not report.ok and report.problems[0].seq == a["seq"] and "chain broken" in str(report.problems[0])


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_inserted_entry_is_caught(tampered):
    """An entry slipped in mid-chain (later seqs shifted up) breaks the link after it."""
    ledger, rows = tampered
    at = rows[-2]["seq"]
    with ledger.engine.begin() as c:
        for r in reversed(rows[at:]):
            c.execute(sa.update(entries_t).where(entries_t.c.registrant == DEA, entries_t.c.seq == r["seq"]).values(seq=r["seq"] + 1))
        forged = dict(rows[1], seq=at, command_id="forged")
        c.execute(sa.insert(entries_t).values(**forged))
    report = verify(ledger)
    assert not report.ok and report.problems[0].seq == at and "chain broken" in str(report.problems[0])


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_copied_kind_column_is_caught_by_deep(tampered):
    ledger, rows = tampered
    seq = rows[-1]["seq"]
    with ledger.engine.begin() as c:
        c.execute(sa.update(entries_t).where(entries_t.c.registrant == DEA, entries_t.c.seq == seq).values(kind="inventory_taken"))
    assert verify(ledger).ok
    report = verify(ledger, deep=True)
    assert not report.ok and report.problems[0].seq == seq and "'kind'" in str(report.problems[0])


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_changed_merkle_node_is_caught(tampered):
    ledger, rows = tampered
    with ledger.engine.begin() as c:
        c.exec_driver_sql("UPDATE merkle_nodes SET hash = (SELECT hash FROM merkle_nodes m2 WHERE m2.level = 0 AND m2.idx = 0 "
                          "AND m2.registrant = merkle_nodes.registrant) WHERE level = 1 AND idx = 0")
    # Node (1, 0) is inside the left perfect subtree: not read by the root, so the fast pass
    # cannot see it, but an inclusion proof would carry it; the deep pass recomputes every node.
    assert verify(ledger).ok
    report = verify(ledger, deep=True)
    assert not report.ok and "Merkle node (level 1, index 0)" in str(report.problems[0])


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_changed_root_node_is_caught_by_fast_verify(tampered):
    ledger, rows = tampered
    size = len(rows)
    top = size.bit_length() - 1  # the largest perfect subtree [0, 2^top) feeds the root directly
    with ledger.engine.begin() as c:
        c.exec_driver_sql(f"UPDATE merkle_nodes SET hash = (SELECT hash FROM merkle_nodes m2 WHERE m2.level = 0 AND m2.idx = 0 "
                          f"AND m2.registrant = merkle_nodes.registrant) WHERE level = {top} AND idx = 0")
    report = verify(ledger)
    assert not report.ok and "Merkle" in str(report.problems[0])


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_rehashed_tail_is_caught_by_the_stored_merkle_nodes(tampered):
    """Rewriting the last entry AND its leaf hash keeps the chain links consistent; only a
    signed checkpoint or a witness (the verifiable-ledger issue) can catch it. Here the stored
    Merkle nodes still hold the old leaf, so the root check catches it."""
    import hashlib

    ledger, rows = tampered
    last = rows[-1]
    forged = last["canonical"].replace(b'"containers":2', b'"containers":1')
    leaf = hashlib.sha256(b"\x00" + forged).hexdigest()
    with ledger.engine.begin() as c:
        c.execute(sa.update(entries_t).where(entries_t.c.registrant == DEA, entries_t.c.seq == last["seq"]).values(
            canonical=forged, leaf_hash=leaf))
    report = verify(ledger)
    assert not report.ok and "Merkle" in str(report.problems[0])
