"""Reads of the book: who saw stock figures, and when.

Counting blind only means something if the counters did not look first. The interfaces record
each read of stock figures here (a plain append-only row, outside the chain: a read is not a
stock event); a count's submission lists the reads its counters made while the session was open.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ledger.storage.tables import StockRead

stock_reads_t = StockRead.__table__


def record_stock_read(engine: Engine, registrant: str, staff_id: str, what: str, read_at: str) -> None:
    """Record that ``staff_id`` read stock figures (``what``: the endpoint or page) at ``read_at``
    (UTC text); its own short transaction, as the read itself writes nothing."""
    with engine.begin() as conn:
        conn.execute(stock_reads_t.insert().values(registrant=registrant, staff_id=staff_id, read_at=read_at,
                                                   what=what[:64]))


def stock_reads_during(conn: Connection, registrant: str, staff_ids: Iterable[str], since: str,
                       until: str) -> list[dict[str, Any]]:
    """The reads by ``staff_ids`` at ``registrant`` from ``since`` to ``until`` (UTC text), oldest first."""
    t = stock_reads_t.c
    q = (sa.select(t.staff_id, t.read_at, t.what)
         .where(t.registrant == registrant, t.staff_id.in_(list(staff_ids)), t.read_at >= since, t.read_at <= until)
         .order_by(t.read_at, t.id))
    return [dict(r._mapping) for r in conn.execute(q)]
