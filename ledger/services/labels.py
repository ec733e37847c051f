"""Beyond-use labels and downtime paper (issue 21): the figures a label or a paper form prints,
read from the projections (which ``verify --deep`` proves equal to the entries) and from the
entry that opened the container, in one read transaction. Nothing here writes or decides a rule:
the beyond-use date of a vial is the projection's (USP <797>: 28 days from first puncture, or
the policy then in force), a preparation's the ``beyond_use_at`` its entry recorded (start of
preparation + 4 hours, ``ledger.domain.preparations``).

Who punctured a vial or prepared a bag is read from the entry's signature (the signer who
``performed`` it), never typed. A vial an initial inventory brought on the book already open has
no such signature: the label says the puncture came before the ledger.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.policy import from_row
from ledger.domain.preparations import concentration
from ledger.domain.projections import ON_HAND
from ledger.integrity.canonical import decode
from ledger.storage.store import (
    Ledger,
    entries_t,
    movements_t,
    projection_tables,
    registrant_row,
    tree_size,
)

#: A container id as the ledger makes them: ``V12-3``, a GS1 ``(01)<GTIN>(21)<serial>``, a unit
#: of a package ``<package id>:07`` (issue 19), a preparation ``P40``. ASCII only, no slash: it
#: goes in a URL path.
CONTAINER_ID = r"^[A-Za-z0-9()._:-]{1,64}$"
_CONTAINER_ID = re.compile(CONTAINER_ID)
#: Entry kinds whose draws can puncture a sealed vial (``Draw.opened_vial``).
_OPENING_KINDS = ("dose_administered", "preparation_made")

_vials = projection_tables["vials"]
_products = projection_tables["products"]
_preparations = projection_tables["preparations"]
_policies = projection_tables["policies"]


def initials(printed_name: str) -> str:
    """"Nora Nurse" -> "NN"; "Mary-Jo O'Neil" -> "MJO" (each word and hyphenated part)."""
    parts = [p for w in printed_name.split() for p in w.split("-") if p]
    return "".join(p[0].upper() for p in parts if p[0].isalpha())


def _performer(entry: dict[str, Any]) -> dict[str, str] | None:
    sigs = entry.get("signatures") or []
    sig = next((s for s in sigs if s.get("meaning") == "performed"), sigs[0] if sigs else None)
    if sig is None:
        return None
    return {"staff_id": sig["staff_id"], "printed_name": sig["printed_name"], "initials": initials(sig["printed_name"])}


def _registrant(conn: sa.Connection, registrant: str) -> dict[str, Any]:
    reg = registrant_row(conn, registrant)
    if reg is None:
        raise NotFound(f"no registrant {registrant}", field="registrant")
    return {"dea_number": reg["dea_number"], "name": reg["name"], "time_zone": reg["time_zone"]}


def _entry(conn: sa.Connection, registrant: str, seq: int) -> dict[str, Any]:
    raw = conn.execute(sa.select(entries_t.c.canonical).where(entries_t.c.registrant == registrant,
                                                              entries_t.c.seq == seq)).scalar_one()
    return decode(bytes(raw))


def _opening(conn: sa.Connection, registrant: str, vial: dict[str, Any]) -> tuple[dict[str, Any], dict | None]:
    """The entry whose draw punctured the vial (its seq and who signed it), or the inventory that
    brought it on the book open (no signer: punctured before the ledger)."""
    seqs = conn.execute(sa.select(movements_t.c.seq).join(
        entries_t, sa.and_(entries_t.c.registrant == movements_t.c.registrant, entries_t.c.seq == movements_t.c.seq))
        .where(movements_t.c.registrant == registrant, movements_t.c.vial_id == vial["vial_id"],
               entries_t.c.kind.in_(_OPENING_KINDS), entries_t.c.occurred_at == vial["opened_at"])
        .order_by(movements_t.c.seq)).scalars().all()
    for seq in dict.fromkeys(seqs):
        e = _entry(conn, registrant, seq)
        if any(d["vial_id"] == vial["vial_id"] and d.get("opened_vial") for d in e["draws"]):
            return {"seq": seq, "how": "first puncture", "at": e["occurred_at"]}, _performer(e)
    # Not opened by a draw here: an initial inventory listed it open (issue 19), with the local
    # day of its first puncture when that was known.
    e = _entry(conn, registrant, vial["added_seq"])
    item = next((i for i in e.get("items") or () if i["vial_id"] == vial["vial_id"]), {})
    return {"seq": vial["added_seq"], "how": "open at the initial inventory", "at": vial["opened_at"],
            "day": item.get("first_punctured_on"), "estimated": item.get("first_puncture_estimated", False)}, None


def container_label(ledger: Ledger, registrant: str, container_id: str) -> dict[str, Any]:
    """What the beyond-use label of one container prints: a vial once first punctured, or a
    preparation (bag, syringe) once prepared. NotFound for an id of nothing; Conflict naming the
    container when it has no label to print (a sealed vial: its beyond-use clock has not started;
    a vial no longer on hand; a preparation already infused or wasted)."""
    if not isinstance(container_id, str) or not _CONTAINER_ID.fullmatch(container_id):
        raise InvalidInput("a container id is up to 64 letters, digits and ( ) . _ : -", field="container_id")
    with ledger.reading() as conn:
        reg = _registrant(conn, registrant)
        vial = conn.execute(sa.select(_vials, _products.c.name, _products.c.ndc).join(
            _products, sa.and_(_products.c.registrant == _vials.c.registrant, _products.c.ndc_key == _vials.c.ndc_key))
            .where(_vials.c.registrant == registrant, _vials.c.vial_id == container_id)).mappings().first()
        if vial is not None:
            return _vial_label(conn, reg, dict(vial))
        prep = conn.execute(sa.select(_preparations, _products.c.name, _products.c.ndc).join(
            _products, sa.and_(_products.c.registrant == _preparations.c.registrant,
                               _products.c.ndc_key == _preparations.c.ndc_key))
            .where(_preparations.c.registrant == registrant,
                   _preparations.c.preparation_id == container_id)).mappings().first()
        if prep is not None:
            return _preparation_label(conn, reg, dict(prep))
    raise NotFound(f"no vial or preparation {container_id!r} at {registrant}", field="container_id")


def _vial_label(conn: sa.Connection, reg: dict[str, Any], v: dict[str, Any]) -> dict[str, Any]:
    cid = v["vial_id"]
    if v["state"] == "sealed" or v["opened_at"] is None:
        raise Conflict(f"vial {cid} is sealed: its beyond-use date starts at its first puncture, so it has no "
                       "beyond-use label yet (print it when the first draw is recorded)", field="container_id")
    if v["state"] not in ON_HAND:
        raise Conflict(f"vial {cid} is {v['state']}, no longer on hand: it needs no beyond-use label",
                       field="container_id")
    opening, by = _opening(conn, reg["dea_number"], v)
    return {
        "registrant": reg, "kind": "vial", "container_id": cid,
        "product": {"name": v["name"], "ndc": v["ndc"], "strength_mg_per_ml": str(v["strength_mg_per_ml"]),
                    "container_ml": str(v["container_ml"])},
        "lot": v["lot"], "expiry": v["expiry"], "state": v["state"], "ml_left": str(v["ml_left"]),
        "opened": opening, "by": by, "beyond_use_date": v["beyond_use_date"],
    }


def _preparation_label(conn: sa.Connection, reg: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    cid = p["preparation_id"]
    if p["status"] != "prepared":
        raise Conflict(f"preparation {cid} was already {p['status']}: it needs no beyond-use label",
                       field="container_id")
    e = _entry(conn, reg["dea_number"], p["seq"])
    mg, final_ml = Decimal(p["mg"]), Decimal(p["final_ml"])
    return {
        "registrant": reg, "kind": "preparation", "container_id": cid, "short_id": cid,
        "product": {"name": p["name"], "ndc": p["ndc"], "strength_mg_per_ml": e["draws"][0]["product"]["strength_mg_per_ml"],
                    "container_ml": e["draws"][0]["product"]["container_ml"]},
        "container": p["container"], "mg": p["mg"], "final_ml": p["final_ml"], "diluent": e["diluent"],
        "diluent_ml": e["diluent_ml"], "concentration_mg_per_ml": str(concentration(mg, final_ml)),
        "patient_id": p["patient_id"], "vials": [d["vial_id"] for d in e["draws"]],
        "opened": {"seq": p["seq"], "how": "prepared", "at": p["started_at"]}, "by": _performer(e),
        "beyond_use_at": p["beyond_use_at"],
    }


def paper_log_data(ledger: Ledger, registrant: str, vial_id: str | None = None) -> dict[str, Any]:
    """What the downtime paper forms prefill: the registrant, the last entry (where paper
    begins), the beyond-use policy, and the vials on hand that may be drawn from (open or sealed,
    out of any sealed carton; open ones first, then by expiry), or the one ``vial_id`` (which must
    be on hand)."""
    with ledger.reading() as conn:
        reg = _registrant(conn, registrant)
        size = tree_size(conn, registrant)
        policy = conn.execute(sa.select(_policies).where(_policies.c.registrant == registrant)).mappings().first()
        q = (sa.select(_vials, _products.c.name, _products.c.ndc).join(
            _products, sa.and_(_products.c.registrant == _vials.c.registrant, _products.c.ndc_key == _vials.c.ndc_key))
            .where(_vials.c.registrant == registrant))
        if vial_id is not None:
            rows = conn.execute(q.where(_vials.c.vial_id == vial_id)).mappings().all()
            if not rows:
                raise NotFound(f"no vial {vial_id!r} at {registrant}", field="vial")
            if rows[0]["state"] not in ("open", "sealed") or rows[0]["packaged"]:
                where = "in a sealed carton" if rows[0]["packaged"] else rows[0]["state"]
                raise Conflict(f"vial {vial_id} is {where}: it cannot be drawn from, so it has no paper log",
                               field="vial")
        else:
            rows = conn.execute(q.where(_vials.c.state.in_(("open", "sealed")), sa.not_(_vials.c.packaged))
                                ).mappings().all()
    vials = [{"vial_id": r["vial_id"], "name": r["name"], "ndc": r["ndc"],
              "strength_mg_per_ml": str(r["strength_mg_per_ml"]), "container_ml": str(r["container_ml"]),
              "lot": r["lot"], "expiry": r["expiry"], "state": r["state"], "ml_left": str(r["ml_left"]),
              "beyond_use_date": r["beyond_use_date"], "opened_at": r["opened_at"]} for r in rows]
    vials.sort(key=lambda v: (v["state"] != "open", v["expiry"], v["vial_id"]))
    return {"registrant": reg, "tree_size": size, "last_seq": size - 1 if size else None,
            "beyond_use_days": from_row(dict(policy) if policy else None).beyond_use_days, "vials": vials}


def labelable(ledger: Ledger, registrant: str) -> dict[str, list[dict[str, Any]]]:
    """The containers that have a beyond-use label to print now: vials on hand that were
    punctured (newest puncture first) and preparations not yet infused or wasted."""
    with ledger.reading() as conn:
        vials = conn.execute(sa.select(_vials.c.vial_id, _vials.c.lot, _vials.c.ml_left, _vials.c.opened_at,
                                       _vials.c.beyond_use_date, _vials.c.state, _products.c.name).join(
            _products, sa.and_(_products.c.registrant == _vials.c.registrant, _products.c.ndc_key == _vials.c.ndc_key))
            .where(_vials.c.registrant == registrant, _vials.c.state.in_(tuple(ON_HAND)),
                   _vials.c.opened_at.is_not(None))
            .order_by(_vials.c.opened_at.desc(), _vials.c.vial_id)).mappings().all()
        preps = conn.execute(sa.select(_preparations.c.preparation_id, _preparations.c.container,
                                       _preparations.c.mg, _preparations.c.final_ml, _preparations.c.started_at,
                                       _preparations.c.beyond_use_at)
                             .where(_preparations.c.registrant == registrant, _preparations.c.status == "prepared")
                             .order_by(_preparations.c.seq.desc())).mappings().all()
    return {"vials": [dict(v) for v in vials], "preparations": [dict(p) for p in preps]}
