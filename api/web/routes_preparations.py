"""Preparations (bags and syringes) and Spravato (esketamine) sessions on the pages (issue 21).

Each form calls the same service with the same command as its API route
(``api/http/routes_preparations.py``, ``api/http/routes_esketamine.py``); no rule is decided here:
the page checks only what it can see (picked, typed, a number) so every such error shows at once,
beside its field, and the service checks everything again and names what it refuses.

- ``/ui/<DEA>/preparations``: the open preparations with their beyond-use time and mL left; the
  form to make one (``make_preparation``: patient found and picked as on the infusion page, the
  prescriber picked, the vials ticked with the mL drawn, the diluent, the container and the final
  volume). After it is recorded, its beyond-use label is linked.
- ``/ui/<DEA>/preparations/<id>/infusion``: the infusion from it (``infuse_preparation``), as the
  pump reports it.
- ``/ui/<DEA>/preparations/<id>/waste``: what is left, wasted before a witness
  (``waste_preparation``); the witness authenticates once, after the rest is valid (witness.py).
- ``/ui/<DEA>/esketamine-sessions/new``: a Spravato session (``record_esketamine_session``): the
  patient, the prescriber, the devices used, the dose and the REMS observation.

Patient names travel only in POST bodies (the search); addresses carry entry numbers and
preparation ids only.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.http.routes_stock import note_stock_read
from api.web import infusion_form as form_checks  # the checks shared by the infusion forms
from api.web import queries
from api.web.core import (
    Page,
    PageRoute,
    error_of,
    local_input,
    new_form_key,
    open_page,
    parse_local_time,
)
from api.web.forms import Errors, Form, read_form
from api.web.gs1 import short_vial_labels
from api.web.readable import clock_time, local_time, short_name
from api.web.routes_clinic import Dea, _find_patients
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain.commands import (
    InfusePreparation,
    MakePreparation,
    RecordEsketamineSession,
    WastePreparation,
)
from ledger.domain.errors import LedgerError
from ledger.domain.quantities import parse_amount, parse_volume
from ledger.integrity.canonical import parse_time
from ledger.storage.store import projection_tables

router = APIRouter(route_class=PageRoute, include_in_schema=False)

PrepId = Annotated[str, Path(pattern=r"^P[0-9]{1,18}$")]
Saved = Annotated[int | None, Query(ge=0, le=2**62)]

CONTAINERS = [("bag", "Bag"), ("syringe", "Syringe-pump syringe (at most 60 mL)")]
DILUENTS = [("0.9% sodium chloride", "0.9% sodium chloride (normal saline)"),
            ("5% dextrose", "5% dextrose (D5W)"), ("lactated Ringer's", "Lactated Ringer's")]
PREP_WASTE_METHODS = [("bag emptied into drug disposal container, witnessed",
                       "Bag emptied into the drug disposal container, witnessed"),
                      ("syringe emptied into drug disposal container, witnessed",
                       "Syringe emptied into the drug disposal container, witnessed")]
DOSES = [("56.00", "56 mg (2 devices)"), ("84.00", "84 mg (3 devices)")]

MAKE_FIELDS = ("patient_id", "patient_query", "prescriber_dea_number", "weight_kg", "ordered_mg_per_kg", "diluent",
               "diluent_ml", "container", "final_ml", "started_at", "late_reason", "form_key")
INFUSE_FIELDS = ("ml_infused", "started_at", "ended_at", "stop_reason", "late_reason", "form_key")
WASTE_FIELDS = ("method", "occurred_at", "ml_remaining", "reason", "late_reason", "form_key")
SESSION_FIELDS = ("patient_id", "patient_query", "prescriber_dea_number", "dose_mg", "administered_at",
                  "observation_started_at", "observation_ended_at", "late_reason", "form_key")

_preps_t = projection_tables["preparations"]
_products_t = projection_tables["products"]
_vials_t = projection_tables["vials"]


# --- reads -----------------------------------------------------------------------------------------


def open_preparations(page: Page) -> list[dict[str, Any]]:
    """The preparations not yet wasted that still hold drug (newest first): id, container,
    product, patient's chart number, beyond-use time, mL left (final mL less mL infused), and
    what may be done with each now."""
    ledger = page.request.app.state.ledger
    with ledger.reading() as c:
        rows = c.execute(sa.select(_preps_t, _products_t.c.name).join(
            _products_t, sa.and_(_products_t.c.registrant == _preps_t.c.registrant,
                                 _products_t.c.ndc_key == _preps_t.c.ndc_key))
            .where(_preps_t.c.registrant == page.dea, _preps_t.c.status != "wasted")
            .order_by(_preps_t.c.seq.desc())).mappings().all()
    now = page.local_now()
    out = []
    for r in rows:
        p = dict(r)
        infused = p["status"] == "infused"
        if infused and Decimal(p["mg_given"]) == Decimal(p["mg"]):
            continue  # infused whole: nothing left to infuse or waste
        final = Decimal(p["final_ml"])
        p["ml_left"] = final - Decimal(p["ml_infused"]) if infused else final
        p["past"] = not infused and parse_time(p["beyond_use_at"]) < now
        p["until"] = clock_time(p["beyond_use_at"], page.tz, now.date())
        p["prepared"] = clock_time(p["started_at"], page.tz, now.date())
        p["concentration"] = (Decimal(p["mg"]) / final).quantize(Decimal("0.01"))
        p["container_words"] = "Syringe" if p["container"] == "syringe" else "Bag"
        out.append(p)
    return out


def _preparation(page: Page, prep_id: str) -> dict[str, Any] | None:
    return next((p for p in open_preparations(page) if p["preparation_id"] == prep_id), None)


def _devices(page: Page) -> list[dict[str, Any]]:
    """The nasal-spray devices that may be picked for a session: sealed, out of their kit (a
    kit is opened before a witness first), of a device product. The service checks again
    (quarantine, expiry, on hand, one product)."""
    from ledger.domain.esketamine import DEVICE_UNIT_KIND

    ledger = page.request.app.state.ledger
    with ledger.reading() as c:
        rows = c.execute(sa.select(_vials_t.c.vial_id, _vials_t.c.lot, _vials_t.c.expiry, _vials_t.c.state,
                                   _vials_t.c.packaged, _products_t.c.name).join(
            _products_t, sa.and_(_products_t.c.registrant == _vials_t.c.registrant,
                                 _products_t.c.ndc_key == _vials_t.c.ndc_key))
            .where(_vials_t.c.registrant == page.dea, _products_t.c.unit_kind == DEVICE_UNIT_KIND,
                   _vials_t.c.state.in_(("sealed", "quarantined")))
            .order_by(_vials_t.c.expiry, _vials_t.c.added_seq, _vials_t.c.vial_id)).mappings().all()
    today = page.local_now().date().isoformat()
    out = []
    for r in rows:
        d = dict(r)
        d["blocked"] = ("in quarantine" if d["state"] == "quarantined" else
                        "still in its kit: open the kit first" if d["packaged"] else
                        f"expired {d['expiry']}" if d["expiry"] < today else "")
        out.append(d)
    out.sort(key=lambda d: bool(d["blocked"]))
    return out


def recorded_with(page: Page, form_key: str, command: str) -> int | None:
    """The first entry a form with this key already recorded by ``command`` (a double submit,
    or the browser sending the form again), else None. The page then shows that confirmation
    rather than checking the form again against a book that has since moved (a device already
    used, a vial emptied by this very form), where the service would answer the stored result."""
    text = queries.form_key_response(page.request.app.state.ledger, page.dea, form_key, command)
    try:
        return int(json.loads(text)["entries"][0]["seq"]) if text else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def again(page: Page, form_key: str, command: str, path: str) -> Response | None:
    """The confirmation of what this form key already recorded (see ``recorded_with``), or None."""
    seq = recorded_with(page, form_key, command)
    return RedirectResponse(f"{location_path(page.dea)}{path}?saved={seq}", status_code=303) if seq is not None else None


def _entry(page: Page, seq: int, kinds: tuple[str, ...]) -> dict[str, Any] | None:
    """Entry ``seq`` if it is one of ``kinds`` and signed by the person signed in (the
    confirmation is theirs only), else None."""
    e = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    obj = json.loads(e["canonical"]) if e else {}
    if obj.get("kind") not in kinds or not any(
            s.get("staff_id") == page.principal.staff_id for s in obj.get("signatures", [])):
        return None
    return obj


def _patient_name(page: Page, patient_id: str) -> str | None:
    found = _find_patients(page, Errors(), patient_id=patient_id, log_action="read")
    return short_name(found["patients"][0]["name"]) if found and found["patients"] else None


def _signer(obj: dict[str, Any], meaning: str) -> str:
    return next((s.get("printed_name", "") for s in obj.get("signatures", []) if s.get("meaning") == meaning), "")


def confirmation(page: Page, seq: int) -> dict[str, Any] | None:
    """What entry ``seq`` recorded, in the clinic's words and local time (None if it is not a
    preparation or session entry this person signed)."""
    obj = _entry(page, seq, ("preparation_made", "preparation_infused", "preparation_wasted",
                             "esketamine_session_recorded"))
    if obj is None:
        return None
    today = page.local_now().date()
    kind = obj["kind"]
    out: dict[str, Any] = {"seq": seq, "kind": kind, "late": obj.get("late_reason")}
    if kind == "preparation_made":
        who = _patient_name(page, obj["patient_id"]) or f"chart {obj['patient_id']}"
        labels = short_vial_labels([{"vial_id": d["vial_id"]} for d in obj["draws"]])
        draws = ", ".join(f"{d['ml']} mL from {labels[d['vial_id']]}" for d in obj["draws"])
        product = obj["draws"][0]["product"]["name"]
        conc = (Decimal(obj["mg"]) / Decimal(obj["final_ml"])).quantize(Decimal("0.01"))
        words = "Syringe" if obj["container"] == "syringe" else "Bag"
        out.update(headline=f"{words} {obj['preparation_id']} prepared for {who}: {obj['mg']} mg of {product} in "
                            f"{obj['final_ml']} mL ({conc} mg/mL), by {_signer(obj, 'performed')} at "
                            f"{clock_time(obj['started_at'], page.tz, today)}",
                   detail=f"Drawn: {draws}; {obj['diluent_ml']} mL of {obj['diluent']}. Ordered "
                          f"{obj['ordered_mg']} mg ({obj['ordered_mg_per_kg']} mg/kg x {obj['weight_kg']} kg), "
                          f"prescriber {obj['prescriber_name']}.",
                   use_by=f"Start the infusion by {clock_time(obj['beyond_use_at'], page.tz, today)} "
                          f"({local_time(obj['beyond_use_at'], page.tz)}): 4 hours from the start of preparation.",
                   label=obj["preparation_id"], preparation_id=obj["preparation_id"])
    elif kind == "preparation_infused":
        left = Decimal(obj["mg"]) - Decimal(obj["mg_given"])
        out.update(headline=f"Infusion from {obj['preparation_id']}: {obj['ml_infused']} of {obj['final_ml']} mL "
                            f"infused, {obj['mg_given']} mg given, from "
                            f"{clock_time(obj['started_at'], page.tz, today)} to "
                            f"{clock_time(obj['ended_at'], page.tz, today)}",
                   detail=(f"Stopped early: {obj['stop_reason']}." if obj.get("stop_reason") else ""),
                   unreconciled=(f"{left} mg is left in {obj['preparation_id']}: it stays unreconciled until its "
                                 "waste is recorded with a witness." if left > 0 else ""),
                   preparation_id=obj["preparation_id"] if left > 0 else None)
    elif kind == "preparation_wasted":
        out.update(headline=f"Waste of {obj['preparation_id']} recorded: {obj['mg']} mg wasted "
                            f"({obj['product_ml']} mL of product), witnessed by {_signer(obj, 'witnessed')} at "
                            f"{clock_time(obj['occurred_at'], page.tz, today)}",
                   detail=f"How: {obj['method']}." + (f" Why: {obj['reason']}." if obj.get("reason") else ""))
    else:
        who = _patient_name(page, obj["patient_id"]) or f"chart {obj['patient_id']}"
        labels = short_vial_labels([{"vial_id": d["vial_id"]} for d in obj["devices"]])
        minutes = int((parse_time(obj["observation_ended_at"]) - parse_time(obj["observation_started_at"]))
                      .total_seconds() // 60)
        out.update(headline=f"Spravato session for {who}: {obj['dose_mg']} mg ({len(obj['devices'])} devices), "
                            f"observed by {_signer(obj, 'performed')} from "
                            f"{clock_time(obj['observation_started_at'], page.tz, today)} to "
                            f"{clock_time(obj['observation_ended_at'], page.tz, today)} ({minutes} minutes)",
                   detail="Devices: " + ", ".join(labels[d["vial_id"]] for d in obj["devices"])
                          + f"; self-administered at {clock_time(obj['administered_at'], page.tz, today)}; "
                          f"prescriber {obj.get('prescriber_name', obj.get('prescriber_dea_number', ''))}.")
    return out


# --- the preparations page ----------------------------------------------------------------------


def _fresh_make_values(page: Page) -> dict[str, Any]:
    return {"form_key": new_form_key(), "started_at": local_input(page.local_now(), page.tz),
            "diluent": DILUENTS[0][0], "container": "bag"}


def _preparations_page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
                       found: dict | None = None, result: dict | None = None) -> Response:
    from ledger.services.patients import RECENT_DAYS

    ledger = page.request.app.state.ledger
    today = page.local_now().date()
    values = values or _fresh_make_values(page)
    can_make = page.may("preparations")
    vials = queries.usable_vials(ledger, page.dea, today) if can_make else []
    if found is None and values.get("patient_id") and can_make:
        found = _find_patients(page, Errors(), patient_id=values["patient_id"].strip(), log_action="read")
    known = [*MAKE_FIELDS, "draws"] + [f"vials-{i}-{k}" for i in range(len(vials)) for k in ("ml", "use")]
    return page.render("preparations_list.html", status=status, active="tasks", values=values,
                       errors=errors or Errors(), preparations=open_preparations(page), vials=vials, found=found,
                       prescribers=queries.prescribers(ledger, page.dea, today) if can_make else [],
                       containers=CONTAINERS, diluents=DILUENTS, known=known, result=result, can_make=can_make,
                       can_infuse=page.may("infuse_preparation"), can_label=page.may("labels"),
                       recent_days=RECENT_DAYS)


@router.get("/ui/{dea}/preparations", name="web_preparations")
async def preparations(request: Request, dea: Dea, saved: Saved = None) -> Response:
    """The open preparations, and the form to make one. Opened by everyone who may make, infuse or
    waste one (the "waste_preparation" roles are that union: a manager may waste a bag, so sees
    the list); the form to make one is shown to those who may make one."""
    page = await open_page(request, dea, "waste_preparation")
    if page.may("preparations"):
        # the form lists each usable vial with its mL left: a read of the book (blind counts)
        await run_in_threadpool(note_stock_read, request, request.app.state.ledger, page.principal,
                                "preparation form")
    result = await run_in_threadpool(confirmation, page, saved) if saved is not None else None
    return await run_in_threadpool(_preparations_page, page, result=result)


def _make(page: Page, form: Form) -> Response:
    values: dict[str, Any] = {k: form.get(k, "") for k in MAKE_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    vials = form_checks.usable_vial_rows(page, form, values)
    errors = Errors()
    if form.get("action") == "search":  # find the patient: the query only ever in this POST body
        found = _find_patients(page, errors, query=values["patient_query"].strip())
        return _preparations_page(page, values=values, errors=errors, found=found, status=422 if errors else 200)
    if (done := again(page, values["form_key"], "make_preparation", "preparations")) is not None:
        return done
    form_checks.check_patient_and_prescriber(page, values, errors)
    form_checks.number(values, "weight_kg", parse_amount, "enter the patient's weight in kg", errors)
    form_checks.number(values, "ordered_mg_per_kg", parse_amount, "enter the ordered dose in mg/kg", errors)
    draws, used, _, _ = form_checks.check_draws(form, values, vials, errors)
    if values["diluent"] not in dict(DILUENTS):  # the page offers these; no other text is recorded
        errors.add("diluent", "choose the diluent")
    form_checks.number(values, "diluent_ml", parse_volume, "enter the mL of diluent (0 if none)", errors, allow_zero=True)
    if values["container"] not in dict(CONTAINERS):
        errors.add("container", "choose a bag or a syringe")
    form_checks.number(values, "final_ml", parse_volume, "enter the final volume in mL", errors)
    started = parse_local_time(values["started_at"], page.tz, field="started_at", errors=errors)
    if errors:
        return _preparations_page(page, values=values, errors=errors, status=422)
    cmd = MakePreparation(values["patient_id"].strip(), values["prescriber_dea_number"].strip(),
                          values["weight_kg"].strip(), values["ordered_mg_per_kg"].strip(), tuple(draws),
                          values["diluent"].strip(), values["diluent_ml"].strip(), values["container"],
                          values["final_ml"].strip(), started, values["late_reason"].strip() or None)
    try:
        res = services.make_preparation(page.request.app.state.ledger, page.principal, cmd,
                                        idempotency_key=values["form_key"])
    except LedgerError as exc:
        name, msg = error_of(exc)
        errors.add(form_checks.draw_error_field(name, used), msg)
        return _preparations_page(page, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}preparations?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/preparations", name="web_preparations_post")
async def make_preparation(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "preparations")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_make, page, form)


# --- infusion from a preparation -------------------------------------------------------------------


def _infusion_page(page: Page, prep: dict[str, Any], *, values: dict | None = None, errors: Errors | None = None,
                   status: int = 200) -> Response:
    if values is None:
        end = page.local_now()
        # suggested start: 40 minutes ago, never before the preparation (the service refuses that);
        # mL infused is left empty: it is the pump's figure, typed from the pump
        start = max(end.astimezone(UTC) - timedelta(minutes=40), parse_time(prep["started_at"]))
        values = {"form_key": new_form_key(), "ended_at": local_input(end, page.tz),
                  "started_at": local_input(start, page.tz)}
    return page.render("preparations_infuse.html", status=status, active="tasks", prep=prep, values=values,
                       errors=errors or Errors(), known=list(INFUSE_FIELDS))


def _open_prep(page: Page, prep_id: str, status: str | None = None) -> dict[str, Any]:
    from ledger.domain.errors import Conflict, NotFound

    prep = _preparation(page, prep_id)
    if prep is None:
        raise NotFound(f"no open preparation {prep_id} here (it may be wasted already)", field="preparation_id")
    if status is not None and prep["status"] != status:
        raise Conflict(f"preparation {prep_id} was already {prep['status']}; waste what is left", field="preparation_id")
    return prep


@router.get("/ui/{dea}/preparations/{preparation_id}/infusion", name="web_preparation_infusion")
async def infusion_form(request: Request, dea: Dea, preparation_id: PrepId) -> Response:
    """The infusion from one preparation, as the pump reports it."""
    page = await open_page(request, dea, "infuse_preparation")
    prep = await run_in_threadpool(_open_prep, page, preparation_id, "prepared")
    return await run_in_threadpool(_infusion_page, page, prep)


def _infuse(page: Page, prep_id: str, form: Form) -> Response:
    form.get("action")  # the one button: sent twice with two values, refused (Form) like any field
    if (done := again(page, form.text("form_key"), "infuse_preparation", "preparations")) is not None:
        return done
    prep = _open_prep(page, prep_id)
    values: dict[str, Any] = {k: form.get(k, "") for k in INFUSE_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    errors = Errors()
    form_checks.number(values, "ml_infused", parse_volume, "enter the mL the pump infused", errors)
    started = parse_local_time(values["started_at"], page.tz, field="started_at", errors=errors)
    ended = parse_local_time(values["ended_at"], page.tz, field="ended_at", errors=errors)
    if started is not None and ended is not None and ended < started:
        errors.add("ended_at", "is before the infusion started")
    if errors:
        return _infusion_page(page, prep, values=values, errors=errors, status=422)
    cmd = InfusePreparation(prep_id, values["ml_infused"].strip(), started, ended,
                            values["stop_reason"].strip() or None, values["late_reason"].strip() or None)
    try:
        res = services.infuse_preparation(page.request.app.state.ledger, page.principal, cmd,
                                          idempotency_key=values["form_key"])
    except LedgerError as exc:
        errors.add(*error_of(exc, {"preparation_id": "form"}))
        return _infusion_page(page, prep, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}preparations?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/preparations/{preparation_id}/infusion", name="web_preparation_infusion_post")
async def infuse(request: Request, dea: Dea, preparation_id: PrepId) -> Response:
    page = await open_page(request, dea, "infuse_preparation")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_infuse, page, preparation_id, form)


# --- waste of a preparation ---------------------------------------------------------------------


def _waste_page(page: Page, prep: dict[str, Any], *, values: dict | None = None, errors: Errors | None = None,
                notes: dict | None = None, status: int = 200) -> Response:
    if values is None:
        values = {"form_key": new_form_key(), "occurred_at": local_input(page.local_now(), page.tz),
                  "method": PREP_WASTE_METHODS[0 if prep["container"] == "bag" else 1][0],
                  "ml_remaining": str(prep["ml_left"])}
    known = [*WASTE_FIELDS, "witness_username", "witness_password", "witness_totp", "witness_method"]
    return page.render("preparations_waste.html", status=status, active="tasks", prep=prep, values=values,
                       errors=errors or Errors(), notes=notes or {}, methods=PREP_WASTE_METHODS, known=known)


@router.get("/ui/{dea}/preparations/{preparation_id}/waste", name="web_preparation_waste")
async def waste_form(request: Request, dea: Dea, preparation_id: PrepId) -> Response:
    """Waste what is left of one preparation, before a witness."""
    page = await open_page(request, dea, "waste_preparation")
    prep = await run_in_threadpool(_open_prep, page, preparation_id)
    return await run_in_threadpool(_waste_page, page, prep)


def _waste(page: Page, prep_id: str, form: Form) -> Response:
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.services import request_fields

    form.get("action")  # the one button: sent twice with two values, refused (Form) like any field
    if (done := again(page, form.text("form_key"), "waste_preparation", "preparations")) is not None:
        return done
    prep = _open_prep(page, prep_id)
    values: dict[str, Any] = {k: form.get(k, "") for k in WASTE_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "witness")
    errors: Errors = Errors()
    notes: dict[str, str] = {}
    if values["method"] not in dict(PREP_WASTE_METHODS):
        errors.add("method", "choose how it was wasted")
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    if values["ml_remaining"].strip():
        form_checks.number(values, "ml_remaining", parse_volume, "", errors, allow_zero=True)
    if prep["status"] == "prepared" and not values["reason"].strip():
        errors.add("reason", "say why a preparation that was never infused is wasted (past its beyond-use time, "
                             "infusion cancelled ...)")
    form_checks.check_witness_there(form, errors)
    if errors:
        form_checks.note_witness_not_checked(form, errors, notes)
        return _waste_page(page, prep, values=values, errors=errors, notes=notes, status=422)
    cmd = WastePreparation(prep_id, values["method"], occurred, values["ml_remaining"].strip() or None,
                           values["reason"].strip() or None, values["late_reason"].strip() or None)
    # the witness once, now that the rest is right
    witness = witness_from_form(page, form, request_fields(cmd), errors, idempotency_key=values["form_key"])
    if witness is None:
        return _waste_page(page, prep, values=values, errors=errors, status=422)
    try:
        res = services.waste_preparation(page.request.app.state.ledger, page.principal, cmd,
                                         witness=witness.principal, idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)
        if status is not None:
            return _waste_page(page, prep, values=values, errors=errors, status=status)
        errors.add(*error_of(exc, {"preparation_id": "form", "witness": "witness_username"}))
        return _waste_page(page, prep, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}preparations?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/preparations/{preparation_id}/waste", name="web_preparation_waste_post")
async def waste(request: Request, dea: Dea, preparation_id: PrepId) -> Response:
    page = await open_page(request, dea, "waste_preparation")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_waste, page, preparation_id, form)


# --- Spravato (esketamine) sessions ------------------------------------------------------------------


def _fresh_session_values(page: Page) -> dict[str, Any]:
    now = page.local_now()
    ended = local_input(now, page.tz)
    back = parse_local_time(ended, page.tz, field="observation_ended_at", errors=Errors()).astimezone(UTC)
    start = local_input(back - timedelta(hours=2, minutes=5), page.tz)
    return {"form_key": new_form_key(), "administered_at": start, "observation_started_at": start,
            "observation_ended_at": ended, "dose_mg": DOSES[0][0]}


def _session_page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
                  found: dict | None = None, result: dict | None = None) -> Response:
    from ledger.services.patients import RECENT_DAYS

    ledger = page.request.app.state.ledger
    values = values or _fresh_session_values(page)
    devices = _devices(page)
    if found is None and values.get("patient_id"):
        found = _find_patients(page, Errors(), patient_id=values["patient_id"].strip(), log_action="read")
    known = [*SESSION_FIELDS, "device_ids"]
    return page.render("preparations_esketamine.html", status=status, active="tasks", values=values,
                       errors=errors or Errors(), devices=devices, found=found, doses=DOSES, known=known,
                       prescribers=queries.prescribers(ledger, page.dea, page.local_now().date()), result=result,
                       recent_days=RECENT_DAYS, picked=set(values.get("device_ids") or ()))


@router.get("/ui/{dea}/esketamine-sessions/new", name="web_esketamine")
async def esketamine_form(request: Request, dea: Dea, saved: Saved = None) -> Response:
    """A Spravato session: the devices used, the dose, the observation after it."""
    page = await open_page(request, dea, "esketamine")
    # the devices on hand are listed: a read of the book (a blind count of devices is then not blind)
    await run_in_threadpool(note_stock_read, request, request.app.state.ledger, page.principal, "Spravato session form")
    result = await run_in_threadpool(confirmation, page, saved) if saved is not None else None
    return await run_in_threadpool(_session_page, page, result=result)


def _record_session(page: Page, form: Form) -> Response:
    values: dict[str, Any] = {k: form.get(k, "") for k in SESSION_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    ids = [d for d in form.all("device_ids") if d]
    values["device_ids"] = ids
    errors = Errors()
    if form.get("action") == "search":
        found = _find_patients(page, errors, query=values["patient_query"].strip())
        return _session_page(page, values=values, errors=errors, found=found, status=422 if errors else 200)
    if (done := again(page, values["form_key"], "record_esketamine_session", "esketamine-sessions/new")) is not None:
        return done
    form_checks.check_patient_and_prescriber(page, values, errors)
    offered = {d["vial_id"]: d for d in _devices(page)}
    if not ids:
        errors.add("device_ids", "tick the devices the patient used (2 for 56 mg, 3 for 84 mg)")
    for d in ids:
        if d not in offered:
            errors.add("device_ids", f"device {d[:64]} is no longer on hand; check the ticked devices")
        elif offered[d]["blocked"]:
            errors.add("device_ids", f"device {d[:64]} cannot be used: {offered[d]['blocked']}")
    if values["dose_mg"] not in dict(DOSES):
        errors.add("dose_mg", "choose the dose: 56 or 84 mg")
    times = {f: parse_local_time(values[f], page.tz, field=f, errors=errors)
             for f in ("administered_at", "observation_started_at", "observation_ended_at")}
    if errors:
        return _session_page(page, values=values, errors=errors, status=422)
    cmd = RecordEsketamineSession(values["patient_id"].strip(), values["prescriber_dea_number"].strip(), tuple(ids),
                                  values["dose_mg"], times["administered_at"], times["observation_started_at"],
                                  times["observation_ended_at"], values["late_reason"].strip() or None)
    try:
        res = services.record_esketamine_session(page.request.app.state.ledger, page.principal, cmd,
                                                 idempotency_key=values["form_key"])
    except LedgerError as exc:
        name, msg = error_of(exc)
        errors.add("device_ids" if name.startswith("device_ids") else name, msg)
        return _session_page(page, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}esketamine-sessions/new?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/esketamine-sessions/new", name="web_esketamine_post")
async def record_session(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "esketamine")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_record_session, page, form)

