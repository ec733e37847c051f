"""Projections: the tables that are caches of the entries.

One pure implementation, applied two ways: inside the append transaction against the database
(``store.SqlStateView``) and by ``verify --deep`` against memory (``MemoryStateView``), which
rebuilds every projection from the canonical bytes and compares. A projection row is a plain
dict; its key is the tuple of the table's primary-key columns.

``movements`` gives the stock movements (mL per vial, signed) an entry implies; the store keeps
them as copied columns beside the bytes so the audit can sum them, and ``verify --deep`` proves
them equal to what the bytes say.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Protocol

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "registrants": ("dea_number",),
    "products": ("registrant", "ndc_key"),
    "suppliers": ("registrant", "supplier_id"),
    "staff": ("registrant", "staff_id"),
    "staff_roles": ("registrant", "staff_id", "role"),
    "vials": ("registrant", "vial_id"),
    "invoices": ("registrant", "supplier_id", "invoice_number"),
    "alerts": ("registrant", "alert_id"),  # issue 7
}


#: Entry kinds whose projection lives in ``alerts.apply_alert_entry`` (issue 7).
ALERT_KINDS = frozenset({"alert_raised", "alert_acknowledged", "alert_resolved", "registration_expiry_recorded"})


class StateView(Protocol):
    def get(self, table: str, key: tuple) -> dict[str, Any] | None: ...
    def put(self, table: str, row: dict[str, Any]) -> None: ...
    def delete(self, table: str, key: tuple) -> None: ...


def key_of(table: str, row: dict[str, Any]) -> tuple:
    return tuple(row[c] for c in PRIMARY_KEYS[table])


class MemoryStateView:
    """Projections held in dicts; used by ``verify --deep`` and by pure unit tests."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple, dict[str, Any]]] = {t: {} for t in PRIMARY_KEYS}

    def get(self, table: str, key: tuple) -> dict[str, Any] | None:
        row = self.tables[table].get(key)
        return dict(row) if row is not None else None

    def put(self, table: str, row: dict[str, Any]) -> None:
        self.tables[table][key_of(table, row)] = dict(row)

    def delete(self, table: str, key: tuple) -> None:
        self.tables[table].pop(key, None)


def _dec(text: str) -> Decimal:
    return Decimal(text)


def _vial_row(registrant: str, seq: int, vial_id: str, product: dict, lot: str, expiry: str,
              state: str, ml: Decimal) -> dict[str, Any]:
    return {
        "registrant": registrant,
        "vial_id": vial_id,
        "ndc_key": product["ndc_key"],
        "lot": lot,
        "expiry": expiry,
        "state": state,
        "ml_left": ml,
        "strength_mg_per_ml": _dec(product["strength_mg_per_ml"]),
        "container_ml": _dec(product["container_ml"]),
        "added_seq": seq,
        "last_seq": seq,
    }


def movements(entry: dict[str, Any]) -> Iterator[tuple[str, str, Decimal]]:
    """(vial_id, ndc_key, signed mL) for every stock movement the entry records, in order."""
    kind = entry["kind"]
    if kind == "inventory_taken":
        for item in entry["items"]:
            yield item["vial_id"], item["product"]["ndc_key"], _dec(item["ml"])
    elif kind == "stock_received":
        for line in entry["lines"]:
            ml = _dec(line["product"]["container_ml"])
            for vial_id in line["vial_ids"]:
                yield vial_id, line["product"]["ndc_key"], ml


def apply(entry: dict[str, Any], view: StateView) -> None:
    """Update the projections for one entry (already validated when it was appended)."""
    reg = entry["registrant"]
    seq = entry["seq"]
    kind = entry["kind"]
    if kind == "registrant_registered":
        a = entry["address"]
        view.put("registrants", {
            "dea_number": entry["dea_number"], "name": entry["name"], "street": a["street"],
            "city": a["city"], "state": a["state"], "postal_code": a["postal_code"],
            "time_zone": entry["time_zone"], "log_id": entry["log_id"], "registered_seq": seq,
        })
    elif kind == "product_added":
        p = entry["product"]
        view.put("products", {
            "registrant": reg, "ndc_key": p["ndc_key"], "ndc": p["ndc"], "name": p["name"],
            "drug_code": p["drug_code"], "schedule": p["schedule"], "form": p["form"],
            "strength_mg_per_ml": _dec(p["strength_mg_per_ml"]),
            "container_ml": _dec(p["container_ml"]), "added_seq": seq,
        })
    elif kind == "supplier_added":
        a = entry["address"]
        view.put("suppliers", {
            "registrant": reg, "supplier_id": entry["supplier_id"], "name": entry["name"],
            "street": a["street"], "city": a["city"], "state": a["state"],
            "postal_code": a["postal_code"], "dea_number": entry["dea_number"], "added_seq": seq,
        })
    elif kind == "staff_enrolled":
        view.put("staff", {
            "registrant": reg, "staff_id": entry["staff_id"], "printed_name": entry["printed_name"],
            "username": entry["username"], "enrolled_seq": seq,
        })
    elif kind == "role_granted":
        view.put("staff_roles", {
            "registrant": reg, "staff_id": entry["staff_id"], "role": entry["role"],
            "granted_seq": seq,
        })
    elif kind == "role_revoked":
        view.delete("staff_roles", (reg, entry["staff_id"], entry["role"]))
    elif kind == "inventory_taken":
        for item in entry["items"]:
            view.put("vials", _vial_row(reg, seq, item["vial_id"], item["product"], item["lot"],
                                        item["expiry"], "sealed" if item["sealed"] else "open",
                                        _dec(item["ml"])))
    elif kind == "stock_received":
        view.put("invoices", {
            "registrant": reg, "supplier_id": entry["supplier"]["supplier_id"],
            "invoice_number": entry["invoice_number"], "seq": seq,
        })
        for line in entry["lines"]:
            for vial_id in line["vial_ids"]:
                view.put("vials", _vial_row(reg, seq, vial_id, line["product"], line["lot"],
                                            line["expiry"], "sealed",
                                            _dec(line["product"]["container_ml"])))
    elif kind in ALERT_KINDS:  # issue 7
        from .alerts import apply_alert_entry

        apply_alert_entry(entry, view)
    else:
        raise ValueError(f"no projection for entry kind {kind!r}")
