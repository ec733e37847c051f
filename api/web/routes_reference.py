"""Set-up pages (issue 21): the registrant's products, suppliers, prescribers and policy.

Each page lists what is recorded and has the form for its task; a form calls the same service with
the same command as the API route (api/http/routes_reference.py, routes_prescribers.py,
routes_clinical.py ``set_policy``), so every rule stays in the service. The page checks only what
it can see in the form (empty, not a number, not a day, nothing picked) so that every such mistake
is shown at once beside its field; the service checks everything again and its refusal is shown
beside the field it names. After success the page says plainly, in the clinic's local time, what
was recorded, with the entry's number linked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.web import readable
from api.web.core import DEA_PATTERN, Page, PageRoute, input_name, new_form_key, open_page
from api.web.forms import Errors, Form, read_form, whole_number
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain import ndc_reference
from ledger.domain import policy as policy_rules
from ledger.domain import prescribers as prescriber_rules
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    RecordSupplierRegistration,
    RegisterPrescriber,
    SetPolicy,
)
from ledger.domain.entries import UNIT_KINDS
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.domain.identifiers import parse_dea_number, parse_ndc
from ledger.domain.quantities import parse_amount, parse_volume
from ledger.integrity.canonical import decode
from ledger.services import stock
from ledger.services.common import US_STATES
from ledger.storage.store import entries_t

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Dea = Annotated[str, Path(pattern=DEA_PATTERN)]
Saved = Annotated[int | None, Query(ge=0, le=2**62)]

STATES = [(s, s) for s in sorted(US_STATES)]
YES_NO = (("yes", "Yes"), ("no", "No"))
#: Who may open any entry's page (api/web/routes_pages.py: others see the entries they signed):
#: the lists link an entry's number only for them; the confirmation links the entry just signed.
ENTRY_READERS = frozenset({"manager", "compliance_officer", "auditor"})
SCHEDULE_WORDS = {"2": "II", "2N": "II N", "3": "III", "3N": "III N", "4": "IV", "5": "V"}


# --- shared ---------------------------------------------------------------------------------------


def _entry(page: Page, seq: int | None, kinds: tuple[str, ...]) -> dict[str, Any] | None:
    """Entry ``seq`` of this location, decoded, if it is one of ``kinds`` (else None: the page then
    shows no confirmation for a number that is not one of its own entries)."""
    if seq is None:
        return None
    e = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    obj = json.loads(e["canonical"]) if e else {}
    return obj if obj.get("kind") in kinds else None


def _earlier(page: Page, kinds: tuple[str, ...], before: int, match: Callable[[dict], bool]) -> dict | None:
    """The latest entry of ``kinds`` before seq ``before`` for which ``match`` holds (what a new
    registration or policy supersedes). Reference entries are few: they are read and decoded here."""
    ledger = page.request.app.state.ledger
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.canonical).where(
            entries_t.c.registrant == page.dea, entries_t.c.kind.in_(kinds), entries_t.c.seq < before)
            .order_by(entries_t.c.seq.desc())).scalars().all()
    for raw in rows:
        obj = decode(bytes(raw))
        if match(obj):
            return obj
    return None


def _at(page: Page, entry: dict) -> str:
    """When ``entry`` was recorded, as the clinic says it ("14:12" today, "Dec 5 at 14:12")."""
    return readable.clock_time(entry.get("recorded_at", ""), page.tz, page.local_now().date())


def _by(entry: dict) -> str:
    return next((s.get("printed_name", "") for s in entry.get("signatures", [])), "")


def _schedules(codes: list[str] | tuple[str, ...]) -> str:
    return ", ".join(SCHEDULE_WORDS.get(c, c) for c in codes) or "none"


def _service_error(errors: Errors, exc: LedgerError, names: dict[str, str], known: set[str]) -> None:
    """A service's refusal beside the input it names (``names`` maps service fields to inputs);
    a field the form does not show goes above the form."""
    # an item of a list (``schedules[2]``: one ticked box) is the list's input
    field = re.sub(r"\[\d+\]$", "", exc.field or "")
    name = names.get(field, input_name(field) if field else "form")
    errors.add(name if name in known else "form", exc.reason)


def _required(values: dict[str, Any], errors: Errors, names: dict[str, str]) -> None:
    """Every input in ``names`` (input -> what to say) that was left empty."""
    for name, message in names.items():
        if not values.get(name, "").strip():
            errors.add(name, message)


def _parsed(errors: Errors, name: str, parse: Callable[[], Any]) -> Any:
    """``parse()``, or None with its refusal beside ``name`` (the service's own parsers: the same
    words and rules as the API)."""
    try:
        return parse()
    except InvalidInput as exc:
        errors.add(name, exc.reason)
        return None


def _done(page: Page, path: str, res: dict) -> Response:
    return RedirectResponse(f"{location_path(page.dea)}{path}?saved={res['entries'][0]['seq']}", status_code=303)


async def _post(request: Request, dea: str, key: str, handler: Callable[[Page, Form], Response]) -> Response:
    page = await open_page(request, dea, key)
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(handler, page, form)


# --- products -------------------------------------------------------------------------------------

PRODUCT_FIELDS = ("ndc", "name", "drug_code", "schedule", "dosage_form", "strength_mg_per_ml", "container_ml",
                  "unit_kind", "unit_ndc", "units_per_package")
#: The schedules a product here may have (the service refuses II: csledger keeps III-V records only).
PRODUCT_SCHEDULES = (("III", "III"), ("IIIN", "III N (non-narcotic)"), ("IV", "IV"), ("V", "V"))
UNIT_WORDS = {"vial": "vial", "nasal_spray_device": "nasal spray device", "prefilled_syringe": "prefilled syringe"}
#: The service names the product's dosage form ``form``; the page's input is ``dosage_form`` (an
#: error named ``form`` is the whole form's).
PRODUCT_NAMES = {"form": "dosage_form", "product.form": "dosage_form"}


def _products_page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
                   saved: dict | None = None) -> Response:
    rows = api_queries.products(page.request.app.state.ledger, page.dea)
    for p in rows:
        p["unit_words"] = UNIT_WORDS.get(p.get("unit_kind") or "vial", p.get("unit_kind"))
    return page.render("reference_products.html", status=status, active="tasks", entry_links=bool(page.roles & ENTRY_READERS), products=rows,
                       values=values or {"form_key": new_form_key()}, errors=errors or Errors(), saved=saved,
                       schedules=PRODUCT_SCHEDULES, unit_kinds=[(k, UNIT_WORDS.get(k, k)) for k in UNIT_KINDS])


def _product_saved(page: Page, seq: int | None) -> dict | None:
    e = _entry(page, seq, ("product_added",))
    if e is None:
        return None
    p = e["product"]
    units = p.get("units_per_package") or 1
    unit = UNIT_WORDS.get(p.get("unit_kind") or "vial", "vial")
    package = f"{p['container_ml']} mL {unit}" + (f", {units} in a package" if units > 1 else "")
    text = (f"Product added at {_at(page, e)} by {_by(e)}: {p['name']}, NDC {p['ndc']}, {p['strength_mg_per_ml']} "
            f"mg/mL, {package}, Schedule {p['schedule']}, DEA code {p['drug_code']}.")
    return {"text": text, "seq": e["seq"], "warning": ndc_reference.unknown_ndc_warning(p["ndc"])}


@router.get("/ui/{dea}/products", name="web_products")
async def products_page(request: Request, dea: Dea, saved: Saved = None) -> Response:
    """The registrant's products (NDC, name, strength, package) and the form to add one."""
    page = await open_page(request, dea, "products")
    said = await run_in_threadpool(_product_saved, page, saved)
    return await run_in_threadpool(_products_page, page, saved=said)


def _add_product(page: Page, form: Form) -> Response:
    values = {k: form.get(k, "") for k in PRODUCT_FIELDS}
    values["form_key"] = form.text("form_key") or new_form_key()
    errors = Errors()
    _required(values, errors, {
        "ndc": "enter the package NDC printed on the carton", "name": "enter the product's name",
        "drug_code": "enter the DEA drug code (7285 for ketamine)", "schedule": "choose the schedule",
        "dosage_form": "enter the dosage form (injection, nasal spray)",
        "strength_mg_per_ml": "enter the strength in mg per mL", "container_ml": "enter the mL in one container"})
    v = {k: values[k].strip() for k in PRODUCT_FIELDS}
    if v["ndc"]:
        _parsed(errors, "ndc", lambda: parse_ndc(v["ndc"]))
    if v["unit_ndc"]:
        _parsed(errors, "unit_ndc", lambda: parse_ndc(v["unit_ndc"], field="unit_ndc"))
    for name in ("strength_mg_per_ml", "container_ml"):
        if v[name]:
            _parsed(errors, name, lambda name=name: parse_amount(v[name], field=name))
    if v["schedule"] and v["schedule"] not in dict(PRODUCT_SCHEDULES):
        errors.add("schedule", "choose the schedule from the list")
    if v["unit_kind"] and v["unit_kind"] not in UNIT_KINDS:
        errors.add("unit_kind", "choose what one unit is from the list")
    units = None
    if v["units_per_package"]:
        units = whole_number(v["units_per_package"], digits=6)
        if units is None:
            errors.add("units_per_package", "enter a whole number of units (10 for a carton of 10)")
    if errors:
        return _products_page(page, values=values, errors=errors, status=422)
    try:
        res = services.add_product(page.request.app.state.ledger, page.principal, AddProduct(
            v["ndc"], v["name"], v["drug_code"], v["schedule"], v["dosage_form"], v["strength_mg_per_ml"],
            v["container_ml"], unit_kind=v["unit_kind"] or None, unit_ndc=v["unit_ndc"] or None,
            units_per_package=units), idempotency_key=values["form_key"])
    except LedgerError as exc:
        _service_error(errors, exc, PRODUCT_NAMES, set(PRODUCT_FIELDS))
        return _products_page(page, values=values, errors=errors, status=exc.status)
    return _done(page, "products", res)


@router.post("/ui/{dea}/products", name="web_products_post")
async def add_product(request: Request, dea: Dea) -> Response:
    return await _post(request, dea, "products", _add_product)


# --- suppliers ------------------------------------------------------------------------------------

SUPPLIER_FIELDS = ("name", "address-street", "address-city", "address-state", "address-postal_code", "dea_number",
                   "registration_expires_on", "authorized_trading_partner")
REGISTRATION_FIELDS = ("supplier_id", "reg-registration_expires_on", "reg-authorized_trading_partner")
#: The registration form's inputs carry a prefix (two forms on one page); the service's names.
REGISTRATION_NAMES = {"supplier_id": "supplier_id", "registration_expires_on": "reg-registration_expires_on",
                      "schedules": "reg-schedules", "authorized_trading_partner": "reg-authorized_trading_partner"}


def _suppliers_page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
                    saved: dict | None = None) -> Response:
    rows = api_queries.suppliers(page.request.app.state.ledger, page.dea)
    for s in rows:
        s["schedule_words"] = _schedules(s["schedules"])
    fresh = {"add_key": new_form_key(), "reg_key": new_form_key(), "address-state": page.location.get("state", "")}
    return page.render("reference_suppliers.html", status=status, active="tasks", entry_links=bool(page.roles & ENTRY_READERS), suppliers=rows,
                       values={**fresh, **(values or {})}, errors=errors or Errors(), saved=saved, state_options=STATES,
                       schedules=[(c, SCHEDULE_WORDS[c]) for c in prescriber_rules.SCHEDULES], yes_no=YES_NO,
                       today=page.local_now().date().isoformat())


def _supplier_saved(page: Page, seq: int | None) -> dict | None:
    e = _entry(page, seq, ("supplier_added", "supplier_registration_recorded"))
    if e is None:
        return None
    reg = e.get("registration") or {}
    partner = "yes" if e.get("authorized_trading_partner") else "no"
    said = (f"DEA registration to {reg.get('expires_on', '?')} for schedules {_schedules(reg.get('schedules', []))}; "
            f"authorized trading partner under DSCSA: {partner}.")
    if e["kind"] == "supplier_added":
        a = e.get("address") or {}
        text = (f"Supplier added at {_at(page, e)} by {_by(e)}: {e['name']}, {a.get('city', '')}, {a.get('state', '')}, "
                f"DEA {e['dea_number']}, {said}")
        return {"text": text, "seq": e["seq"]}
    sid = e["supplier_id"]
    prior = _earlier(page, ("supplier_added", "supplier_registration_recorded"), e["seq"],
                     lambda o: o.get("supplier_id") == sid)
    name = prior.get("name") if prior and prior.get("name") else next(
        (s["name"] for s in api_queries.suppliers(page.request.app.state.ledger, page.dea) if s["supplier_id"] == sid), sid)
    text = f"Registration recorded at {_at(page, e)} by {_by(e)} for {name}: {said}"
    if prior is not None:
        text += f" It supersedes what entry #{prior['seq']} recorded (that entry stays in the record)."
    return {"text": text, "seq": e["seq"], "prior_seq": prior["seq"] if prior else None}


@router.get("/ui/{dea}/suppliers", name="web_suppliers")
async def suppliers_page(request: Request, dea: Dea, saved: Saved = None) -> Response:
    """The registrant's suppliers with their DEA registration, the form to add one, and the form to
    record a supplier's renewed registration."""
    page = await open_page(request, dea, "suppliers")
    said = await run_in_threadpool(_supplier_saved, page, saved)
    return await run_in_threadpool(_suppliers_page, page, saved=said)


def _partner(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


def _supplier_post(page: Page, form: Form) -> Response:
    action = form.get("action", "")
    errors = Errors()
    ledger = page.request.app.state.ledger
    if action == "add":
        values: dict[str, Any] = {k: form.get(k, "") for k in SUPPLIER_FIELDS}
        values["schedules"] = form.all("schedules")
        values["add_key"] = form.text("form_key") or new_form_key()
        v = {k: values[k].strip() for k in SUPPLIER_FIELDS}
        _required(values, errors, {
            "name": "enter the supplier's name", "address-street": "enter the street address",
            "address-city": "enter the city", "address-state": "choose the state",
            "address-postal_code": "enter the ZIP code", "dea_number": "enter the supplier's DEA number",
            "registration_expires_on": "enter the day its DEA registration expires"})
        if v["dea_number"]:
            _parsed(errors, "dea_number", lambda: parse_dea_number(v["dea_number"]))
        if not values["schedules"]:
            errors.add("schedules", "tick the schedules its DEA registration lists")
        if _partner(v["authorized_trading_partner"]) is None:
            errors.add("authorized_trading_partner", "say whether it is an authorized trading partner (DSCSA)")
        if errors:
            return _suppliers_page(page, values=values, errors=errors, status=422)
        try:
            res = services.add_supplier(ledger, page.principal, AddSupplier(
                v["name"], AddressInput(v["address-street"], v["address-city"], v["address-state"],
                                        v["address-postal_code"]),
                v["dea_number"], v["registration_expires_on"], tuple(values["schedules"]),
                _partner(v["authorized_trading_partner"])), idempotency_key=values["add_key"])
        except LedgerError as exc:
            _service_error(errors, exc, {}, {*SUPPLIER_FIELDS, "schedules"})
            return _suppliers_page(page, values=values, errors=errors, status=exc.status)
        return _done(page, "suppliers", res)
    if action == "registration":
        values = {k: form.get(k, "") for k in REGISTRATION_FIELDS}
        values["reg-schedules"] = form.all("reg-schedules")
        values["reg_key"] = form.text("form_key") or new_form_key()
        v = {k: values[k].strip() for k in REGISTRATION_FIELDS}
        known = {s["supplier_id"] for s in api_queries.suppliers(ledger, page.dea)}
        if not v["supplier_id"]:
            errors.add("supplier_id", "pick the supplier")
        elif v["supplier_id"] not in known:
            errors.add("supplier_id", "that supplier is not on the list; pick one from it")
        _required(values, errors, {"reg-registration_expires_on": "enter the day the registration expires"})
        if not values["reg-schedules"]:
            errors.add("reg-schedules", "tick the schedules the registration lists")
        if _partner(v["reg-authorized_trading_partner"]) is None:
            errors.add("reg-authorized_trading_partner", "say whether it is an authorized trading partner (DSCSA)")
        if errors:
            return _suppliers_page(page, values=values, errors=errors, status=422)
        try:
            res = services.record_supplier_registration(ledger, page.principal, RecordSupplierRegistration(
                v["supplier_id"], v["reg-registration_expires_on"], tuple(values["reg-schedules"]),
                bool(_partner(v["reg-authorized_trading_partner"]))), idempotency_key=values["reg_key"])
        except LedgerError as exc:
            _service_error(errors, exc, REGISTRATION_NAMES, {*REGISTRATION_FIELDS, "reg-schedules"})
            return _suppliers_page(page, values=values, errors=errors, status=exc.status)
        return _done(page, "suppliers", res)
    errors.add("form", "send one of the page's two forms")
    return _suppliers_page(page, errors=errors, status=422)


@router.post("/ui/{dea}/suppliers", name="web_suppliers_post")
async def supplier_post(request: Request, dea: Dea) -> Response:
    return await _post(request, dea, "suppliers", _supplier_post)


# --- prescribers ----------------------------------------------------------------------------------

PRESCRIBER_FIELDS = ("name", "dea_number", "registration_state", "expires_on", "state_license_number",
                     "state_license_state", "staff_id")


def _staff_prescribers(page: Page) -> list[tuple[str, str]]:
    """Staff members holding the prescriber role, to pick when the prescriber works here."""
    return [(s["staff_id"], f"{s['printed_name']} ({s['staff_id']})")
            for s in api_queries.staff(page.request.app.state.ledger, page.dea, set()) if "prescriber" in s["roles"]]


def _prescribers_page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
                      saved: dict | None = None, renew: str | None = None) -> Response:
    rows = api_queries.prescribers(page.request.app.state.ledger, page.dea)
    for p in rows:
        p["schedule_words"] = _schedules(p["schedules"])
    state = page.location.get("state", "")
    fresh: dict[str, Any] = {"form_key": new_form_key(), "registration_state": state, "state_license_state": state,
                             "schedules": []}
    if values is None and renew is not None:  # "Record renewal": the prescriber's figures, to change what changed
        p = next((r for r in rows if r["dea_number"] == renew), None)
        if p is not None:
            fresh.update({k: p[k] or "" for k in PRESCRIBER_FIELDS}, schedules=list(p["schedules"]), expires_on="")
    return page.render("reference_prescribers.html", status=status, active="tasks", entry_links=bool(page.roles & ENTRY_READERS), prescribers=rows,
                       values={**fresh, **(values or {})}, errors=errors or Errors(), saved=saved, state_options=STATES,
                       schedules=[(c, SCHEDULE_WORDS[c]) for c in prescriber_rules.SCHEDULES],
                       staff=_staff_prescribers(page), listed={r["dea_number"] for r in rows})


def _prescriber_saved(page: Page, seq: int | None) -> dict | None:
    e = _entry(page, seq, ("prescriber_registered",))
    if e is None:
        return None
    prior = _earlier(page, ("prescriber_registered",), e["seq"], lambda o: o.get("dea_number") == e["dea_number"])
    verb = "renewed" if prior is not None else "registered"
    text = (f"Prescriber {verb} at {_at(page, e)} by {_by(e)}: {e['name']}, DEA {e['dea_number']} "
            f"({e['registration_state']}, schedules {_schedules(e.get('schedules', []))}), registration to "
            f"{e['expires_on']}, {e['state_license_state']} licence {e['state_license_number']}.")
    if prior is not None:
        text += (f" This registration supersedes the one recorded in entry #{prior['seq']} (to {prior['expires_on']}); "
                 "that entry stays in the record.")
    return {"text": text, "seq": e["seq"], "prior_seq": prior["seq"] if prior else None}


@router.get("/ui/{dea}/prescribers", name="web_prescribers")
async def prescribers_page(request: Request, dea: Dea, saved: Saved = None,
                           renew: Annotated[str | None, Query(pattern=DEA_PATTERN)] = None) -> Response:
    """Registered prescribers (DEA number, state, schedules, expiry) and the form to register one
    or record a renewal (``renew``: start from that prescriber's figures)."""
    page = await open_page(request, dea, "prescribers")
    said = await run_in_threadpool(_prescriber_saved, page, saved)
    return await run_in_threadpool(_prescribers_page, page, saved=said, renew=renew)


def _register_prescriber(page: Page, form: Form) -> Response:
    values: dict[str, Any] = {k: form.get(k, "") for k in PRESCRIBER_FIELDS}
    values["schedules"] = form.all("schedules")
    values["form_key"] = form.text("form_key") or new_form_key()
    v = {k: values[k].strip() for k in PRESCRIBER_FIELDS}
    errors = Errors()
    _required(values, errors, {
        "name": "enter the prescriber's name as printed on the registration",
        "dea_number": "enter the prescriber's DEA number", "registration_state": "choose the registration's state",
        "expires_on": "enter the day the DEA registration expires",
        "state_license_number": "enter the state licence number", "state_license_state": "choose the licence's state"})
    if v["dea_number"]:
        _parsed(errors, "dea_number", lambda: parse_dea_number(v["dea_number"]))
    if not values["schedules"]:
        errors.add("schedules", "tick the schedules the DEA registration lists")
    staff = dict(_staff_prescribers(page))
    if v["staff_id"] and v["staff_id"] not in staff:
        errors.add("staff_id", "pick the staff member from the list, or leave it at \"not on the staff\"")
    if errors:
        return _prescribers_page(page, values=values, errors=errors, status=422)
    try:
        res = services.register_prescriber(page.request.app.state.ledger, page.principal, RegisterPrescriber(
            v["name"], v["dea_number"], v["registration_state"], tuple(values["schedules"]), v["expires_on"],
            v["state_license_number"], v["state_license_state"], v["staff_id"] or None),
            idempotency_key=values["form_key"])
    except LedgerError as exc:
        _service_error(errors, exc, {}, {*PRESCRIBER_FIELDS, "schedules"})
        return _prescribers_page(page, values=values, errors=errors, status=exc.status)
    return _done(page, "prescribers", res)


@router.post("/ui/{dea}/prescribers", name="web_prescribers_post")
async def register_prescriber(request: Request, dea: Dea) -> Response:
    return await _post(request, dea, "prescribers", _register_prescriber)


# --- policies -------------------------------------------------------------------------------------

COUNT_WORDS = {"daily_opening": "every day at opening", "daily_close": "every day at closing",
               "each_shift": "at each change of shift", "weekly": "once a week"}
DOSAGE_WORDS = {"container": "a container (vial, device)", "ml": "a mL"}
PASSKEY_WORDS = {"witnessing": "every witness's, second counter's and approver's signature",
                 "destruction": "every signature on a destruction"}
DAY_WORDS = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday",
             "sat": "Saturday", "sun": "Sunday"}
#: What each policy value means, in the clinic's words, and the range the service allows
#: (ledger/services/reference.py ``set_policy``; tests/web/test_reference_pages.py checks the
#: service refuses just past each bound). The page shows them; the service decides.
POLICY_TERMS: dict[str, dict[str, Any]] = {
    "beyond_use_days": {"label": "Beyond-use days for an opened vial", "low": 1, "high": 28,
                        "range": "1 to 28 days (USP <797>: at most 28 days after first puncture)",
                        "meaning": "An opened multiple-dose vial may be drawn from for this many days after its "
                                   "first puncture; after that it must be discarded."},
    "late_entry_limit_hours": {"label": "Late entry after (hours)", "low": 1, "high": 24,
                               "range": "1 to 24 hours (21 CFR 1304.21: records are kept current)",
                               "meaning": "An entry typed more than this long after the event is a late entry: it "
                                          "needs a reason and raises a late-entry alert."},
    "variance_threshold_percent": {"label": "Audit variance flagged above (%)", "low": Decimal("0"),
                                   "high": Decimal("100"), "range": "0 to 100 %, to 0.01",
                                   "meaning": "The audit report flags a product whose stock differs from the "
                                              "book by more than this share."},
    "open_count_tolerance_ml": {"label": "Opened vial count tolerance (mL per vial)", "low": Decimal("0"),
                                "high": policy_rules.MAX_OPEN_COUNT_TOLERANCE_ML,
                                "range": f"0 to {policy_rules.MAX_OPEN_COUNT_TOLERANCE_ML} mL (0: counted exactly)",
                                "meaning": "A count of an opened vial may differ from the book by this much "
                                           "without opening a discrepancy (its content is read, not counted). "
                                           "Sealed vials are always counted exactly."},
    "count_schedule": {"label": "Counts are due", "range": ", ".join(COUNT_WORDS.values()),
                       "meaning": "When the two-person count is expected; a missed one raises a count-overdue alert."},
    "dosage_unit": {"label": "A dosage unit is", "range": ", ".join(DOSAGE_WORDS.values()),
                    "meaning": "What the 5 % limit on transfers to another practitioner counts in "
                               "(21 CFR 1307.11)."},
    "passkey_required_for": {"label": "Passkey required for", "range": "none, or either or both of: "
                             + "; ".join(PASSKEY_WORDS.values()),
                             "meaning": "Where a password key may not sign: the person confirms with a passkey "
                                        "(two factors)."},
    "clinic_hours": {"label": "Clinic hours", "range": "per weekday: opening and closing time, or closed",
                     "meaning": "Entries recorded outside these hours raise an outside-hours alert; counts due "
                                "at opening or closing follow them. None set: no hours are checked."},
}
#: A time box's value as a browser sends it (the service checks it is a time of day).
_HHMM = re.compile(r"[0-9]{2}:[0-9]{2}")
SCALAR_POLICY = ("beyond_use_days", "late_entry_limit_hours", "variance_threshold_percent", "open_count_tolerance_ml")


def _policy_now(page: Page) -> dict[str, Any]:
    return stock.policy(page.request.app.state.ledger, page.dea)


def _policy_shown(p: dict[str, Any]) -> list[dict[str, str]]:
    """The policy in force as rows: label, value in words, meaning, allowed range."""
    hours = "; ".join(f"{DAY_WORDS[d]} {p['clinic_hours'][d][0]}-{p['clinic_hours'][d][1]}"
                      for d in policy_rules.WEEKDAYS if d in p["clinic_hours"]) or "not set"
    shown = {
        "beyond_use_days": f"{p['beyond_use_days']} days", "late_entry_limit_hours": f"{p['late_entry_limit_hours']} hours",
        "variance_threshold_percent": f"{p['variance_threshold_percent']} %",
        "open_count_tolerance_ml": f"{p['open_count_tolerance_ml']} mL",
        "count_schedule": COUNT_WORDS.get(p["count_schedule"], p["count_schedule"]),
        "dosage_unit": DOSAGE_WORDS.get(p["dosage_unit"], p["dosage_unit"]),
        "passkey_required_for": "; ".join(PASSKEY_WORDS.get(s, s) for s in p["passkey_required_for"]) or "not required",
        "clinic_hours": hours,
    }
    return [{"key": k, "label": t["label"], "value": shown[k], "meaning": t["meaning"], "range": t["range"]}
            for k, t in POLICY_TERMS.items()]


def _policy_values(p: dict[str, Any]) -> dict[str, Any]:
    """The policy in force as the form's values (what the person then changes)."""
    values: dict[str, Any] = {k: str(p[k]) for k in SCALAR_POLICY}
    values.update(count_schedule=p["count_schedule"], dosage_unit=p["dosage_unit"],
                  passkey_required_for=list(p["passkey_required_for"]), reason="")
    for d in policy_rules.WEEKDAYS:
        span = p["clinic_hours"].get(d)
        values[f"hours-{d}-open"], values[f"hours-{d}-close"] = (span[0], span[1]) if span else ("", "")
    return values


def _policies_page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
                   saved: dict | None = None) -> Response:
    now = _policy_now(page)
    return page.render("reference_policies.html", status=status, active="tasks", entry_links=bool(page.roles & ENTRY_READERS), rows=_policy_shown(now),
                       set_seq=now.get("set_seq"),
                       values=values or {**_policy_values(now), "form_key": new_form_key()},
                       errors=errors or Errors(), saved=saved, terms=POLICY_TERMS,
                       count_schedules=[(k, COUNT_WORDS.get(k, k)) for k in policy_rules.COUNT_SCHEDULES],
                       dosage_units=[(k, DOSAGE_WORDS.get(k, k)) for k in policy_rules.DOSAGE_UNITS],
                       passkey_scopes=[(k, PASSKEY_WORDS.get(k, k)) for k in policy_rules.PASSKEY_SCOPES],
                       days=[(d, DAY_WORDS[d]) for d in policy_rules.WEEKDAYS])


def _entry_policy(e: dict[str, Any]) -> dict[str, Any]:
    """A ``policy_set`` entry as ``policy.as_dict`` shows a policy; fields added since (issues 17,
    20) take their defaults on entries recorded before them."""
    d = policy_rules.DEFAULT_POLICY
    return policy_rules.as_dict(policy_rules.Policy(
        beyond_use_days=e.get("beyond_use_days", d.beyond_use_days),
        late_entry_limit_hours=e.get("late_entry_limit_hours", d.late_entry_limit_hours),
        variance_threshold_percent=Decimal(e.get("variance_threshold_percent", d.variance_threshold_percent)),
        count_schedule=e.get("count_schedule", d.count_schedule),
        clinic_hours={k: (v[0], v[1]) for k, v in (e.get("clinic_hours") or {}).items()},
        dosage_unit=e.get("dosage_unit", d.dosage_unit),
        passkey_required_for=tuple(e.get("passkey_required_for") or ()),
        open_count_tolerance_ml=policy_rules.open_count_tolerance(e), set_seq=e.get("seq")))


def _policy_saved(page: Page, seq: int | None) -> dict | None:
    e = _entry(page, seq, ("policy_set",))
    if e is None:
        return None
    prior = _earlier(page, ("policy_set",), e["seq"], lambda o: True)
    before = _policy_shown(_entry_policy(prior) if prior else policy_rules.as_dict(policy_rules.DEFAULT_POLICY))
    after = _policy_shown(_entry_policy(e))
    changed = [f"{a['label'][:1].lower()}{a['label'][1:]}: {b['value']} → {a['value']}" for b, a in zip(before, after, strict=True)
               if a["value"] != b["value"]]
    what = "; ".join(changed) if changed else "no value changed (the same policy recorded again)"
    text = f"Policy set at {_at(page, e)} by {_by(e)}: {what}. Reason: {e.get('reason', '')}. It applies from now on."
    return {"text": text, "seq": e["seq"], "changed": changed}


@router.get("/ui/{dea}/policies", name="web_policies")
async def policies_page(request: Request, dea: Dea, saved: Saved = None) -> Response:
    """The policy in force, each value with its meaning and allowed range, and the form to set it."""
    page = await open_page(request, dea, "policies")
    said = await run_in_threadpool(_policy_saved, page, saved)
    return await run_in_threadpool(_policies_page, page, saved=said)


def _set_policy(page: Page, form: Form) -> Response:
    values: dict[str, Any] = {k: form.get(k, "").strip() for k in (*SCALAR_POLICY, "count_schedule", "dosage_unit")}
    values["passkey_required_for"] = form.all("passkey_required_for")
    values["reason"] = form.get("reason", "")
    values["form_key"] = form.text("form_key") or new_form_key()
    errors = Errors()
    numbers: dict[str, Any] = {}
    for name in ("beyond_use_days", "late_entry_limit_hours"):
        t = POLICY_TERMS[name]
        n = whole_number(values[name], digits=6)
        if n is None:
            errors.add(name, f"enter a whole number, {t['range']}")
        elif not t["low"] <= n <= t["high"]:
            errors.add(name, f"must be {t['range']}")
        numbers[name] = n
    for name, parse in (("variance_threshold_percent", parse_amount), ("open_count_tolerance_ml", parse_volume)):
        t = POLICY_TERMS[name]
        if not values[name]:
            errors.add(name, f"enter a number, {t['range']}")
            continue
        d = _parsed(errors, name, lambda name=name, parse=parse: parse(values[name], field=name, allow_zero=True))
        if d is not None and not t["low"] <= d <= t["high"]:
            errors.add(name, f"must be {t['range']}")
    if values["count_schedule"] not in policy_rules.COUNT_SCHEDULES:
        errors.add("count_schedule", "choose when counts are due")
    if values["dosage_unit"] not in policy_rules.DOSAGE_UNITS:
        errors.add("dosage_unit", "choose what a dosage unit is")
    if any(s not in policy_rules.PASSKEY_SCOPES for s in values["passkey_required_for"]):
        errors.add("passkey_required_for", "tick only the choices shown")
    hours: dict[str, tuple[str, str]] = {}
    for d in policy_rules.WEEKDAYS:
        o, c = form.text(f"hours-{d}-open"), form.text(f"hours-{d}-close")
        values[f"hours-{d}-open"], values[f"hours-{d}-close"] = o, c
        malformed = False
        for name, t, word in ((f"hours-{d}-open", o, "opens"), (f"hours-{d}-close", c, "closes")):
            if t and not _HHMM.fullmatch(t):
                errors.add(name, f"{DAY_WORDS[d]} {word}: enter a time as HH:MM (24-hour)")
                malformed = True
        if malformed:
            continue
        if o and not c:
            errors.add(f"hours-{d}-close", f"{DAY_WORDS[d]} closes: give the closing time too, or neither if closed")
        elif c and not o:
            errors.add(f"hours-{d}-open", f"{DAY_WORDS[d]} opens: give the opening time too, or neither if closed")
        elif o and c:
            hours[d] = (o, c)
    if not " ".join(values["reason"].split()):
        errors.add("reason", "say why the policy changes (e.g. \"medical director's memo of 2026-12-01\")")
    if errors:
        return _policies_page(page, values=values, errors=errors, status=422)
    try:
        # Decimal values go to the service as the typed text (never a float), as over the API.
        res = services.set_policy(page.request.app.state.ledger, page.principal, SetPolicy(
            numbers["beyond_use_days"], numbers["late_entry_limit_hours"], values["variance_threshold_percent"],
            values["count_schedule"], hours, values["dosage_unit"], values["reason"],
            tuple(values["passkey_required_for"]), values["open_count_tolerance_ml"]),
            idempotency_key=values["form_key"])
    except LedgerError as exc:
        field = exc.field or ""
        name = f"hours-{field.split('.', 1)[1]}-open" if field.startswith("clinic_hours.") else field
        known = {*values, *(f"hours-{d}-open" for d in policy_rules.WEEKDAYS)}
        errors.add(name if name in known else "form", exc.reason)
        return _policies_page(page, values=values, errors=errors, status=exc.status)
    return _done(page, "policies", res)


@router.post("/ui/{dea}/policies", name="web_policies_post")
async def set_policy(request: Request, dea: Dea) -> Response:
    return await _post(request, dea, "policies", _set_policy)
