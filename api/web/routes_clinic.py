"""Clinical pages: alerts with their evidence (issue 7), and, with the clinical services of
issue 3, infusions with their witness, blind counts and discrepancies."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.http.routes_stock import note_stock_read
from api.web import infusion_form as form_checks  # the checks shared by the infusion forms
from api.web import queries
from api.web.core import (
    DEA_PATTERN,
    Page,
    PageRoute,
    error_of,
    local_input,
    new_form_key,
    open_page,
    parse_local_time,
)
from api.web.forms import Errors, Form, read_form, whole_number
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain import alerts as rules
from ledger.domain.errors import LedgerError
from ledger.services import alerts as alert_service
from ledger.services import stock

router = APIRouter(route_class=PageRoute, include_in_schema=False)


Dea = Annotated[str, Path(pattern=DEA_PATTERN)]


def _staff_names(page: Page) -> dict[str, str]:
    return {s["staff_id"]: s["printed_name"]
            for s in api_queries.staff(page.request.app.state.ledger, page.dea, set())}


def _alerts_page(page: Page, *, show: str, errors: Errors | None = None, values: dict | None = None,
                 status: int = 200, done: str | None = None) -> Response:
    rows = alert_service.list_alerts(page.request.app.state.ledger, page.dea, status=None if show == "all" else "open")
    return page.render("alerts.html", status=status, alerts=rows, show=show, names=_staff_names(page),
                       categories=[(c, c.replace("_", " ")) for c in rules.CATEGORIES], errors=errors or Errors(),
                       values=values or {}, done=done, form_key=new_form_key(), active="alerts")


@router.get("/ui/{dea}/alerts", name="web_alerts")
async def alerts(request: Request, dea: Dea, show: str = "open", done: str | None = None) -> Response:
    page = await open_page(request, dea, "alerts")
    return await run_in_threadpool(_alerts_page, page, show=show if show in ("open", "all") else "open",
                                   done=done if done and done.startswith("AL") and done[2:].isdigit() else None)


def _close_alert(page: Page, form: Form) -> Response:
    alert_id = form.text("alert_id")
    values = {"alert_id": alert_id, "category": form.text("category"), "explanation": form.get("explanation", ""),
              "action": form.text("action")}
    fn = alert_service.acknowledge_alert if values["action"] == "acknowledge" else alert_service.resolve_alert
    try:
        fn(page.request.app.state.ledger, page.principal, alert_id, values["category"], values["explanation"],
           idempotency_key=form.text("form_key") or None)
    except LedgerError as exc:
        name, msg = error_of(exc)
        errors = Errors()
        errors.add(f"{alert_id}-{name}" if name in ("category", "explanation") else "form",
                   msg if name in ("category", "explanation") else f"{alert_id}: {msg}")
        return _alerts_page(page, show="open", errors=errors, values=values, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}alerts?done={alert_id}", status_code=303)


@router.post("/ui/{dea}/alerts", name="web_alerts_post")
async def close_alert(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "alerts")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_close_alert, page, form)


def evidence_links(a: dict[str, Any]) -> list[int]:
    return list(a.get("evidence_seqs") or [])






@router.get("/ui/{dea}/counts/new", name="web_count")
async def count_start_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "count")
    return page.render("count_start.html", active="count", form_key=new_form_key())


def _start_count(page: Page, form: Form) -> Response:
    from ledger.domain.commands import StartCount

    try:
        res = services.start_count(page.request.app.state.ledger, page.principal, StartCount(blind=True),
                                   idempotency_key=form.text("form_key") or None)
    except LedgerError as exc:
        errors = Errors()
        errors.add("form", exc.reason)
        return page.render("count_start.html", status=exc.status, active="count", errors=errors,
                           form_key=new_form_key())
    return RedirectResponse(f"{location_path(page.dea)}counts/{res['session_id']}", status_code=303)


@router.post("/ui/{dea}/counts/new", name="web_count_start")
async def count_start(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "count")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_start_count, page, form)


SessionId = Annotated[str, Path(pattern=r"^C[0-9]{1,18}$")]


def _count_products(page: Page, session: dict) -> list[dict[str, Any]]:
    """What to count: product descriptions only (never quantities: the count is blind)."""
    prods = {p["ndc_key"]: p for p in api_queries.products(page.request.app.state.ledger, page.dea)}
    return [{"ndc": prods[k]["ndc"], "name": prods[k]["name"], "container_ml": prods[k]["container_ml"],
             "strength": prods[k]["strength_mg_per_ml"]} for k in session["ndc_keys"] if k in prods]


def _count_page(page: Page, session_id: str, *, values: dict | None = None, errors: Errors | None = None,
                status: int = 200) -> Response:
    s = stock.count_session(page.request.app.state.ledger, page.dea, session_id)
    if s["status"] != "open":
        return RedirectResponse(f"{location_path(page.dea)}entries/{_submitted_seq(page, session_id)}",
                                status_code=303)
    values = values or {"occurred_at": local_input(page.local_now(), page.tz), "form_key": new_form_key()}
    # The blind session's answer holds no book quantity; nothing else is loaded here.
    # issue 20: the policy's tolerance for opened vials (a policy figure, not the book)
    tolerance = stock.policy(page.request.app.state.ledger, page.dea)["open_count_tolerance_ml"]
    return page.render("count.html", status=status, active="count", session_id=session_id,
                       products=_count_products(page, s), values=values, errors=errors or Errors(),
                       tolerance=tolerance)


def _submitted_seq(page: Page, session_id: str) -> int:
    return queries.submitted_seq(page.request.app.state.ledger, page.dea, session_id)


@router.get("/ui/{dea}/counts/{session_id}", name="web_count_session")
async def count_session(request: Request, dea: Dea, session_id: SessionId) -> Response:
    page = await open_page(request, dea, "count")
    return await run_in_threadpool(_count_page, page, session_id)


def _submit_count(page: Page, session_id: str, form: Form) -> Response:
    from api.web import count_vials
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.domain.commands import CountLineInput, SubmitCount

    n = whole_number(form.get("line_count", "0")) or 0
    values: dict[str, str] = {k: v for k, v in form.items() if not k.endswith("_password") and k != "csrf_token"}
    keep_witness(values, form, "counter2")
    errors = Errors()
    occurred = parse_local_time(form.get("occurred_at", ""), page.tz, field="occurred_at", errors=errors)
    lines = []
    for i in range(min(n, 100)):
        def whole(name: str, i: int = i) -> int:
            v = whole_number(form.text(f"lines-{i}-{name}"))
            if v is None:
                errors.add(f"lines-{i}-{name}", "enter a whole number (0 if none)")
                return 0
            return v

        # issue 20: the opened vials typed one by one (optional), by their short ids
        named = count_vials.from_form(page.request.app.state.ledger, page.dea, form.text(f"lines-{i}-ndc"),
                                      form.get(f"lines-{i}-open_vials", ""), f"lines-{i}-open_vials", errors)
        lines.append(CountLineInput(form.text(f"lines-{i}-ndc"), whole("sealed_containers"), whole("open_containers"),
                                    form.text(f"lines-{i}-open_ml") or "0.00", open_vials=named))
    cmd = SubmitCount(session_id, tuple(lines), occurred, late_reason=form.optional("late_reason"))
    key = form.text("form_key") or None
    second = None
    if not errors:
        from ledger.services import request_fields

        second = witness_from_form(page, form, request_fields(cmd), errors, prefix="counter2", idempotency_key=key)
    if errors or second is None:
        return _count_page(page, session_id, values=values, errors=errors, status=422)
    try:
        res = services.submit_count(page.request.app.state.ledger, page.principal, cmd,
                                    second_counter=second.principal, idempotency_key=key)
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)  # issue 17: the second counter uses a passkey
        if status is not None:
            return _count_page(page, session_id, values=values, errors=errors, status=status)
        name, msg = error_of(exc, {"second_counter": "counter2_username"})
        errors.add(count_vials.input_of(name), msg)  # issue 20: a named vial's error on its box
        return _count_page(page, session_id, values=values, errors=errors, status=exc.status)
    from api.web.routes_pages import saved_redirect

    return saved_redirect(page, res)


@router.post("/ui/{dea}/counts/{session_id}", name="web_count_submit")
async def count_submit(request: Request, dea: Dea, session_id: SessionId) -> Response:
    page = await open_page(request, dea, "count")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_submit_count, page, session_id, form)


def _discrepancies_page(page: Page, *, errors: Errors | None = None, values: dict | None = None,
                        status: int = 200, done: str | None = None) -> Response:
    rows = stock.discrepancies(page.request.app.state.ledger, page.dea, status="open")
    prods = {p["ndc_key"]: p for p in api_queries.products(page.request.app.state.ledger, page.dea)}
    return page.render("discrepancies.html", status=status, active="discrepancies", rows=rows, products=prods,
                       names=_staff_names(page), errors=errors or Errors(), values=values or {}, done=done,
                       categories=[(c, c.replace("_", " ")) for c in services.DISCREPANCY_CATEGORIES],
                       form_key=new_form_key(), can_resolve=page.may("resolve_discrepancy"))


@router.get("/ui/{dea}/discrepancies", name="web_discrepancies")
async def discrepancies(request: Request, dea: Dea, done: str | None = None) -> Response:
    page = await open_page(request, dea, "discrepancies")
    return await run_in_threadpool(_discrepancies_page, page,
                                   done=done if done and len(done) < 40 and done.replace("-", "").isalnum() else None)


def _resolve(page: Page, form: Form) -> Response:
    from api.web.witness import witness_from_form
    from ledger.domain.commands import ResolveDiscrepancy
    from ledger.services import request_fields

    did = form.text("discrepancy_id")
    values = {"discrepancy_id": did, "category": form.text("category"), "explanation": form.get("explanation", ""),
              "fixed_by_seq": form.text("fixed_by_seq"), "breakage_seq": form.text("breakage_seq"),
              "second_username": form.text("second_username")}
    errors = Errors()
    numbers: dict[str, int | None] = {"fixed_by_seq": None, "breakage_seq": None}
    for name in numbers:
        if values[name]:
            numbers[name] = whole_number(values[name])
            if numbers[name] is None:
                errors.add(f"{did}-{name}", "enter the entry number (digits)")
    if not errors:
        key = form.text("form_key") or None
        cmd = ResolveDiscrepancy(did, values["category"], values["explanation"], numbers["fixed_by_seq"],
                                 numbers["breakage_seq"])
        witness = None
        if values["second_username"] or form.get("second_password", ""):
            # the second person (issue 15) signs on this screen; their errors go next to this
            # discrepancy's fields (one form per discrepancy on the page)
            found = Errors()
            witness = witness_from_form(page, form, request_fields(cmd), found, prefix="second", idempotency_key=key)
            for name, msg in found.items():
                errors.add(f"{did}-{name}" if name.startswith("second_") else name, msg)
            if witness is None:
                return _discrepancies_page(page, errors=errors, values=values, status=422)
        try:
            # without a second person the service still names what else is wrong first (the
            # explanation, the category, the breakage record), then the missing second person
            services.resolve_discrepancy(page.request.app.state.ledger, page.principal, cmd,
                                         witness=witness.principal if witness else None, idempotency_key=key)
            return RedirectResponse(f"{location_path(page.dea)}discrepancies?done={did}", status_code=303)
        except LedgerError as exc:
            name, msg = error_of(exc)
            if name in ("category", "explanation", "fixed_by_seq", "breakage_seq"):
                errors.add(f"{did}-{name}", msg)
            elif name == "witness":
                errors.add(f"{did}-second_username", msg)
            else:
                errors.add("form", f"{did}: {msg}")
            return _discrepancies_page(page, errors=errors, values=values, status=exc.status)
    return _discrepancies_page(page, errors=errors, values=values, status=422)


@router.post("/ui/{dea}/discrepancies", name="web_discrepancies_post")
async def resolve_discrepancy(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "resolve_discrepancy")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_resolve, page, form)


WASTE_METHODS = [("sink, witnessed", "Down the sink, witnessed"),
                 ("pharmaceutical waste container, witnessed", "Pharmaceutical waste container (e.g. Rx Destroyer), witnessed")]


INFUSION_FIELDS = ("patient_id", "patient_query", "prescriber_dea_number", "weight_kg", "ordered_mg_per_kg", "ml_given",
                   "waste_ml", "waste_method", "started_at", "ended_at", "late_reason", "form_key")


INFUSION_ERROR_NAMES = {"waste.ml": "waste_ml", "waste.method": "waste_method", "witness": "witness_username",
                        "draws": "draws"}

#: What typed as the waste means "no waste now" (it is recorded later, with its own witness).
NO_WASTE = ("", "0", "0.0", "0.00", "0.000")


def _patient_keys(page: Page):
    from api.http import routes_clinical

    return routes_clinical.patient_keys(page.request)


def _find_patients(page: Page, errors: Errors, *, query: str = "", patient_id: str | None = None,
                   log_action: str = "search", field: str = "patient_query") -> dict | None:
    """The patient search of the infusion page (issue 21): names only for a role that may see
    them, each name shown written to the patient-access log by the service; None, with the
    reason beside ``field``, when it cannot answer (the query is never in the reason)."""
    try:
        found = services.find_patients(page.request.app.state.ledger, page.principal, query, patient_id=patient_id,
                                       log_action=log_action, keys=_patient_keys(page))
    except LedgerError as exc:
        errors.add(field, exc.reason)
        return None
    for p in found["patients"]:
        p["last_seen_local"] = local_day(p["last_seen"], page.tz) if p.get("last_seen") else None
    return found


def local_day(text: str, tz) -> str:
    """The local date of an RFC 3339 time ("2026-12-05")."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(tz).date().isoformat()
    except ValueError:
        return text


def _infusion_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200,
                   found: dict | None = None, notes: dict | None = None, result: dict | None = None) -> Response:
    from ledger.services.patients import RECENT_DAYS

    ledger = page.request.app.state.ledger
    today = page.local_now().date()
    vials = queries.usable_vials(ledger, page.dea, today)
    if found is None and values.get("patient_id"):
        # the picked patient, shown again with their name (a read, logged) so the nurse sees who
        found = _find_patients(page, Errors(), patient_id=values["patient_id"].strip(), log_action="read")
    known = [*INFUSION_FIELDS, "witness_username", "witness_password", "witness_totp", "witness_method", "draws"]
    known += [f"vials-{i}-ml" for i in range(len(vials))] + [f"vials-{i}-use" for i in range(len(vials))]
    return page.render("infusion.html", status=status, active="infusion", values=values, errors=errors or Errors(),
                       vials=vials, waste_methods=WASTE_METHODS, known=known, found=found, notes=notes or {},
                       prescribers=queries.prescribers(ledger, page.dea, today), result=result,
                       recent_days=RECENT_DAYS)


def _new_infusion_values(page: Page) -> dict[str, Any]:
    ended = local_input(page.local_now(), page.tz)
    # The suggested start is 40 minutes before the end in elapsed time (UTC), not on the wall
    # clock: on the spring-forward morning 03:20 - 40 min on the wall is 02:40, an hour that
    # does not exist, read back as 03:40, after the end, and the suggested times were refused.
    # Counted back from the end as the form reads it back (in the repeated hour after fall-back,
    # "01:20" is the first 01:20), so the two stay 40 minutes apart then too.
    end_read = parse_local_time(ended, page.tz, field="ended_at", errors=Errors())
    return {"form_key": new_form_key(), "ended_at": ended,
            "started_at": local_input(end_read.astimezone(UTC) - timedelta(minutes=40), page.tz),
            "waste_method": WASTE_METHODS[0][0]}


def _saved_infusion(page: Page, seq: int) -> dict[str, Any] | None:
    """The confirmation of the infusion recorded as entry ``seq`` (issue 21), from the entries,
    for the person who recorded it; None for any other entry (the page then shows the form only)."""
    import json

    from api.web import readable
    from api.web.gs1 import short_vial_labels

    ledger = page.request.app.state.ledger
    e = api_queries.entry(ledger, page.dea, seq)
    dose = json.loads(e["canonical"]) if e else {}
    if dose.get("kind") != "dose_administered" or not any(
            s.get("staff_id") == page.principal.staff_id for s in dose.get("signatures", [])):
        return None
    waste = None
    for k in range(seq + 1, seq + 6):  # the waste is recorded in the same transaction (after any alert)
        x = api_queries.entry(ledger, page.dea, k)
        if x is None:
            break
        o = json.loads(x["canonical"])
        if o.get("kind") == "dose_wasted" and o.get("administration_id") == dose.get("administration_id"):
            waste = o
            break
    found = _find_patients(page, Errors(), patient_id=dose.get("patient_id", ""), log_action="read")
    name = found["patients"][0]["name"] if found and found["patients"] else None
    labels = short_vial_labels([{"vial_id": d.get("vial_id", "")} for d in dose.get("draws") or []])
    out = readable.infusion_result(dose, waste, patient=name, vial_labels=labels, tz=page.tz,
                                   today=page.local_now().date())
    out.update(seq=seq, waste_seq=waste.get("seq") if waste else None)
    return out


def _new_infusion_page(page: Page, saved: int | None, patient: str | None) -> Response:
    values = _new_infusion_values(page)
    result = _saved_infusion(page, saved) if saved is not None else None
    found = None
    if patient:  # a chart number in the address (never a name): that patient, picked
        errors = Errors()
        found = _find_patients(page, errors, query=patient)
        if found and len(found["patients"]) == 1:
            values["patient_id"] = found["patients"][0]["patient_id"]
    return _infusion_page(page, values=values, result=result, found=found)


@router.get("/ui/{dea}/infusions/new", name="web_infusion")
async def infusion_form(request: Request, dea: Dea,
                        saved: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                        patient: Annotated[str | None, Query(pattern=r"^[Pp]?[0-9]{1,18}$")] = None) -> Response:
    """The infusion form; ``saved`` (an entry's number) shows what was just recorded above it, and
    ``patient`` (a chart number, e.g. P40: never a name, which goes only in a POST body) picks them."""
    page = await open_page(request, dea, "infusion")
    # The form lists each usable vial with its mL left: that is the book, for a blind count.
    await run_in_threadpool(note_stock_read, request, request.app.state.ledger, page.principal, "infusion form")
    return await run_in_threadpool(_new_infusion_page, page, saved, patient)


def _check_infusion(page: Page, form: Form, values: dict[str, Any], vials: list[dict], errors: Errors,
                    notes: dict[str, str]) -> tuple[list, list[int], Any, Any, Any]:
    """Every error of the page's own inputs at once, each beside its field (issue 21): the
    service names one at a time, so a nurse fixed one field per submit. Only what the page can
    see is checked here (picked, typed, balanced, the witness present); the service checks all
    of it again with the ledger's state. The witness's password is not checked here.

    Returns (draws, the page row of each draw, waste, started, ended)."""
    from ledger.domain.commands import WasteInput
    from ledger.domain.quantities import parse_amount, parse_volume

    form_checks.check_patient_and_prescriber(page, values, errors, ordered="the dose")
    weight = form_checks.number(values, "weight_kg", parse_amount, "enter the patient's weight in kg", errors)
    if weight is not None and weight > 500:
        errors.add("weight_kg", "must be at most 500 kg")
    per_kg = form_checks.number(values, "ordered_mg_per_kg", parse_amount, "enter the ordered dose in mg/kg", errors)
    if per_kg is not None and per_kg > 10:
        errors.add("ordered_mg_per_kg", "must be at most 10 mg/kg")
    # an mL of 0 typed next to a vial not ticked is nothing typed (as for the waste)
    draws, used, drawn, draws_ok = form_checks.check_draws(form, values, vials, errors, blank=NO_WASTE)
    given = form_checks.number(values, "ml_given", parse_volume, "enter the mL given", errors, allow_zero=True)
    balanced = draws_ok and bool(draws) and given is not None
    if balanced and given > drawn:
        errors.add("ml_given", f"{given} mL given is more than the {drawn} mL drawn from the ticked vials")
        balanced = False

    waste = None
    waste_text = values["waste_ml"].strip()
    if waste_text not in NO_WASTE:
        wasted = form_checks.number(values, "waste_ml", parse_volume, "enter the mL wasted", errors)
        if values["waste_method"] not in dict(WASTE_METHODS):  # the page offers these; no other text is recorded
            errors.add("waste_method", "choose how it was wasted")
        if wasted is not None and balanced and given + wasted != drawn:
            gap = drawn - given - wasted
            errors.add("waste_ml", f"mL drawn ({drawn}, the ticked vials) must equal mL given ({given}) + mL wasted "
                                   f"({wasted}): " + (f"{gap} mL is unaccounted for" if gap > 0 else
                                                      f"that is {-gap} mL more than was drawn")
                                   + "; check mL given, mL wasted and the mL drawn from each vial")
        waste = WasteInput(waste_text, values["waste_method"])
        form_checks.check_witness_there(form, errors)  # their password is checked once the rest is right
    elif balanced and given < drawn:
        notes["waste_ml"] = (f"No waste entered: {drawn - given} mL of the {drawn} mL drawn is not given. The "
                             "infusion stays unreconciled until its waste is recorded with a witness.")

    started = parse_local_time(values["started_at"], page.tz, field="started_at", errors=errors)
    ended = parse_local_time(values["ended_at"], page.tz, field="ended_at", errors=errors)
    if started is not None and ended is not None:
        if ended < started:
            errors.add("ended_at", "is before the infusion started")
        elif ended - started > timedelta(hours=12):
            errors.add("ended_at", "an infusion longer than 12 hours is not plausible: check when the infusion "
                                   "started and ended")
    if waste is not None:
        form_checks.note_witness_not_checked(form, errors, notes)
    return draws, used, waste, started, ended


def _record_infusion(page: Page, form: Form) -> Response:
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.domain.commands import AdministerDose
    from ledger.services import request_fields

    values: dict[str, Any] = {k: form.get(k, "") for k in INFUSION_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "witness")  # kept on an error; passwords never are
    vials = form_checks.usable_vial_rows(page, form, values)
    errors = Errors()
    if form.get("action") in ("search", "lookup"):
        # Find patient: by name or chart number, in this POST body (never the address); "lookup"
        # (the earlier "Check patient" button) with an empty box looks up the picked id.
        query = values["patient_query"].strip()
        if not query and form.get("action") == "lookup":
            query = values["patient_id"].strip()
        found = _find_patients(page, errors, query=query)
        return _infusion_page(page, values=values, errors=errors, found=found, status=422 if errors else 200)
    notes: dict[str, str] = {}
    draws, used, waste, started, ended = _check_infusion(page, form, values, vials, errors, notes)
    if errors:
        found = None
        if not values["patient_id"].strip() and values["patient_query"].strip():
            # nobody picked yet: the search typed is run again, so its picks are still there to pick from
            found = _find_patients(page, Errors(), query=values["patient_query"].strip())
        return _infusion_page(page, values=values, errors=errors, notes=notes, status=422, found=found)
    cmd = AdministerDose(values["patient_id"].strip(), values["prescriber_dea_number"].strip(),
                         values["weight_kg"].strip(), values["ordered_mg_per_kg"].strip(), tuple(draws),
                         values["ml_given"].strip(), started, ended, waste=waste,
                         late_reason=values["late_reason"].strip() or None)
    witness = None
    if waste is not None:
        # once, now that the rest is right: a refused form never asked for the witness's password
        witness = witness_from_form(page, form, request_fields(cmd), errors, idempotency_key=values["form_key"])
        if witness is None:
            return _infusion_page(page, values=values, errors=errors, notes=notes, status=422)
    try:
        res = services.administer_dose(page.request.app.state.ledger, page.principal, cmd,
                                       witness=witness.principal if witness else None,
                                       idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)  # issue 17: the witness confirms with a passkey
        if status is not None:
            return _infusion_page(page, values=values, errors=errors, notes=notes, status=status)
        name, msg = error_of(exc, INFUSION_ERROR_NAMES)
        errors.add(form_checks.draw_error_field(name, used), msg)
        return _infusion_page(page, values=values, errors=errors, notes=notes, status=exc.status)
    # issue 21: the confirmation in the clinic's words, on the infusion page (post/redirect/get;
    # the address carries the entry's number only)
    return RedirectResponse(f"{location_path(page.dea)}infusions/new?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/infusions/new", name="web_infusion_post")
async def record_infusion(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "infusion")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_record_infusion, page, form)
