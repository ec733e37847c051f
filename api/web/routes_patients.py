"""The patients page (issue 21): look a patient up, register a patient, change a patient's
details. The API's tasks ``register_patient`` and ``change_patient_details`` on a page, with the
API's roles (the clinicians).

Health data stays where the API keeps it: a name, an address or a date of birth travels only in a
POST body (the search too), never in the address; the page's own addresses carry a chart number
or an entry's number at most. The search is the infusion page's (``services.find_patients``):
names and dates of birth only to the roles that may read them, each patient whose name is shown
written to the patient-access log; opening a patient's details to change them is a logged read
(``services.read_patient``, as the API's ``read_patient``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.web.core import Page, PageRoute, error_of, new_form_key, open_page
from api.web.forms import Errors, Form, read_form
from api.web.readable import clock_time
from api.web.routes_clinic import Dea, _find_patients, _patient_keys
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain.commands import AddressInput, ChangePatientDetails, RegisterPatient
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.services.common import US_STATES, text
from ledger.services.patients import date_of_birth, patient_details

router = APIRouter(route_class=PageRoute, include_in_schema=False)

#: The details' inputs, as the service names them (``patient_details``): register form names;
#: the change form's are the same with ``c_`` before them (one page, unique ids).
DETAIL_INPUTS = {"name": "name", "address.street": "street", "address.city": "city", "address.state": "state",
                 "address.postal_code": "postal_code", "date_of_birth": "date_of_birth"}
#: Values the service accepts for each input, standing in for one already found wrong, so the
#: service's own checks go on to name every other wrong input (the whole form at once).
_STAND_IN = {"name": "A", "street": "A", "city": "A", "state": "TX", "postal_code": "00000", "date_of_birth": ""}
#: The inputs' labels: each message says which field it is about, in the summary at the top too.
LABELS = {"name": "Name", "street": "Street", "city": "City", "state": "State", "postal_code": "ZIP code",
          "date_of_birth": "Date of birth", "reason": "Why the details change"}
REGISTER_FIELDS = (*_STAND_IN, "form_key")
CHANGE_FIELDS = tuple(f"c_{k}" for k in _STAND_IN) + ("reason", "patient_id", "change_key")


def detail_errors(page: Page, values: dict[str, str], prefix: str, errors: Errors) -> None:
    """Every wrong detail at once, each beside its input, by the service's own rules
    (``patient_details``, and ``date_of_birth`` against the clinic's local today): the service
    names the first wrong field; that input is replaced by a stand-in and the check repeated.
    Messages never hold the value typed (health data)."""
    trial = {k: values[prefix + k] for k in _STAND_IN}
    for _ in range(len(_STAND_IN)):
        try:
            patient_details(trial["name"], AddressInput(trial["street"], trial["city"], trial["state"],
                                                        trial["postal_code"]), dob=trial["date_of_birth"])
            date_of_birth(trial["date_of_birth"], today=page.local_now().date())
            return
        except InvalidInput as exc:
            key = DETAIL_INPUTS.get(exc.field or "", "name")
            errors.add(prefix + key, f"{LABELS[key]} {exc.reason}")
            if trial[key] == _STAND_IN[key]:
                return  # cannot happen with the stand-ins above; never loop on it
            trial[key] = _STAND_IN[key]


def saved_text(page: Page, seq: int) -> dict[str, Any] | None:
    """The confirmation of entry ``seq`` in the clinic's words ("Patient P41 registered at 14:12"),
    for the person who signed it; None for any other entry. Ids only: no name is shown or read."""
    e = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    obj = json.loads(e["canonical"]) if e else {}
    if obj.get("kind") not in ("patient_registered", "patient_details_changed") or not any(
            s.get("staff_id") == page.principal.staff_id for s in obj.get("signatures", [])):
        return None
    at = clock_time(obj.get("occurred_at") or obj.get("recorded_at", ""), page.tz, page.local_now().date())
    pid = obj.get("patient_id", "")
    if obj["kind"] == "patient_registered":
        return {"text": f"Patient {pid} registered at {at}", "seq": seq, "patient_id": pid}
    return {"text": f"Details of patient {pid} changed at {at}", "seq": seq, "patient_id": pid}


def _fresh(page: Page) -> dict[str, str]:
    values = {k: "" for k in (*REGISTER_FIELDS, *CHANGE_FIELDS, "patient_query")}
    values["form_key"], values["change_key"] = new_form_key(), new_form_key()
    values["state"] = page.location.get("state") or ""  # most patients live in the clinic's state
    return values


def _page(page: Page, *, values: dict[str, str], errors: Errors | None = None, status: int = 200,
          found: dict | None = None, change: bool = False, saved: dict | None = None) -> Response:
    from ledger.services.patients import RECENT_DAYS

    known = [*REGISTER_FIELDS, *CHANGE_FIELDS, "patient_query"]
    return page.render("patients_page.html", status=status, active="tasks", values=values, errors=errors or Errors(),
                       found=found, change=change, saved=saved, known=known, recent_days=RECENT_DAYS,
                       states=[(s, s) for s in sorted(US_STATES)], today=page.local_now().date().isoformat())


@router.get("/ui/{dea}/patients", name="web_patients")
async def patients(request: Request, dea: Dea,
                   saved: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> Response:
    """Find, register and change patients; ``saved`` (an entry's number) shows what was just
    recorded. The address never holds a name: searches are POSTs."""
    page = await open_page(request, dea, "patients")

    def show() -> Response:
        said = saved_text(page, saved) if saved is not None else None
        return _page(page, values=_fresh(page), saved=said)

    return await run_in_threadpool(show)


def _search(page: Page, form: Form, values: dict[str, str]) -> Response:
    errors = Errors()
    found = _find_patients(page, errors, query=values["patient_query"].strip())
    return _page(page, values=values, errors=errors, found=found, status=422 if errors else 200)


def _pick(page: Page, form: Form, values: dict[str, str]) -> Response:
    """The patient picked from the search, their details in the change form (a logged read)."""
    errors = Errors()
    pid = form.text("patient_id")
    if not pid:
        errors.add("patient_query", "find the patient, pick them, then Change details")
        found = _find_patients(page, Errors(), query=values["patient_query"].strip())
        return _page(page, values=values, errors=errors, found=found, status=422)
    try:
        p = services.read_patient(page.request.app.state.ledger, page.principal, pid, keys=_patient_keys(page))
    except LedgerError as exc:
        errors.add("patient_query", exc.reason)
        return _page(page, values=values, errors=errors, status=exc.status)
    a = p["address"]
    values.update(patient_id=pid, c_name=p["name"], c_street=a["street"], c_city=a["city"], c_state=a["state"],
                  c_postal_code=a["postal_code"], c_date_of_birth=p.get("date_of_birth") or "", reason="")
    return _page(page, values=values, change=True)


def _register(page: Page, form: Form, values: dict[str, str]) -> Response:
    errors = Errors()
    detail_errors(page, values, "", errors)
    if errors:
        return _page(page, values=values, errors=errors, status=422)
    cmd = RegisterPatient(values["name"], AddressInput(values["street"], values["city"], values["state"],
                                                       values["postal_code"]), values["date_of_birth"] or None)
    try:
        res = services.register_patient(page.request.app.state.ledger, page.principal, cmd, keys=_patient_keys(page),
                                         idempotency_key=values["form_key"])
    except LedgerError as exc:
        name, msg = error_of(exc, DETAIL_INPUTS)
        errors.add(name if name in values else "form", msg)
        return _page(page, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}patients?saved={res['entries'][0]['seq']}", status_code=303)


def _change(page: Page, form: Form, values: dict[str, str]) -> Response:
    errors = Errors()
    if not values["patient_id"]:
        errors.add("form", "find the patient and pick them first")
        return _page(page, values=values, errors=errors, status=422)
    detail_errors(page, values, "c_", errors)
    try:
        text(values["reason"], field="reason", max_len=500)
    except InvalidInput as exc:
        errors.add("reason", f"{LABELS['reason']} {exc.reason}")
    if errors:
        return _page(page, values=values, errors=errors, status=422, change=True)
    cmd = ChangePatientDetails(values["patient_id"], values["c_name"], AddressInput(
        values["c_street"], values["c_city"], values["c_state"], values["c_postal_code"]), values["reason"],
        values["c_date_of_birth"] or None)
    try:
        res = services.change_patient_details(page.request.app.state.ledger, page.principal, cmd,
                                              keys=_patient_keys(page), idempotency_key=values["change_key"])
    except LedgerError as exc:
        name, msg = error_of(exc, {**{k: f"c_{v}" for k, v in DETAIL_INPUTS.items()}, "patient_id": "form"})
        errors.add(name if name in values else "form", msg)
        return _page(page, values=values, errors=errors, status=exc.status, change=True)
    return RedirectResponse(f"{location_path(page.dea)}patients?saved={res['entries'][0]['seq']}", status_code=303)


def _post(page: Page, form: Form) -> Response:
    values = _fresh(page)
    action = form.get("action", "")
    # an input the submitted form left out is empty, not the fresh page's default: a register
    # without its state is refused, not recorded in the clinic's state
    sent = REGISTER_FIELDS if action == "register" else CHANGE_FIELDS if action == "change" else ()
    for k in values:
        if k in form or k in sent:
            values[k] = form.get(k, "")
    # a form key the browser lost is a new one (the double submit it guards is the same page's)
    values["form_key"] = values["form_key"] or new_form_key()
    values["change_key"] = values["change_key"] or new_form_key()
    if action == "search":
        return _search(page, form, values)
    if action == "pick":
        return _pick(page, form, values)
    if action == "register":
        return _register(page, form, values)
    if action == "change":
        return _change(page, form, values)
    errors = Errors()
    errors.add("form", "send one of the page's forms: find, register or change details")
    return _page(page, values=_fresh(page), errors=errors, status=422)


@router.post("/ui/{dea}/patients", name="web_patients_post")
async def patients_post(request: Request, dea: Dea) -> Response:
    """Every form of the page: find (a name or chart number in this body, never the address),
    pick (the patient's id in this body), register, change details."""
    page = await open_page(request, dea, "patients")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_post, page, form)
