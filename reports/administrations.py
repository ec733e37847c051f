"""Administration log: a row per infusion with every element of 21 CFR 1304.22(c) (date, patient
name and address, quantity, who administered) plus the prescriber, the order (mg/kg x weight),
mg and mg/kg given, the vials drawn from, drawn, given, the waste and its witness; an
administration whose drawn volume is not yet given or wasted is marked UNRECONCILED.

Patient names and addresses are not in the entries (they hold a patient id and a commitment);
they come from the encrypted patient registry when the patient key is configured
(``CSLEDGER_PATIENT_KEY`` or its key file) and are embedded with the report as an annotation
beside the figures. ``verify-report`` recomputes every figure from the entries and, with the
key, re-reads the registry and checks each name and address against the entry's commitment;
without the key, the openings embedded with the names let it check a v2 commitment offline
(``check_openings``). Names never go to a log line.
"""

from __future__ import annotations

import heapq
import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from reports import layout
from reports.base import ReportKind, register
from reports.errors import ReportError
from reports.fmt import Period, amount, dec, local, num, volume
from reports.rowfile import RowFile, dumps, merged
from reports.source import EntryStream, Snapshot, of_kinds

ZERO = Decimal("0.00")


def compute(snap: Snapshot, period: Period) -> dict[str, Any]:
    """Every administration whose event time is in the period, with its waste (recorded at any
    time up to the report's tree size) and reconciliation."""
    # Issue 22: with streamed entries (a build) the rows go to a ``RowFile`` on disk, and each
    # dose's waste is kept as its JSON text until its row is made, not as dictionaries.
    stream = isinstance(snap.entries, EntryStream)
    waste: dict[str, list[bytes]] = {}
    for e in of_kinds(snap.entries, "dose_wasted"):
        if e["kind"] == "dose_wasted":
            waste.setdefault(e["administration_id"], []).append(dumps({
                "seq": e["seq"], "ml": e["ml"], "mg": e["mg"], "method": e["method"],
                "witnessed_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "witnessed"],
            }).encode("utf-8"))
    rows: list[dict[str, Any]] | RowFile = RowFile() if stream else []
    # Which construction each patient commitment is (the entry's schema version, issue 18): an
    # offline check must know where an opening is owed, so a forger cannot withhold one.
    schemes: dict[tuple[str, str], int] = {}
    for e in of_kinds(snap.entries, "patient_registered", "patient_details_changed", "dose_administered"):
        if e["kind"] in ("patient_registered", "patient_details_changed"):
            schemes[(e["patient_id"], e["commitment"])] = int(e.get("schema_version", 1))
        if e["kind"] != "dose_administered" or not period.holds(e):
            continue
        w = [json.loads(x) for x in waste.pop(e["administration_id"], ())]
        wasted = sum((dec(x["ml"]) for x in w), ZERO)
        drawn, given = dec(e["ml_drawn"]), dec(e["ml_given"])
        weight = dec(e["weight_kg"])
        p = e["draws"][0]["product"]
        rows.append({
            "seq": e["seq"], "administration_id": e["administration_id"], "started_at": e["started_at"],
            "ended_at": e["ended_at"], "late_reason": e.get("late_reason"), "patient_id": e["patient_id"],
            "patient_commitment": e["patient_commitment"],
            "patient_commitment_openable": schemes.get((e["patient_id"], e["patient_commitment"]), 1) >= 2,
            "prescriber_dea_number": e["prescriber_dea_number"],
            # issue 19: the registered prescriber's name the entry copies (absent on older entries,
            # and then left out here, so reports made before it rebuild to the same figures)
            **({"prescriber_name": e["prescriber_name"]} if e.get("prescriber_name") else {}),
            "administered_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "performed"],
            "witnessed_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "witnessed"],
            "ndc": p["ndc"], "drug": p["name"], "weight_kg": e["weight_kg"],
            "ordered_mg_per_kg": e["ordered_mg_per_kg"], "ordered_mg": e["ordered_mg"],
            "mg_given": e["mg_given"],
            "mg_per_kg_given": amount((dec(e["mg_given"]) / weight).quantize(Decimal("0.01"), ROUND_HALF_UP))
            if weight else "0.00",
            "draws": [{"vial_id": d["vial_id"], "ml": d["ml"]} for d in e["draws"]],
            "ml_drawn": volume(drawn), "ml_given": volume(given), "ml_wasted": volume(wasted),
            "waste": w, "unreconciled_ml": volume(drawn - given - wasted),
        })
    del waste
    prepared = _preparation_rows(snap, period, schemes)
    if isinstance(rows, RowFile):
        if prepared:  # entry order, as the sort below gives
            rows = merged(rows, prepared, key=lambda r: r["seq"])
    else:
        rows += prepared
        rows.sort(key=lambda r: r["seq"])  # entry order: a patient's last row holds their latest commitment
    if not rows:
        raise ReportError(f"no dose was administered at {snap.state.registrant} from {period.start} to "
                          f"{period.end}; nothing to report", field="from/to")
    # One pass for the totals (the rows may be on disk); the same sums, in the same order.
    mg_given = ml_given = ml_wasted = ZERO
    unreconciled = 0
    for r in rows:
        mg_given += dec(r["mg_given"])
        ml_given += dec(r["ml_given"])
        ml_wasted += dec(r["ml_wasted"])
        unreconciled += dec(r["unreconciled_ml"]) != 0
    return {"rows": rows,
            "total": {"administrations": len(rows), "mg_given": amount(mg_given), "ml_given": volume(ml_given),
                      "ml_wasted": volume(ml_wasted), "unreconciled": unreconciled}}


def _preparation_rows(snap: Snapshot, period: Period, schemes: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    """Issue 19: each diluted preparation (bag or syringe) drawn in the period, with its infusion
    and its waste (recorded at any time up to the report's tree size). Figures in product mL as a
    dose's (so the columns add up with them), beside the preparation's own: mg drawn (exact), the
    final volume and the mL the pump infused; mg given + mg wasted = mg drawn."""
    infused: dict[str, dict[str, Any]] = {}
    wasted: dict[str, dict[str, Any]] = {}
    for e in of_kinds(snap.entries, "preparation_infused", "preparation_wasted"):
        if e["kind"] == "preparation_infused":
            infused[e["preparation_id"]] = e
        elif e["kind"] == "preparation_wasted":
            wasted[e["preparation_id"]] = e
    rows: list[dict[str, Any]] | RowFile = RowFile() if isinstance(snap.entries, EntryStream) else []
    for e in of_kinds(snap.entries, "preparation_made"):
        if e["kind"] != "preparation_made" or not period.holds(e):
            continue
        inf, w = infused.get(e["preparation_id"]), wasted.get(e["preparation_id"])
        drawn, weight = dec(e["ml_drawn"]), dec(e["weight_kg"])
        given_ml = dec(inf["product_ml_given"]) if inf else ZERO
        given_mg = dec(inf["mg_given"]) if inf else ZERO
        wasted_ml = dec(w["product_ml"]) if w else ZERO
        p = e["draws"][0]["product"]
        waste = [{"seq": w["seq"], "ml": w["product_ml"], "mg": w["mg"], "method": w["method"],
                  "witnessed_by": [s["printed_name"] for s in w["signatures"] if s["meaning"] == "witnessed"]}] if w else []
        rows.append({
            "seq": e["seq"], "administration_id": e["preparation_id"], "preparation_id": e["preparation_id"],
            "started_at": inf["started_at"] if inf else e["started_at"],
            "ended_at": inf["ended_at"] if inf else e["started_at"], "late_reason": e.get("late_reason"),
            "patient_id": e["patient_id"], "patient_commitment": e["patient_commitment"],
            "patient_commitment_openable": schemes.get((e["patient_id"], e["patient_commitment"]), 1) >= 2,
            "prescriber_dea_number": e["prescriber_dea_number"], "prescriber_name": e["prescriber_name"],
            "administered_by": [s["printed_name"] for s in inf["signatures"] if s["meaning"] == "performed"] if inf else [],
            "prepared_by": [s["printed_name"] for s in e["signatures"] if s["meaning"] == "performed"],
            "witnessed_by": waste[0]["witnessed_by"] if waste else [],
            "ndc": p["ndc"], "drug": p["name"], "weight_kg": e["weight_kg"],
            "ordered_mg_per_kg": e["ordered_mg_per_kg"], "ordered_mg": e["ordered_mg"],
            "mg_given": amount(given_mg),
            "mg_per_kg_given": amount((given_mg / weight).quantize(Decimal("0.01"), ROUND_HALF_UP)) if weight else "0.00",
            "draws": [{"vial_id": d["vial_id"], "ml": d["ml"]} for d in e["draws"]],
            "ml_drawn": volume(drawn), "ml_given": volume(given_ml), "ml_wasted": volume(wasted_ml),
            "waste": waste, "unreconciled_ml": volume(drawn - given_ml - wasted_ml),
            # the preparation's own figures (exact mg; the concentration is never stored)
            "container": e["container"], "diluent": e["diluent"], "diluent_ml": e["diluent_ml"],
            "final_ml": e["final_ml"], "mg_drawn": e["mg"], "beyond_use_at": e["beyond_use_at"],
            "ml_infused": inf["ml_infused"] if inf else None, "stopped_early": inf["stopped_early"] if inf else None,
            "mg_wasted": w["mg"] if w else None,
        })
    return rows


def blocks(data: dict[str, Any]) -> list[layout.Block]:
    """What the log prints, drawn only from the report data (and its patient annotation)."""
    f = data["figures"]
    tz = data["registrant"]["time_zone"]
    patients = (data.get("annotations") or {}).get("patients") or {}
    t = f["total"]
    out: list[layout.Block] = [layout.Para(
        f"{t['administrations']} administration(s): {num(t['mg_given'], 'mg')} given ({num(t['ml_given'], 'mL')}), "
        f"{num(t['ml_wasted'], 'mL')} wasted; {t['unreconciled']} UNRECONCILED (shaded: drawn but not yet given or "
        "wasted). Quantities are from the entries; patient names and addresses from the encrypted registry"
        + ("." if patients else " (NOT AVAILABLE: no patient key was configured when this report was made)."))]
    flagged = frozenset(i for i, r in enumerate(f["rows"]) if dec(r["unreconciled_ml"]) != 0)

    def row(r: dict[str, Any]) -> list[str]:
        pt = patients.get(r["patient_id"])
        who = (f"{pt['name']}\n{pt['address']}" + ("" if pt.get("matches_commitment", True) else
                                                   "\nREGISTRY DOES NOT MATCH THE ENTRY")
               if pt else f"patient {r['patient_id']}")
        when = f"{local(r['started_at'], tz)}\nto {local(r['ended_at'], tz)[11:]}"
        if r["late_reason"]:
            when += f"\nLATE ENTRY: {r['late_reason']}"
        waste = "\n".join(f"{num(w['ml'], 'mL')}" + (f" ({num(w['mg'], 'mg')})" if r.get("preparation_id") else "")
                          + f" witnessed by {', '.join(w['witnessed_by'])}" for w in r["waste"])
        if dec(r["unreconciled_ml"]) != 0:
            waste += f"\nUNRECONCILED {num(r['unreconciled_ml'], 'mL')}"
        given = f"{num(r['ml_given'], 'mL')}\n{num(r['mg_given'], 'mg')}"
        if r.get("preparation_id"):  # issue 19: a diluted preparation: what the pump infused of it
            given += (f"\n{r['container']}: {num(r['mg_drawn'], 'mg')} in {num(r['final_ml'], 'mL')} "
                      f"{r['diluent']}; " + (f"{num(r['ml_infused'], 'mL')} infused" if r["ml_infused"] else "NOT INFUSED")
                      + (" (stopped early)" if r["stopped_early"] else ""))
        return [
            when, who, given,
            "\n".join(r["administered_by"]),
            (f"{r['prescriber_name']}\n" if r.get("prescriber_name") else "") + f"DEA {r['prescriber_dea_number']}",
            f"{num(r['ordered_mg_per_kg'], 'mg/kg')} x {num(r['weight_kg'], 'kg')}\n= {num(r['ordered_mg'], 'mg')}",
            num(r["mg_per_kg_given"], "mg/kg"), "\n".join(f"{d['vial_id']}: {num(d['ml'], 'mL')}" for d in r["draws"]),
            num(r["ml_drawn"], "mL"), waste.strip() or "none", f"{r['administration_id']}\n{r['seq']}",
        ]

    # Each printed row is made when the page it falls on is laid out (issue 22: never all at once).
    rows = layout.LazyRows(f["rows"], row)
    out.append(layout.Table(
        [layout.Column("Date and time", 58), layout.Column("Patient name and address", 96),
         layout.Column("Given", 46, "R"), layout.Column("Administered by", 58), layout.Column("Prescriber", 52),
         layout.Column("Order", 80, "R"), layout.Column("mg/kg given", 40, "R"), layout.Column("Vials drawn", 66),
         layout.Column("Drawn", 40, "R"), layout.Column("Waste and witness", 88), layout.Column("Admin / entry", 44)],
        rows, title="Administrations", flagged=flagged))
    return out


def _address(details: dict[str, str]) -> str:
    """The address as the log prints it (one formatting for ``annotate`` and ``check_openings``)."""
    return f"{details['street']}, {details['city']}, {details['state']} {details['postal_code']}"


def annotate(ledger: Any, registrant: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Patient names and addresses for the rows, from the encrypted registry, when a patient key
    is configured; an empty annotation otherwise (the report says so).

    Beside the printed ``name`` and ``address`` each patient carries the committed ``details``
    and, when the latest row's commitment is v2 (or matches neither scheme, so that an offline
    check fails too), its ``opening``: with them an inspector holding no key can check the
    printed details against the entries (``check_openings``). A v1 commitment cannot be opened
    without the key: ``opening`` is None."""
    try:
        from ledger.settings import get_settings
        from ledger.storage.patient_keys import PatientKeys

        keys = PatientKeys.from_settings(get_settings())
    except Exception:  # no key configured, or the registry is not installed: print ids only
        return {}
    figures = _with_sessions(figures)  # issue 19: esketamine sessions' patients too
    import sqlalchemy as sa

    out = {}
    ids = sorted({r["patient_id"] for r in figures["rows"]})
    # Rows are in entry order: the last one of a patient holds their latest commitment.
    commitments = {r["patient_id"]: r["patient_commitment"] for r in figures["rows"]}
    with ledger.reading() as conn:
        for pid in ids:
            row = conn.execute(sa.text("SELECT sealed FROM patient_registry WHERE registrant = :r AND patient_id = :p"),
                               {"r": registrant, "p": pid}).first()
            if row is None:
                continue
            d = keys.open(registrant, pid, bytes(row[0]))
            version = keys.matched_version(registrant, pid, d, commitments[pid])
            details = d.as_dict()
            out[pid] = {"name": d.name, "address": _address(details), "matches_commitment": version is not None,
                        "details": details, "opening": None if version == 1 else keys.opening(registrant, pid, d)}
    # The registrant is part of what a commitment binds: an offline check needs it beside the
    # openings (a wrong one only makes them fail to open).
    return {"patients": out, "registrant": registrant}


def check_openings(annotations: Any, figures: Any, registrant: str | None = None) -> tuple[list[str], int, int]:
    """Check a report's patient annotation offline, with no key: for each annotated patient the
    embedded ``details`` must open (``open_commitment``) the commitment of the patient's latest
    row in ``figures["rows"]`` (the row ``annotate`` compares) with the embedded ``opening``, and
    the printed ``name`` and ``address`` must be what those details give.

    Returns ``(problems, checked, not_openable)``: ``checked`` counts the patients with an
    opening, ``not_openable`` those without one (a v1 commitment, or a report made before v2),
    whose printed details cannot be checked without the key. Problems name the patient id and
    the entry's seq, never a name or an address (they are printed to logs). ``annotations`` and
    ``figures`` come from an untrusted file: anything malformed is a problem, not an exception.

    ``registrant`` defaults to the one ``annotate`` embedded: it need not be trusted, since a
    commitment binds it (another registrant makes the openings fail, it cannot make other
    details open)."""
    from ledger.integrity.patient_commitments import (
        DETAIL_FIELDS,
        OPTIONAL_DETAIL_FIELDS,
        open_commitment,
    )

    figures = _with_sessions(figures)  # issue 19: esketamine sessions' patients too
    if annotations is None or annotations == {}:
        return [], 0, 0
    patients = annotations.get("patients") if isinstance(annotations, dict) else None
    if not isinstance(patients, dict):
        return ["the patient annotation is not an object of patients"], 0, 0
    if registrant is None:
        registrant = annotations.get("registrant")
    rows = figures.get("rows") if isinstance(figures, dict) else None
    if not isinstance(rows, list):
        return ["the report's figures have no rows to check the patient annotation against"], 0, 0
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        if isinstance(r, dict) and isinstance(r.get("patient_id"), str):
            latest[r["patient_id"]] = r
    problems: list[str] = []
    checked = not_openable = 0
    for pid in sorted(patients, key=str):
        pt, row = patients[pid], latest.get(pid)
        if row is None:
            problems.append(f"patient {str(pid)[:40]!r} is annotated but no administration in the report is theirs")
            continue
        seq = row.get("seq")
        if not isinstance(pt, dict):
            problems.append(f"patient {pid} (entry {seq}): the annotation is not an object")
            continue
        details = pt.get("details")
        # issue 21: the date of birth, when one was registered, is committed with the five fields
        well_formed = (isinstance(details, dict) and set(DETAIL_FIELDS) <= set(details)
                       and set(details) <= set(DETAIL_FIELDS) | set(OPTIONAL_DETAIL_FIELDS)
                       and all(isinstance(details[k], str) for k in details))
        if pt.get("opening") is None and row.get("patient_commitment_openable") is True:
            # The entries say this commitment can be opened: withholding its opening would let
            # an edited name pass as "not checkable".
            problems.append(f"patient {pid} (entry {seq}): the commitment can be opened (a schema 2 patient entry) "
                            "but the report embeds no opening for it")
        elif pt.get("opening") is None:
            not_openable += 1
        else:
            checked += 1
            if not isinstance(registrant, str):
                problems.append(f"patient {pid}: the annotation names no registrant, the opening of entry {seq}'s "
                                "commitment cannot be checked")
            elif not open_commitment(registrant, pid, details, pt["opening"], row.get("patient_commitment")):
                problems.append(f"patient {pid}: the embedded name and address do not open the commitment of "
                                f"entry {seq} (the details, the opening or the entry's commitment were changed)")
        if details is None and pt.get("opening") is None:
            continue  # a report made before openings were embedded: nothing to compare the print with
        if not well_formed:
            problems.append(f"patient {pid} (entry {seq}): the embedded details are not the five text fields "
                            f"{', '.join(DETAIL_FIELDS)}")
            continue
        if pt.get("name") != details["name"]:
            problems.append(f"patient {pid} (entry {seq}): the printed name is not the one in the embedded details")
        if pt.get("address") != _address(details):
            problems.append(f"patient {pid} (entry {seq}): the printed address is not the one in the embedded details")
    return problems, checked, not_openable


# --- esketamine (Spravato) sessions (issue 19, esketamine part) -----------------------------------
# A session is an administration too (21 CFR 1304.22(c)): the log prints each one in a table of
# its own (devices used whole, the flat dose, who directly observed, the REMS observation).
# ``figures["sessions"]`` is present only when the period has one, so reports made before keep
# their figures and rebuild byte for byte.


def _sessions(snap: Snapshot, period: Period) -> list[dict[str, Any]]:
    from ledger.integrity.canonical import parse_time

    schemes: dict[tuple[str, str], int] = {}
    out = []
    for e in of_kinds(snap.entries, "patient_registered", "patient_details_changed", "esketamine_session_recorded"):
        if e["kind"] in ("patient_registered", "patient_details_changed"):
            schemes[(e["patient_id"], e["commitment"])] = int(e.get("schema_version", 1))
        if e["kind"] != "esketamine_session_recorded" or not period.holds(e):
            continue
        p = e["product"]
        observed = parse_time(e["observation_ended_at"]) - max(parse_time(e["observation_started_at"]),
                                                                parse_time(e["administered_at"]))
        out.append({
            "seq": e["seq"], "session_id": e["session_id"], "administered_at": e["administered_at"],
            "observation_started_at": e["observation_started_at"], "observation_ended_at": e["observation_ended_at"],
            "observed_minutes": int(observed.total_seconds() // 60), "late_reason": e.get("late_reason"),
            "patient_id": e["patient_id"], "patient_commitment": e["patient_commitment"],
            "patient_commitment_openable": schemes.get((e["patient_id"], e["patient_commitment"]), 1) >= 2,
            "prescriber_dea_number": e["prescriber_dea_number"], "prescriber_name": e["prescriber_name"],
            "directly_observed_by": e["directly_observed_by_name"], "ndc": p["ndc"], "drug": p["name"],
            "devices": [{"vial_id": d["vial_id"], "lot": d["lot"]} for d in e["devices"]],
            "mg_per_device": e["mg_per_device"], "dose_mg": e["dose_mg"], "ml_used": e["ml_used"],
        })
    return out


def compute_with_sessions(snap: Snapshot, period: Period) -> dict[str, Any]:
    """``compute``, plus the period's esketamine sessions (a period with sessions and no
    infusion is reported too)."""
    sessions = _sessions(snap, period)
    try:
        out = compute(snap, period)
    except ReportError:
        if not sessions:
            raise
        out = {"rows": [], "total": {"administrations": 0, "mg_given": "0.00", "ml_given": "0.00",
                                     "ml_wasted": "0.00", "unreconciled": 0}}
    if sessions:
        out["sessions"] = sessions
        out["sessions_total"] = {"sessions": len(sessions),
                                 "devices": sum(len(r["devices"]) for r in sessions),
                                 "mg": amount(sum((dec(r["dose_mg"]) for r in sessions), ZERO))}
    return out


def blocks_with_sessions(data: dict[str, Any]) -> list[layout.Block]:
    """``blocks`` (when the period has infusions), then the esketamine sessions' table."""
    f = data["figures"]
    out = blocks(data) if f["rows"] else []
    sessions = f.get("sessions")
    if not sessions:
        return out
    tz = data["registrant"]["time_zone"]
    patients = (data.get("annotations") or {}).get("patients") or {}
    t = f["sessions_total"]
    out.append(layout.Para(
        f"{t['sessions']} esketamine nasal-spray session(s): {t['devices']} device(s), {num(t['mg'], 'mg')}. Each "
        "device is single use and leaves the stock whole; the patient self-administered under the direct "
        "observation of the healthcare provider named, and was monitored at least 2 hours after administration "
        "(Spravato REMS)."))
    rows = []
    for r in sessions:
        pt = patients.get(r["patient_id"])
        who = (f"{pt['name']}\n{pt['address']}" + ("" if pt.get("matches_commitment", True) else
                                                   "\nREGISTRY DOES NOT MATCH THE ENTRY")
               if pt else f"patient {r['patient_id']}")
        when = local(r["administered_at"], tz)
        if r["late_reason"]:
            when += f"\nLATE ENTRY: {r['late_reason']}"
        h, m = divmod(r["observed_minutes"], 60)
        observed = (f"{local(r['observation_started_at'], tz)[11:]} to {local(r['observation_ended_at'], tz)[11:]}"
                    f"\n{h} h {m:02d} min")
        n = len(r["devices"])
        rows.append([
            when, who, f"{num(r['dose_mg'], 'mg')}\n{n} device{'s' if n != 1 else ''} x {num(r['mg_per_device'], 'mg')}",
            f"self-administered, directly observed by {r['directly_observed_by']}",
            f"{r['prescriber_name']}\nDEA {r['prescriber_dea_number']}", observed,
            "\n".join(f"{d['vial_id']} (lot {d['lot']})" for d in r["devices"]), f"{r['ndc']}\n{r['drug']}",
            f"{r['session_id']}\n{r['seq']}",
        ])
    out.append(layout.Table(
        [layout.Column("Administered", 58), layout.Column("Patient name and address", 96),
         layout.Column("Dose", 56, "R"), layout.Column("Supervision", 70), layout.Column("Prescriber", 58),
         layout.Column("Observation (REMS)", 66), layout.Column("Devices used", 78), layout.Column("Product", 70),
         layout.Column("Session / entry", 44)],
        rows, title="Esketamine nasal-spray sessions"))
    return out


def _with_sessions(figures: Any) -> Any:
    """The figures with the sessions' patients among the rows, in entry order, for ``annotate``
    and ``check_openings`` (an untrusted file's odd shapes are left for ``check_openings`` to
    name)."""
    def seq(r: Any) -> int:
        return r["seq"] if isinstance(r, dict) and isinstance(r.get("seq"), int) else -1

    if isinstance(figures, dict) and isinstance(figures.get("sessions"), list) \
            and isinstance(figures.get("rows"), RowFile):
        # A build's rows on disk (issue 22), already in entry order: merged as they are read.
        rows, sessions = figures["rows"], sorted(figures["sessions"], key=seq)

        class _InOrder:
            def __iter__(self) -> Any:
                return heapq.merge(rows, sessions, key=seq)

        return {**figures, "rows": _InOrder()}
    if not isinstance(figures, dict) or not isinstance(figures.get("sessions"), list) \
            or not isinstance(figures.get("rows"), list):
        return figures
    merged_rows = figures["rows"] + figures["sessions"]
    return {**figures, "rows": sorted(merged_rows, key=seq)}


KIND = register(ReportKind("administrations", "Administration log (21 CFR 1304.22(c))", "landscape",
                           compute_with_sessions, blocks_with_sessions, annotate=annotate,
                           check_annotations=check_openings, audit_window="optional"))
