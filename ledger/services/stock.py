"""Read models of stock: by vial, lot, product and registrant; administrations not yet
reconciled; open discrepancies; count sessions as their counters may see them.

Read-only queries over the projection tables (which ``verify --deep`` proves equal to their
rebuild from the entries), each in one read transaction. Quantities stay ``Decimal``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ledger.domain.errors import NotFound
from ledger.domain.policy import as_dict, from_row
from ledger.domain.projections import ON_HAND
from ledger.storage.store import Ledger, projection_tables

ZERO = Decimal("0.00")
_vials = projection_tables["vials"]


def _rows(ledger: Ledger, q) -> list[dict[str, Any]]:
    with ledger.reading() as c:
        return [dict(r) for r in c.execute(q).mappings()]


def vials(ledger: Ledger, registrant: str, *, state: str | None = None, ndc_key: str | None = None,
          lot: str | None = None) -> list[dict[str, Any]]:
    """Each vial: state (sealed, open, empty, quarantined, destroyed, lost, transferred, returned),
    mL and mg left, opened when and by whom, beyond-use date, DSCSA identity."""
    q = sa.select(_vials).where(_vials.c.registrant == registrant)
    for col, v in (("state", state), ("ndc_key", ndc_key), ("lot", lot)):
        if v is not None:
            q = q.where(_vials.c[col] == v)
    out = _rows(ledger, q.order_by(_vials.c.added_seq, _vials.c.vial_id))
    for r in out:
        r["mg_left"] = (r["ml_left"] * r["strength_mg_per_ml"]).quantize(Decimal("0.01"))
    return out


def _group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r["state"] not in ON_HAND:
            continue
        g = groups.setdefault(tuple(r[k] for k in keys), {
            **{k: r[k] for k in keys}, "sealed_containers": 0, "open_containers": 0, "quarantined_containers": 0,
            "ml": ZERO, "mg": ZERO,
        })
        if r["state"] == "quarantined":
            g["quarantined_containers"] += 1
        elif r["state"] == "open":
            g["open_containers"] += 1
        else:
            g["sealed_containers"] += 1
        g["ml"] += r["ml_left"]
        g["mg"] += r["mg_left"]
    return [groups[k] for k in sorted(groups)]


def stock_by_lot(ledger: Ledger, registrant: str) -> list[dict[str, Any]]:
    """On hand per product and lot (quarantined stock shown apart: it cannot be drawn from)."""
    return _group(vials(ledger, registrant), ("registrant", "ndc_key", "lot", "expiry"))


def stock_by_product(ledger: Ledger, registrant: str) -> list[dict[str, Any]]:
    """On hand per product (NDC)."""
    return _group(vials(ledger, registrant), ("registrant", "ndc_key"))


def stock_by_registrant(ledger: Ledger) -> list[dict[str, Any]]:
    """On hand per registrant, in mL and mg, across every product."""
    rows = _rows(ledger, sa.select(_vials))
    for r in rows:
        r["mg_left"] = (r["ml_left"] * r["strength_mg_per_ml"]).quantize(Decimal("0.01"))
    return _group(rows, ("registrant",))


def unreconciled_administrations(ledger: Ledger, registrant: str) -> list[dict[str, Any]]:
    """Infusions whose drawn volume is not yet given + wasted: the remainder still needs a
    witnessed waste (or a correction)."""
    t = projection_tables["administrations"]
    rows = _rows(ledger, sa.select(t).where(t.c.registrant == registrant, t.c.status == "unreconciled")
                 .order_by(t.c.seq))
    for r in rows:
        r["ml_unaccounted"] = r["ml_drawn"] - r["ml_given"] - r["ml_wasted"]
    return rows


def discrepancies(ledger: Ledger, registrant: str, *, status: str | None = "open") -> list[dict[str, Any]]:
    """Count differences (open ones by default), with their counters."""
    t = projection_tables["discrepancies"]
    q = sa.select(t).where(t.c.registrant == registrant)
    if status is not None:
        q = q.where(t.c.status == status)
    rows = _rows(ledger, q.order_by(t.c.count_seq, t.c.discrepancy_id))
    for r in rows:
        r["counters"] = json.loads(r["counters"])
    return rows


def count_session(ledger: Ledger, registrant: str, session_id: str) -> dict[str, Any]:
    """A count session as its counters may see it: while it is open and blind, the products to
    count and nothing about how much the book holds."""
    t = projection_tables["count_sessions"]
    rows = _rows(ledger, sa.select(t).where(t.c.registrant == registrant, t.c.session_id == session_id))
    if not rows:
        raise NotFound(f"no count session {session_id!r} at {registrant}", field="session_id")
    s = rows[0]
    out = {"session_id": s["session_id"], "blind": s["blind"], "status": s["status"],
           "ndc_keys": json.loads(s["ndc_keys"])}
    if s["status"] == "submitted" or not s["blind"]:
        out["on_hand"] = [g for g in stock_by_product(ledger, registrant) if g["ndc_key"] in out["ndc_keys"]]
    return out


def policy(ledger: Ledger, registrant: str) -> dict[str, Any]:
    """The policy in force (``is_default`` when none was ever set)."""
    t = projection_tables["policies"]
    rows = _rows(ledger, sa.select(t).where(t.c.registrant == registrant))
    return as_dict(from_row(rows[0] if rows else None))
