"""Read models for the HTTP API: queries over the projections and the entries, in read-only
transactions. Routes call these; nothing here writes.
"""

from __future__ import annotations

import base64
import json
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from api.http.problems import BadCursor
from ledger.domain.quantities import fmt, fmt_volume  # mL at syringe resolution (issue 19)
from ledger.storage.store import Ledger, entries_t, movements_t, projection_tables

products_t = projection_tables["products"]
suppliers_t = projection_tables["suppliers"]
staff_t = projection_tables["staff"]
roles_t = projection_tables["staff_roles"]
vials_t = projection_tables["vials"]
#: How many entries one page may scan when a filter is applied in Python (staff).
SCAN_LIMIT = 2000


#: The largest value a database integer column holds (signed 64 bits): a cursor beyond it
#: would reach the driver and fail there (a 500; SQLite cannot even bind it) instead of here.
MAX_DB_INT = 2**63 - 1
#: The longest id a cursor may carry (a vial id's own limit on ``/vials/{vial_id}``).
MAX_CURSOR_ID = 128
NOT_OURS = "not a cursor this list gave out"


def encode_cursor(kind: str, value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, value]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str) -> Any:
    """The value inside a cursor of ``kind`` (None without a cursor). Whatever else a client
    sends (not base64, not JSON, another list's cursor, a null inside) is a 422 naming
    ``cursor``; the callers check the value's shape and range (``cursor_seq``, ``cursor_vial``)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        k, value = json.loads(raw)
        if k != kind or value is None:
            raise ValueError
        return value
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        raise BadCursor(NOT_OURS, field="cursor") from None


def _seq_in_range(value: Any) -> int:
    # bool is an int in Python: ``true`` in a cursor is not a position.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DB_INT:
        raise BadCursor(f"{NOT_OURS}: its position must be a whole number from 0 to {MAX_DB_INT}", field="cursor")
    return value


def cursor_seq(cursor: str | None, kind: str) -> int | None:
    """The position (an entry's ``seq``, an access-log row's id) a cursor of ``kind`` carries."""
    value = decode_cursor(cursor, kind)
    return None if value is None else _seq_in_range(value)


def cursor_vial(cursor: str | None) -> tuple[int, str] | None:
    """The (``added_seq``, ``vial_id``) a ``/vials`` cursor carries."""
    value = decode_cursor(cursor, "vial")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise BadCursor(NOT_OURS, field="cursor")
    seq, vial_id = _seq_in_range(value[0]), value[1]
    # Not printable covers NUL (PostgreSQL refuses it in text) and a lone surrogate (no UTF-8
    # for it): either would fail in the driver, a 500.
    if not isinstance(vial_id, str) or not 0 < len(vial_id) <= MAX_CURSOR_ID or not vial_id.isprintable():
        raise BadCursor(f"{NOT_OURS}: its vial id is not one", field="cursor")
    return seq, vial_id


def products(ledger: Ledger, registrant: str) -> list[dict[str, Any]]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(products_t).where(products_t.c.registrant == registrant)
                         .order_by(products_t.c.added_seq)).mappings().all()
    return [{**r, "strength_mg_per_ml": fmt(r["strength_mg_per_ml"]), "container_ml": fmt(r["container_ml"])}
            for r in rows]


def suppliers(ledger: Ledger, registrant: str) -> list[dict[str, Any]]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(suppliers_t).where(suppliers_t.c.registrant == registrant)
                         .order_by(suppliers_t.c.added_seq)).mappings().all()
    return [{"supplier_id": r["supplier_id"], "name": r["name"], "dea_number": r["dea_number"],
             "added_seq": r["added_seq"],
             "address": {k: r[k] for k in ("street", "city", "state", "postal_code")},
             "registration_expires_on": r["registration_expires_on"],
             "schedules": [x for x in (r["schedules"] or "").split(",") if x],
             "authorized_trading_partner": None if r["authorized_trading_partner"] is None
             else bool(r["authorized_trading_partner"])} for r in rows]


def prescribers(ledger: Ledger, registrant: str) -> list[dict[str, Any]]:
    """The registrant's prescribers, each as their latest registration, by DEA number; ``active``
    says whether it has not expired on the clinic's local day."""
    t, reg = projection_tables["prescribers"], projection_tables["registrants"]
    with ledger.reading() as c:
        tz = c.execute(sa.select(reg.c.time_zone).where(reg.c.dea_number == registrant)).scalar()
        rows = c.execute(sa.select(t).where(t.c.registrant == registrant).order_by(t.c.dea_number)).mappings().all()
    today = ledger.clock().astimezone(zoneinfo.ZoneInfo(tz)).date().isoformat() if tz else None
    return [{"dea_number": r["dea_number"], "name": r["name"], "registration_state": r["registration_state"],
             "schedules": json.loads(r["schedules"]), "expires_on": r["expires_on"],
             "state_license_number": r["state_license_number"], "state_license_state": r["state_license_state"],
             "staff_id": r["staff_id"], "registered_seq": r["registered_seq"],
             "active": today is not None and r["expires_on"] >= today} for r in rows]

def staff(ledger: Ledger, registrant: str, with_password: set[str]) -> list[dict[str, Any]]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(staff_t).where(staff_t.c.registrant == registrant)
                         .order_by(staff_t.c.enrolled_seq)).mappings().all()
        roles = defaultdict(list)
        for r in c.execute(sa.select(roles_t.c.staff_id, roles_t.c.role).where(roles_t.c.registrant == registrant)
                           .order_by(roles_t.c.role)):
            roles[r.staff_id].append(r.role)
    return [{"staff_id": r["staff_id"], "printed_name": r["printed_name"], "username": r["username"],
             "roles": roles[r["staff_id"]], "enrolled_seq": r["enrolled_seq"],
             "has_password": r["staff_id"] in with_password} for r in rows]


def _vial(r) -> dict[str, Any]:
    return {"vial_id": r["vial_id"], "ndc_key": r["ndc_key"], "lot": r["lot"], "expiry": r["expiry"],
            "state": r["state"], "ml_left": fmt_volume(r["ml_left"]), "mg_left": fmt(r["ml_left"] * r["strength_mg_per_ml"]),
            "strength_mg_per_ml": fmt(r["strength_mg_per_ml"]), "container_ml": fmt(r["container_ml"]),
            "added_seq": r["added_seq"], "last_seq": r["last_seq"],
            # issue 19: the package (carton) the unit came in, and whether it is still sealed in it
            "package_id": r.get("package_id"), "packaged": bool(r.get("packaged"))}


def vials(ledger: Ledger, registrant: str, *, state: str | None, ndc_key: str | None, lot: str | None,
          cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    after = cursor_vial(cursor)
    q = sa.select(vials_t).where(vials_t.c.registrant == registrant)
    if state is not None:
        q = q.where(vials_t.c.state == state)
    if ndc_key is not None:
        q = q.where(vials_t.c.ndc_key == ndc_key)
    if lot is not None:
        q = q.where(vials_t.c.lot == lot)
    if after is not None:
        q = q.where(sa.tuple_(vials_t.c.added_seq, vials_t.c.vial_id) > sa.tuple_(after[0], after[1]))
    q = q.order_by(vials_t.c.added_seq, vials_t.c.vial_id).limit(limit + 1)
    with ledger.reading() as c:
        rows = c.execute(q).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor("vial", [rows[-1]["added_seq"], rows[-1]["vial_id"]]) if more else None
    return [_vial(r) for r in rows], nxt


def packages(ledger: Ledger, registrant: str, *, sealed: bool | None = None) -> list[dict[str, Any]]:
    """Packages received in packages (issue 19), in order of receipt, each with its units on hand
    and its state: sealed, opened, or gone (every unit left sealed, e.g. returned whole).
    ``sealed``: only sealed ones (True) or only the others (False)."""
    pk, vials_t = projection_tables["packages"], projection_tables["vials"]
    with ledger.reading() as c:
        rows = c.execute(sa.select(pk).where(pk.c.registrant == registrant)
                         .order_by(pk.c.received_seq, pk.c.package_id)).mappings().all()
        on_hand = dict(c.execute(
            sa.select(vials_t.c.package_id, sa.func.count()).where(
                vials_t.c.registrant == registrant, vials_t.c.package_id.is_not(None),
                vials_t.c.state.in_(("sealed", "open", "quarantined")))
            .group_by(vials_t.c.package_id)).all())
    out = []
    for r in rows:
        units = on_hand.get(r["package_id"], 0)
        state = "opened" if r["opened_seq"] is not None else ("sealed" if units else "gone")
        if sealed is None or (state == "sealed") == sealed:
            out.append({**r, "state": state, "units_on_hand": units})
    return out


def vial(ledger: Ledger, registrant: str, vial_id: str) -> dict[str, Any] | None:
    with ledger.reading() as c:
        r = c.execute(sa.select(vials_t).where(vials_t.c.registrant == registrant, vials_t.c.vial_id == vial_id)
                      ).mappings().first()
    return _vial(r) if r is not None else None


def stock(ledger: Ledger, registrant: str) -> dict[str, Any]:
    """On hand per product and lot (vials with mL left), and total mg per DEA drug code."""
    with ledger.reading() as c:
        prods = {r["ndc_key"]: r for r in c.execute(sa.select(products_t).where(
            products_t.c.registrant == registrant)).mappings()}
        rows = c.execute(sa.select(vials_t).where(vials_t.c.registrant == registrant)
                         .order_by(vials_t.c.ndc_key, vials_t.c.expiry, vials_t.c.lot)).mappings().all()
    out: dict[str, dict[str, Any]] = {}
    by_code: dict[str, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for r in rows:
        if r["ml_left"] <= 0:
            continue
        p = prods.get(r["ndc_key"])
        ps = out.setdefault(r["ndc_key"], {
            "ndc_key": r["ndc_key"], "ndc": p["ndc"] if p else r["ndc_key"], "name": p["name"] if p else "",
            "containers_sealed": 0, "containers_open": 0, "ml": Decimal("0.00"), "mg": Decimal("0.00"), "lots": {}})
        mg = r["ml_left"] * r["strength_mg_per_ml"]
        ps["containers_sealed" if r["state"] == "sealed" else "containers_open"] += 1
        ps["ml"] += r["ml_left"]
        ps["mg"] += mg
        lot = ps["lots"].setdefault((r["lot"], r["expiry"]), {"lot": r["lot"], "expiry": r["expiry"], "containers": 0,
                                                              "ml": Decimal("0.00"), "mg": Decimal("0.00")})
        lot["containers"] += 1
        lot["ml"] += r["ml_left"]
        lot["mg"] += mg
        if p is not None:
            by_code[p["drug_code"]] += mg
    products_out = []
    for ps in out.values():
        lots = [{**lt, "ml": fmt_volume(lt["ml"]), "mg": fmt(lt["mg"])} for lt in ps["lots"].values()]
        products_out.append({**ps, "ml": fmt_volume(ps["ml"]), "mg": fmt(ps["mg"]), "lots": lots})
    return {"registrant": registrant, "products": products_out,
            "total_mg_by_drug_code": {k: fmt(v) for k, v in sorted(by_code.items())}}


@dataclass(frozen=True)
class EntryFilter:
    kind: str | None = None
    occurred_from: str | None = None  # UTC text, inclusive
    occurred_to: str | None = None  # UTC text, exclusive
    vial_id: str | None = None
    staff_id: str | None = None
    patient_id: str | None = None


def _mentions(obj: Any, key: str, value: str) -> bool:
    if isinstance(obj, dict):
        return any((k == key and v == value) or _mentions(v, key, value) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_mentions(v, key, value) for v in obj)
    return False


def entries(ledger: Ledger, registrant: str, f: EntryFilter, *, cursor: str | None,
            limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """A page of entries in ``seq`` order. Kind, period and vial filter in SQL; staff (a signer
    or the subject of a staff entry) and patient filter on the decoded entry, scanning at most
    ``SCAN_LIMIT`` entries per page (a page may then be short but still carry a cursor)."""
    after = cursor_seq(cursor, "entry")
    q = sa.select(entries_t).where(entries_t.c.registrant == registrant)
    if after is not None:
        q = q.where(entries_t.c.seq > after)
    if f.kind is not None:
        q = q.where(entries_t.c.kind == f.kind)
    if f.occurred_from is not None:
        q = q.where(entries_t.c.occurred_at >= f.occurred_from)
    if f.occurred_to is not None:
        q = q.where(entries_t.c.occurred_at < f.occurred_to)
    if f.vial_id is not None:
        q = q.where(sa.exists().where(movements_t.c.registrant == entries_t.c.registrant,
                                      movements_t.c.seq == entries_t.c.seq, movements_t.c.vial_id == f.vial_id))
    post = f.staff_id is not None or f.patient_id is not None
    q = q.order_by(entries_t.c.seq).limit(SCAN_LIMIT if post else limit + 1)
    with ledger.reading() as c:
        rows = c.execute(q).mappings().all()
    items: list[dict[str, Any]] = []
    last_seq = None
    more = False
    for r in rows:
        if len(items) == limit:
            more = True
            break
        obj = json.loads(bytes(r["canonical"]))
        last_seq = r["seq"]
        if f.staff_id is not None and not (
            any(s.get("staff_id") == f.staff_id for s in obj.get("signatures", ()))
            or _mentions({k: v for k, v in obj.items() if k != "signatures"}, "staff_id", f.staff_id)
        ):
            continue
        if f.patient_id is not None and not _mentions(obj, "patient_id", f.patient_id):
            continue
        items.append({"registrant": r["registrant"], "seq": r["seq"], "kind": r["kind"],
                      "occurred_at": r["occurred_at"], "recorded_at": r["recorded_at"],
                      "leaf_hash": r["leaf_hash"], "entry": obj})
    if post and not more and len(rows) == SCAN_LIMIT:
        more = True  # the scan stopped at its limit: continue from the last entry looked at
    if more and items and len(items) == limit:
        last_seq = items[-1]["seq"]
    return items, (encode_cursor("entry", last_seq) if more and last_seq is not None else None)


def entry(ledger: Ledger, registrant: str, seq: int) -> dict[str, Any] | None:
    with ledger.reading() as c:
        r = c.execute(sa.select(entries_t.c.registrant, entries_t.c.seq, entries_t.c.leaf_hash, entries_t.c.canonical)
                      .where(entries_t.c.registrant == registrant, entries_t.c.seq == seq)).mappings().first()
    if r is None:
        return None
    return {"registrant": r["registrant"], "seq": r["seq"], "leaf_hash": r["leaf_hash"],
            "canonical": bytes(r["canonical"]).decode("utf-8")}
