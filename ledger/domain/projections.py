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

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from operator import itemgetter
from typing import Any, Protocol

from ledger.domain.quantities import norm

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "registrants": ("dea_number",),
    "products": ("registrant", "ndc_key"),
    "suppliers": ("registrant", "supplier_id"),
    "staff": ("registrant", "staff_id"),
    "staff_roles": ("registrant", "staff_id", "role"),
    "vials": ("registrant", "vial_id"),
    "invoices": ("registrant", "supplier_id", "invoice_number"),
    "alerts": ("registrant", "alert_id"),  # issue 7
    "prescribers": ("registrant", "dea_number"),  # issue 19
}


#: Entry kinds whose projection lives in ``alerts.apply_alert_entry`` (issue 7).
ALERT_KINDS = frozenset({"alert_raised", "alert_acknowledged", "alert_resolved", "alert_cleared",
                         "registration_expiry_recorded"})


class StateView(Protocol):
    def get(self, table: str, key: tuple) -> dict[str, Any] | None: ...
    def put(self, table: str, row: dict[str, Any]) -> None: ...
    def delete(self, table: str, key: tuple) -> None: ...


def key_of(table: str, row: dict[str, Any]) -> tuple:
    """The row's primary key, a tuple of its key columns' values."""
    get = _KEY_GETTERS.get(table)
    if get is None:  # (built on first use: the clinical, preparation and package keys come later)
        get = _KEY_GETTERS[table] = _key_getter(PRIMARY_KEYS[table])
    return get(row)


def _key_getter(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple]:
    # ``itemgetter`` reads the columns in C; with one column it gives the value, not a tuple.
    if len(columns) == 1:
        (column,) = columns
        return lambda row: (row[column],)
    return itemgetter(*columns)


_KEY_GETTERS: dict[str, Callable[[dict[str, Any]], tuple]] = {}


class MemoryStateView:
    """Projections held in dicts; used by ``verify --deep`` and by pure unit tests."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple, dict[str, Any]]] = {t: {} for t in PRIMARY_KEYS}

    def get(self, table: str, key: tuple) -> dict[str, Any] | None:
        row = self.tables[table].get(key)
        return dict(row) if row is not None else None

    def put(self, table: str, row: dict[str, Any]) -> None:
        # Quantities in the one form the database gives back (the 2-or-3 rule, issue 19):
        # 9.635 - 0.135 is 9.500 in Decimal arithmetic and "9.50" once stored.
        self.tables[table][key_of(table, row)] = {k: norm(v) if isinstance(v, Decimal) else v for k, v in row.items()}

    def delete(self, table: str, key: tuple) -> None:
        self.tables[table].pop(key, None)


def _dec(text: str) -> Decimal:
    return Decimal(text)


def _vial_row(registrant: str, seq: int, vial_id: str, product: dict, lot: str, expiry: str,
              state: str, ml: Decimal, *, gtin: str | None = None, serial: str | None = None,
              package_id: str | None = None) -> dict[str, Any]:
    # Every column, every time: ``verify --deep`` compares whole rows with their rebuild.
    return {
        "gtin": gtin,
        "serial": serial,
        # issue 19: a unit of a sealed package stays in it (not usable alone) until it is opened
        "package_id": package_id,
        "packaged": package_id is not None,
        "opened_at": None,
        "opened_by": None,
        "beyond_use_date": None,
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
        if entry["inventory_type"] != "initial":
            return  # a biennial inventory records what is on hand; it moves nothing
        for item in entry["items"]:
            yield item["vial_id"], item["product"]["ndc_key"], _dec(item["ml"])
    elif kind == "stock_received":
        for line in entry["lines"]:
            ml = _dec(line["product"]["container_ml"])
            for vial_id in line["vial_ids"]:
                yield vial_id, line["product"]["ndc_key"], ml
    else:
        yield from _clinical_movements(entry)


def apply(entry: dict[str, Any], view: StateView) -> None:
    """Update the projections for one entry (already validated when it was appended)."""
    reg = entry["registrant"]
    seq = entry["seq"]
    kind = entry["kind"]
    if kind in CLINICAL_KINDS:
        _apply_clinical(entry, view)
        return
    if kind in PREPARATION_KINDS:  # issue 19: preparations and infusions
        _apply_preparation(entry, view)
        return
    if kind in PACKAGE_KINDS:  # issue 19: cartons opened
        _apply_package(entry, view)
        return
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
            # issue 19: products added before were vials, one per package
            "unit_kind": p.get("unit_kind", "vial"), "unit_ndc": p.get("unit_ndc"),
            "units_per_package": p.get("units_per_package", 1),
        })
    elif kind == "supplier_added":
        a = entry["address"]
        r = entry.get("registration")  # issue 19; None on suppliers added before
        view.put("suppliers", {
            "registrant": reg, "supplier_id": entry["supplier_id"], "name": entry["name"],
            "street": a["street"], "city": a["city"], "state": a["state"],
            "postal_code": a["postal_code"], "dea_number": entry["dea_number"], "added_seq": seq,
            "registration_expires_on": r["expires_on"] if r else None,
            "schedules": ",".join(r["schedules"]) if r else "",
            "authorized_trading_partner": entry.get("authorized_trading_partner"),
        })
    elif kind == "supplier_registration_recorded":
        row = view.get("suppliers", (reg, entry["supplier_id"]))
        if row is not None:
            r = entry["registration"]
            view.put("suppliers", {**row, "registration_expires_on": r["expires_on"],
                                   "schedules": ",".join(r["schedules"]),
                                   "authorized_trading_partner": entry["authorized_trading_partner"]})
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
    elif kind in ("staff_credential_enrolled", "staff_credential_revoked"):
        return  # read from the chain only (``ledger.storage.authority``): no table to edit
    elif kind == "report_key_certified":
        return  # read from the entries by ``verify-report`` (issue 18): no table to edit
    elif kind in ("dea_notice_sent", "form_106_filed"):
        return  # issue 20: a loss report's follow-up, read from the entries (few, one per report)
    elif kind == "inventory_taken":
        if entry["inventory_type"] != "initial":
            # biennial or other: a record of what was on hand; the book is unchanged. Issue 20:
            # each product it found different from the book opens the discrepancy a count opens,
            # resolved the same way by a manager who was neither the taker nor the witness.
            _inventory_discrepancies(entry, view)
            return
        for item in entry["items"]:
            row = _vial_row(reg, seq, item["vial_id"], item["product"], item["lot"], item["expiry"],
                            "sealed" if item["sealed"] else "open", _dec(item["ml"]))
            if item.get("beyond_use_date"):
                # Issue 19: an opened vial's beyond-use clock runs from its first puncture, recorded
                # with the inventory; its first draw here must not restart it. ``opened_at`` is when
                # the ledger learned it was open (who punctured it is not known).
                row.update(opened_at=entry["occurred_at"], beyond_use_date=item["beyond_use_date"])
            view.put("vials", row)
    elif kind == "stock_received":
        view.put("invoices", {
            "registrant": reg, "supplier_id": entry["supplier"]["supplier_id"],
            "invoice_number": entry["invoice_number"], "seq": seq,
        })
        for line in entry["lines"]:
            if line.get("packages") is not None and line.get("units_per_package", 1) > 1:
                _receive_packages(reg, seq, line, view)  # issue 19: cartons, their units inside
                continue
            serials = line.get("serials") or [None] * len(line["vial_ids"])
            for vial_id, serial in zip(line["vial_ids"], serials, strict=True):
                view.put("vials", _vial_row(reg, seq, vial_id, line["product"], line["lot"],
                                            line["expiry"], "quarantined" if line.get("quarantined") else "sealed",
                                            _dec(line["product"]["container_ml"]),
                                            gtin=line.get("gtin"), serial=serial))
    elif kind == "prescriber_registered":  # issue 19: the latest registration of a DEA number
        view.put("prescribers", {
            "registrant": reg, "dea_number": entry["dea_number"], "name": entry["name"],
            "registration_state": entry["registration_state"],
            "schedules": json.dumps(list(entry["schedules"])), "expires_on": entry["expires_on"],
            "state_license_number": entry["state_license_number"],
            "state_license_state": entry["state_license_state"], "staff_id": entry.get("staff_id"),
            "registered_seq": seq,
        })
    elif kind in ALERT_KINDS:  # issue 7
        from ledger.domain.alerts import apply_alert_entry

        apply_alert_entry(entry, view)
    else:
        raise ValueError(f"no projection for entry kind {kind!r}")


def _inventory_discrepancies(entry: dict[str, Any], view: StateView) -> None:
    """Issue 20: the discrepancies a biennial or other inventory opens (entries recorded before
    issue 20 have no ``lines``)."""
    counters = json.dumps([sig["staff_id"] for sig in entry["signatures"]])
    for ln in entry.get("lines") or ():
        if ln["discrepancy_id"] is None:
            continue
        view.put("discrepancies", {
            "registrant": entry["registrant"], "discrepancy_id": ln["discrepancy_id"], "count_seq": entry["seq"],
            "ndc_key": ln["product"]["ndc_key"], "expected_ml": _dec(ln["expected_ml"]),
            "counted_ml": _dec(ln["found_ml"]), "difference_ml": _dec(ln["difference_ml"]),
            "expected_sealed_containers": ln["expected_sealed_containers"],
            "counted_sealed_containers": ln["found_sealed_containers"], "counters": counters,
            "status": "open", "category": None, "resolved_seq": None,
        })


# --- clinic operations (issue 3) ----------------------------------------------------------------
# Same one implementation: the append path and ``verify --deep`` both run ``_apply_clinical``.

PRIMARY_KEYS.update({
    "policies": ("registrant",),
    "patients": ("registrant", "patient_id"),
    "administrations": ("registrant", "administration_id"),
    "count_sessions": ("registrant", "session_id"),
    "discrepancies": ("registrant", "discrepancy_id"),
    "documents": ("registrant", "sha256"),
})

#: Vial states that are physically on hand (counted, audited as inventory).
ON_HAND = frozenset({"sealed", "open", "quarantined"})

CLINICAL_KINDS = frozenset({
    "policy_set", "patient_registered", "patient_details_changed", "dose_administered", "dose_wasted",
    "count_started", "stock_counted", "discrepancy_resolved", "loss_adjusted", "stock_destroyed",
    "stock_transferred", "stock_returned", "theft_or_loss_reported", "entry_corrected",
    "stock_quarantined", "quarantine_released", "document_stored",
    "breakage_recorded",  # issue 15
    "esketamine_session_recorded",  # issue 19, esketamine part
})


def _clinical_movements(entry: dict[str, Any]) -> Iterator[tuple[str, str, Decimal]]:
    kind = entry["kind"]
    if kind == "dose_administered":
        for d in entry["draws"]:
            yield d["vial_id"], d["product"]["ndc_key"], -_dec(d["ml"])
    elif kind == "loss_adjusted":
        for a in entry["adjustments"]:
            yield a["vial_id"], a["product"]["ndc_key"], -_dec(a["ml"])
    elif kind == "theft_or_loss_reported":
        for a in entry["lost"]:
            yield a["vial_id"], a["product"]["ndc_key"], -_dec(a["ml"])
    elif kind == "breakage_recorded":
        if not entry["recoverable"]:  # recoverable stock stays on the book until it is destroyed
            for a in entry["lines"]:
                yield a["vial_id"], a["product"]["ndc_key"], -_dec(a["ml"])
    elif kind == "stock_destroyed":
        for i in entry["items"]:
            yield i["vial_id"], i["product"]["ndc_key"], -_dec(i["ml"])
    elif kind in ("stock_transferred", "stock_returned"):
        for v in entry["vials"]:
            yield v["vial_id"], v["product"]["ndc_key"], -_dec(v["ml"])
    elif kind == "entry_corrected":
        for ln in entry["lines"]:
            ml = _dec(ln["ml"])
            yield ln["vial_id"], ln["product"]["ndc_key"], ml if ln["direction"] == "add" else -ml
    elif kind == "preparation_made":  # issue 19: a bag or syringe drawn from vials
        for d in entry["draws"]:
            yield d["vial_id"], d["product"]["ndc_key"], -_dec(d["ml"])
    elif kind == "esketamine_session_recorded":  # issue 19: each device leaves whole
        for d in entry["devices"]:
            yield d["vial_id"], entry["product"]["ndc_key"], -_dec(d["ml"])
    # dose_wasted moves nothing: the waste left the vial with the draw, and is counted once, here.
    # So do preparation_infused and preparation_wasted: the draw took the mL at preparation time.


def _vial(view: StateView, reg: str, vial_id: str) -> dict[str, Any]:
    row = view.get("vials", (reg, vial_id))
    if row is None:
        raise ValueError(f"entry names unknown vial {vial_id!r}")
    return row


def _take(view: StateView, reg: str, seq: int, vial_id: str, ml: Decimal, gone_state: str) -> None:
    """Take ``ml`` out of a vial; at zero it is ``gone_state`` (empty, lost, destroyed ...)."""
    v = _vial(view, reg, vial_id)
    v["ml_left"] = v["ml_left"] - ml
    if v["ml_left"] == 0:
        v["state"] = gone_state
    v["last_seq"] = seq
    view.put("vials", v)


def _administration_status(row: dict[str, Any]) -> str:
    return "reconciled" if row["ml_drawn"] == row["ml_given"] + row["ml_wasted"] else "unreconciled"


def _apply_clinical(entry: dict[str, Any], view: StateView) -> None:
    import json

    reg, seq, kind = entry["registrant"], entry["seq"], entry["kind"]
    actor = entry["signatures"][0]["staff_id"] if entry["signatures"] else None
    if kind == "policy_set":
        view.put("policies", {
            "registrant": reg, "beyond_use_days": entry["beyond_use_days"],
            "late_entry_limit_hours": entry["late_entry_limit_hours"],
            "variance_threshold_percent": _dec(entry["variance_threshold_percent"]),
            "count_schedule": entry["count_schedule"],
            "clinic_hours": json.dumps(entry["clinic_hours"], sort_keys=True, separators=(",", ":")),
            "dosage_unit": entry["dosage_unit"], "set_seq": seq,
            "passkey_required_for": json.dumps(entry.get("passkey_required_for") or []),
            # issue 20: absent from policies set before the tolerance existed (the default applies)
            "open_count_tolerance_ml": (None if entry.get("open_count_tolerance_ml") is None
                                        else _dec(entry["open_count_tolerance_ml"])),
        })
    elif kind == "patient_registered":
        view.put("patients", {"registrant": reg, "patient_id": entry["patient_id"],
                              "commitment": entry["commitment"], "registered_seq": seq, "last_seq": seq})
    elif kind == "patient_details_changed":
        row = view.get("patients", (reg, entry["patient_id"]))
        if row is None:
            raise ValueError(f"unknown patient {entry['patient_id']!r}")
        row.update(commitment=entry["commitment"], last_seq=seq)
        view.put("patients", row)
    elif kind == "dose_administered":
        _apply_draws(entry, view, actor)
        first = entry["draws"][0]["product"]
        row = {
            "registrant": reg, "administration_id": entry["administration_id"], "seq": seq,
            "patient_id": entry["patient_id"], "performed_by": actor, "ndc_key": first["ndc_key"],
            "strength_mg_per_ml": _dec(first["strength_mg_per_ml"]), "ml_drawn": _dec(entry["ml_drawn"]),
            "ml_given": _dec(entry["ml_given"]), "ml_wasted": Decimal("0.00"),
            "occurred_at": entry["occurred_at"], "status": "",
        }
        row["status"] = _administration_status(row)
        view.put("administrations", row)
    elif kind == "dose_wasted":
        row = view.get("administrations", (reg, entry["administration_id"]))
        if row is None:
            raise ValueError(f"unknown administration {entry['administration_id']!r}")
        row["ml_wasted"] = row["ml_wasted"] + _dec(entry["ml"])
        row["status"] = _administration_status(row)
        view.put("administrations", row)
    elif kind == "count_started":
        view.put("count_sessions", {
            "registrant": reg, "session_id": entry["session_id"], "blind": entry["blind"],
            "ndc_keys": json.dumps([p["ndc_key"] for p in entry["products"]]), "status": "open",
            "started_seq": seq, "started_by": actor, "submitted_seq": None,
        })
    elif kind == "stock_counted":
        s = view.get("count_sessions", (reg, entry["session_id"]))
        if s is None:
            raise ValueError(f"unknown count session {entry['session_id']!r}")
        s.update(status="submitted", submitted_seq=seq)
        view.put("count_sessions", s)
        counters = json.dumps([sig["staff_id"] for sig in entry["signatures"]])
        for ln in entry["lines"]:
            if ln["discrepancy_id"] is None:
                continue
            view.put("discrepancies", {
                "registrant": reg, "discrepancy_id": ln["discrepancy_id"], "count_seq": seq,
                "ndc_key": ln["product"]["ndc_key"], "expected_ml": _dec(ln["expected_ml"]),
                "counted_ml": _dec(ln["counted_ml"]), "difference_ml": _dec(ln["difference_ml"]),
                "expected_sealed_containers": ln["expected_sealed_containers"],
                "counted_sealed_containers": ln["sealed_containers"], "counters": counters,
                "status": "open", "category": None, "resolved_seq": None,
            })
    elif kind == "discrepancy_resolved":
        row = view.get("discrepancies", (reg, entry["discrepancy_id"]))
        if row is None:
            raise ValueError(f"unknown discrepancy {entry['discrepancy_id']!r}")
        row.update(status="resolved", category=entry["category"], resolved_seq=seq)
        view.put("discrepancies", row)
    elif kind in ("loss_adjusted", "theft_or_loss_reported"):
        for a in entry["adjustments" if kind == "loss_adjusted" else "lost"]:
            _take(view, reg, seq, a["vial_id"], _dec(a["ml"]), "lost")
    elif kind == "stock_destroyed":
        for i in entry["items"]:
            _take(view, reg, seq, i["vial_id"], _dec(i["ml"]), "destroyed")
    elif kind in ("stock_transferred", "stock_returned"):
        gone = "transferred" if kind == "stock_transferred" else "returned"
        for v in entry["vials"]:
            _take(view, reg, seq, v["vial_id"], _dec(v["ml"]), gone)
    elif kind == "entry_corrected":
        for ln in entry["lines"]:
            v = _vial(view, reg, ln["vial_id"])
            ml = _dec(ln["ml"])
            v["ml_left"] = v["ml_left"] + ml if ln["direction"] == "add" else v["ml_left"] - ml
            if v["ml_left"] == 0 and v["state"] in ON_HAND:
                v["state"] = "empty"
            elif v["ml_left"] > 0 and v["state"] not in ON_HAND:
                v["state"] = "open" if v["opened_at"] else "sealed"
            v["last_seq"] = seq
            view.put("vials", v)
    elif kind in ("stock_quarantined", "quarantine_released"):
        for vial_id in entry["vial_ids"]:
            v = _vial(view, reg, vial_id)
            if kind == "stock_quarantined":
                v["state"] = "quarantined"
            else:
                v["state"] = "open" if v["opened_at"] else "sealed"
            v["last_seq"] = seq
            view.put("vials", v)
    elif kind == "breakage_recorded":
        for a in entry["lines"]:
            if entry["recoverable"]:
                # Collected, still on hand, set aside like suspect product: never drawn from; it
                # leaves the book when it is destroyed (Form 41).
                v = _vial(view, reg, a["vial_id"])
                v.update(state="quarantined", last_seq=seq)
                view.put("vials", v)
            else:
                _take(view, reg, seq, a["vial_id"], _dec(a["ml"]), "lost")
    elif kind == "esketamine_session_recorded":  # issue 19: single-use devices, used whole
        # Never "opened": a device is on hand whole or gone, so a correction that puts a
        # wrongly named device back makes it sealed again.
        for d in entry["devices"]:
            _take(view, reg, seq, d["vial_id"], _dec(d["ml"]), "empty")
    elif kind == "document_stored":
        view.put("documents", {"registrant": reg, "sha256": entry["sha256"], "media_type": entry["media_type"],
                               "title": entry["title"], "size_bytes": entry["size_bytes"], "seq": seq})


# --- preparations and infusions (issue 19) ------------------------------------------------------
# One row per preparation: its figures as the entries' exact text (never a rounded column, so a
# later change of the mL scale cannot round them), its state, and what its infusion and waste
# recorded. Rebuilt and compared by ``verify --deep`` like every projection.

PRIMARY_KEYS["preparations"] = ("registrant", "preparation_id")

PREPARATION_KINDS = frozenset({"preparation_made", "preparation_infused", "preparation_wasted"})


def _apply_draws(entry: dict[str, Any], view: StateView, actor: str | None) -> None:
    """The vials a dose's or a preparation's draws take mL from: a draw that opened its vial sets
    it open with its beyond-use date; an emptied vial is empty."""
    reg, seq = entry["registrant"], entry["seq"]
    for d in entry["draws"]:
        v = _vial(view, reg, d["vial_id"])
        if d["opened_vial"]:
            v.update(state="open", opened_at=entry["occurred_at"], opened_by=actor,
                     beyond_use_date=d["beyond_use_date"])
        v["ml_left"] = v["ml_left"] - _dec(d["ml"])
        if v["ml_left"] == 0:
            v["state"] = "empty"
        v["last_seq"] = seq
        view.put("vials", v)


def _apply_preparation(entry: dict[str, Any], view: StateView) -> None:
    reg, seq, kind = entry["registrant"], entry["seq"], entry["kind"]
    actor = entry["signatures"][0]["staff_id"] if entry["signatures"] else None
    if kind == "preparation_made":
        _apply_draws(entry, view, actor)
        view.put("preparations", {
            "registrant": reg, "preparation_id": entry["preparation_id"], "seq": seq,
            "patient_id": entry["patient_id"], "prepared_by": actor,
            "ndc_key": entry["draws"][0]["product"]["ndc_key"], "container": entry["container"],
            "ml_drawn": entry["ml_drawn"], "mg": entry["mg"], "final_ml": entry["final_ml"],
            "started_at": entry["started_at"], "beyond_use_at": entry["beyond_use_at"], "status": "prepared",
            "infused_seq": None, "ml_infused": None, "mg_given": None, "product_ml_given": None,
            "infusion_started_at": None, "infusion_ended_at": None, "wasted_seq": None, "mg_wasted": None,
        })
        return
    row = view.get("preparations", (reg, entry["preparation_id"]))
    if row is None:
        raise ValueError(f"unknown preparation {entry['preparation_id']!r}")
    if kind == "preparation_infused":
        row.update(status="infused", infused_seq=seq, ml_infused=entry["ml_infused"], mg_given=entry["mg_given"],
                   product_ml_given=entry["product_ml_given"], infusion_started_at=entry["started_at"],
                   infusion_ended_at=entry["ended_at"])
    else:
        row.update(status="wasted", wasted_seq=seq, mg_wasted=entry["mg"])
    view.put("preparations", row)


# --- package hierarchy (issue 19, packages part) ------------------------------------------------
# A receipt line in packages of more than one unit puts each package in ``packages`` and each of
# its units in ``vials`` (sealed, ``packaged``: not usable alone). ``package_opened`` frees the
# units found; the missing ones stay packaged (on the book, unusable) until a manager's
# resolution of the discrepancy takes them off (``loss_adjusted``). Nothing here moves stock:
# the units came onto the book with the receipt.

PRIMARY_KEYS["packages"] = ("registrant", "package_id")

PACKAGE_KINDS = frozenset({"package_opened"})


def _receive_packages(reg: str, seq: int, line: dict[str, Any], view: StateView) -> None:
    per = line["units_per_package"]
    serials = line.get("serials") or [None] * len(line["package_ids"])
    state = "quarantined" if line.get("quarantined") else "sealed"
    ml = _dec(line["product"]["container_ml"])
    for k, (package_id, serial) in enumerate(zip(line["package_ids"], serials, strict=True)):
        view.put("packages", {
            "registrant": reg, "package_id": package_id, "ndc_key": line["product"]["ndc_key"],
            "lot": line["lot"], "expiry": line["expiry"], "gtin": line.get("gtin") if serial else None,
            "serial": serial, "units_per_package": per, "received_seq": seq, "opened_seq": None,
            "units_found": None, "discrepancy_id": None,
        })
        for vial_id in line["vial_ids"][k * per:(k + 1) * per]:
            view.put("vials", _vial_row(reg, seq, vial_id, line["product"], line["lot"], line["expiry"], state, ml,
                                        package_id=package_id))


def _apply_package(entry: dict[str, Any], view: StateView) -> None:
    reg, seq = entry["registrant"], entry["seq"]
    row = view.get("packages", (reg, entry["package_id"]))
    if row is None:
        raise ValueError(f"unknown package {entry['package_id']!r}")
    row.update(opened_seq=seq, units_found=len(entry["units_found"]), discrepancy_id=entry["discrepancy_id"])
    view.put("packages", row)
    for vial_id in entry["units_found"]:
        v = _vial(view, reg, vial_id)
        v.update(packaged=False, last_seq=seq)
        view.put("vials", v)
    if entry["discrepancy_id"] is not None:
        # The opening is the count of the package: the same discrepancy a count opens, resolved
        # the same way by a manager who was neither the opener nor the witness.
        ml = _dec(entry["product"]["container_ml"])
        expected, found = entry["units_per_package"], len(entry["units_found"])
        view.put("discrepancies", {
            "registrant": reg, "discrepancy_id": entry["discrepancy_id"], "count_seq": seq,
            "ndc_key": entry["product"]["ndc_key"], "expected_ml": expected * ml, "counted_ml": found * ml,
            "difference_ml": (found - expected) * ml, "expected_sealed_containers": expected,
            "counted_sealed_containers": found,
            "counters": json.dumps([sig["staff_id"] for sig in entry["signatures"]]),
            "status": "open", "category": None, "resolved_seq": None,
        })
