"""Read models for the pages, in read-only transactions. Nothing here writes or decides; the
API's read models (``api.queries``) are reused where they fit."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ledger.integrity.canonical import format_time
from ledger.storage import log as tlog
from ledger.storage.store import Ledger, projection_tables, tree_size

registrants_t = projection_tables["registrants"]
vials_t = projection_tables["vials"]
products_t = projection_tables["products"]


def locations(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(registrants_t.c.dea_number, registrants_t.c.name, registrants_t.c.city,
                                   registrants_t.c.state).order_by(registrants_t.c.name)).mappings().all()
    return [dict(r) for r in rows]


def location(ledger: Ledger, dea: str) -> dict[str, Any] | None:
    with ledger.reading() as c:
        r = c.execute(sa.select(registrants_t).where(registrants_t.c.dea_number == dea)).mappings().first()
    return dict(r) if r is not None else None


def vial_counts(ledger: Ledger, dea: str) -> dict[str, int]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(vials_t.c.state, sa.func.count()).where(vials_t.c.registrant == dea)
                         .group_by(vials_t.c.state)).all()
    return {state: n for state, n in rows}


def usable_vials(ledger: Ledger, dea: str, today: date) -> list[dict[str, Any]]:
    """Vials with liquid left, each with whether it may be drawn from and why not.

    Which states may be drawn from is the clinical services' rule; this only labels what the
    projection says (expired, past beyond-use date, quarantined) so the page can disable them.
    The service refuses them anyway.
    """
    cols = {c.name for c in vials_t.columns}
    with ledger.reading() as c:
        rows = c.execute(sa.select(vials_t, products_t.c.name, products_t.c.ndc)
                         .join(products_t, sa.and_(products_t.c.registrant == vials_t.c.registrant,
                                                   products_t.c.ndc_key == vials_t.c.ndc_key))
                         .where(vials_t.c.registrant == dea, vials_t.c.ml_left > Decimal("0.00"))
                         .order_by(vials_t.c.state.desc(), vials_t.c.expiry, vials_t.c.added_seq)).mappings().all()
    out = []
    for r in rows:
        v = dict(r)
        reasons = []
        if v["expiry"] < today.isoformat():
            reasons.append(f"expired {v['expiry']}")
        bud = v.get("beyond_use_date") if "beyond_use_date" in cols else None
        v["bud"] = bud
        if bud and bud < today.isoformat():
            reasons.append(f"past beyond-use date {bud}")
        if v["state"] in ("quarantined", "suspect", "destroyed", "empty", "emptied", "transferred", "lost"):
            reasons.append(v["state"])
        v["blocked"] = "; ".join(reasons)
        out.append(v)
    # usable first; among them opened vials first, then first-expiring (what to draw from next)
    out.sort(key=lambda v: (bool(v["blocked"]), v["state"] != "open", v["expiry"], v["added_seq"], v["vial_id"]))
    return out


def all_vials(ledger: Ledger, dea: str) -> list[dict[str, Any]]:
    """Every vial the location's book has held, emptied, destroyed and transferred ones included
    (the vial history report's pick list, issue 21), newest first, with the product's name."""
    with ledger.reading() as c:
        rows = c.execute(sa.select(vials_t.c.vial_id, vials_t.c.state, vials_t.c.lot, products_t.c.name)
                         .join(products_t, sa.and_(products_t.c.registrant == vials_t.c.registrant,
                                                   products_t.c.ndc_key == vials_t.c.ndc_key))
                         .where(vials_t.c.registrant == dea)
                         .order_by(vials_t.c.added_seq.desc(), vials_t.c.vial_id)).mappings().all()
    return [dict(r) for r in rows]


def form_key_response(ledger: Ledger, dea: str, key: str, command: str | None = None) -> str | None:
    """What the ledger answered the command a page's form key (its idempotency key) already
    recorded (the stored JSON response), else None: the same form sent twice (a double tap, a
    reload) is shown its first result. ``command``: only a key used by that command counts."""
    from ledger.storage.tables import IdempotencyRecord

    if not key or len(key) > 128:
        return None
    t = IdempotencyRecord.__table__
    q = sa.select(t.c.response).where(t.c.registrant == dea, t.c.key == key)
    if command is not None:
        q = q.where(t.c.command == command)
    with ledger.reading() as c:
        return c.execute(q).scalar()


def unreconciled_administrations(ledger: Ledger, dea: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The location's infusions not yet reconciled (the administrations projection's
    ``unreconciled`` status: drawn > given + wasted), newest first, with the product's name; chart
    numbers only, no patient name is read. The later-waste and backfill pages pick from these."""
    a = projection_tables["administrations"]
    q = (sa.select(a, products_t.c.name)
         .join(products_t, sa.and_(products_t.c.registrant == a.c.registrant, products_t.c.ndc_key == a.c.ndc_key))
         .where(a.c.registrant == dea, a.c.status == "unreconciled").order_by(a.c.seq.desc()))
    with ledger.reading() as c:
        return [dict(r) for r in c.execute(q if limit is None else q.limit(limit)).mappings().all()]


def checkpoint_status(ledger: Ledger, dea: str) -> dict[str, Any]:
    with ledger.reading() as c:
        size = tree_size(c, dea)
        cp = tlog.latest_checkpoint(c, dea)
        cosigs = tlog.cosignature_lines(c, dea, cp.tree_size) if cp else []
        policy = tlog.witness_policy(c, dea)
        keys = tlog.log_keys(c, dea)
    return {
        "tree_size": size,
        "checkpoint": cp,
        "cosignatures": cosigs,
        "policy": policy,
        "keys": keys,
        "fingerprints": tlog.fingerprint_lines(keys) if keys else [],
    }


def day_bounds(day_start: datetime, day_end: datetime) -> tuple[str, str]:
    return format_time(day_start), format_time(day_end)


def submitted_seq(ledger: Ledger, dea: str, session_id: str) -> int | None:
    """The seq of the entry that submitted a count session (None while it is open)."""
    t = projection_tables["count_sessions"]
    with ledger.reading() as c:
        return c.execute(sa.select(t.c.submitted_seq).where(t.c.registrant == dea,
                                                            t.c.session_id == session_id)).scalar()


def prescribers(ledger: Ledger, dea: str, today: date) -> list[dict[str, Any]]:
    """The registered prescribers for the infusion page's pick list (issue 21): name, DEA number,
    expiry, and why one cannot be picked (an expired registration). The service checks again."""
    t = projection_tables["prescribers"]
    with ledger.reading() as c:
        rows = c.execute(sa.select(t.c.dea_number, t.c.name, t.c.expires_on, t.c.staff_id)
                         .where(t.c.registrant == dea).order_by(t.c.name, t.c.dea_number)).mappings().all()
    out = []
    for r in rows:
        p = dict(r)
        p["blocked"] = f"registration expired {p['expires_on']}" if p["expires_on"] < today.isoformat() else ""
        out.append(p)
    return sorted(out, key=lambda p: (bool(p["blocked"]), p["name"], p["dea_number"]))


def patient_exists(ledger: Ledger, dea: str, patient_id: str) -> bool:
    """Is ``patient_id`` a patient of this registrant? (ids only: no name is read)"""
    t = projection_tables["patients"]
    with ledger.reading() as c:
        return c.execute(sa.select(t.c.patient_id).where(t.c.registrant == dea, t.c.patient_id == patient_id)
                         ).first() is not None


def cited_documents(ledger: Ledger, dea: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored documents an entry cites (``documents``, ``document_sha256``, or the document a
    ``document_stored`` entry stores), with their titles and types, in the entry's order; a
    digest with no stored document is listed as missing (the entry page says so)."""
    shas = list(obj.get("documents") or ())
    for key in ("document_sha256",) + (("sha256",) if obj.get("kind") == "document_stored" else ()):
        if isinstance(obj.get(key), str):
            shas.append(obj[key])
    shas = list(dict.fromkeys(s for s in shas if isinstance(s, str)))
    if not shas:
        return []
    t = projection_tables["documents"]
    with ledger.reading() as c:
        rows = {r.sha256: r for r in c.execute(sa.select(t.c.sha256, t.c.title, t.c.media_type)
                                              .where(t.c.registrant == dea, t.c.sha256.in_(shas)))}
    return [{"sha256": s, "title": rows[s].title if s in rows else None,
             "media_type": rows[s].media_type if s in rows else None} for s in shas]
