"""Stock events on pages (issue 21): a waste recorded after its infusion, a breakage or spill, a
return to the supplier, quarantine and its release, and the witnessed opening of a sealed package.

Each page calls the same service with the same command as its API route (``api/http/
routes_clinical.py``, ``routes_packages.py``); the services decide. A page only picks from what the
book holds (infusions still unreconciled, vials on hand, suppliers, sealed packages), checks the
whole form at once so every mistake shows beside its field, asks the witness once the rest is
right (``api.web.witness``), and after saving says what was recorded in the clinic's words and
local time, from the entry (post/redirect/get: the address carries the entry's number only).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.http.routes_stock import note_stock_read
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
from api.web.forms import Errors, Form, read_form, whole_number
from api.web.gs1 import short_vial_labels
from api.web.readable import clock_time
from api.web.routes_clinic import WASTE_METHODS, Dea
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.domain.quantities import norm
from ledger.storage.store import projection_tables

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Saved = Annotated[int | None, Query(ge=0, le=2**62)]
WITNESS_FIELDS = ("witness_username", "witness_password", "witness_totp")
ON_HAND = ("sealed", "open", "quarantined")


# --- shared ------------------------------------------------------------------------------------


def _ledger(page: Page):
    return page.request.app.state.ledger


def _vials(page: Page, why: str) -> list[dict[str, Any]]:
    """The vials on hand with mL left, as the pick lists show them: that is the book, so the read
    is recorded (a blind count lists its counters' reads)."""
    note_stock_read(page.request, _ledger(page), page.principal, why)
    return [v for v in queries.usable_vials(_ledger(page), page.dea, page.local_now().date())
            if v["state"] in ON_HAND]


CARTON = "carton:"


def package_labels(ids: list[str]) -> dict[str, str]:
    """Short names of packages (cartons) for a list: the carton's serial tail ("serial …000001"),
    or csledger's package number ("P27-1"); never called a vial."""
    return {k: v.removeprefix("vial ") for k, v in short_vial_labels([{"vial_id": i} for i in ids]).items()}


def cartons(vials: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(loose vials, sealed cartons) of a pick list: a unit still sealed in its carton moves only
    with the whole carton (the services refuse part of one), so the page offers the carton once,
    picked as ``carton:<package id>``, instead of each of its units."""
    loose, by_pkg = [], {}
    for v in vials:
        if v.get("packaged") and v.get("package_id"):
            c = by_pkg.setdefault(v["package_id"], {**v, "vial_id": CARTON + v["package_id"], "units": [],
                                                    "ml_left": Decimal("0.00")})
            c["units"].append(v["vial_id"])
            c["ml_left"] += Decimal(str(v["ml_left"]))
        else:
            loose.append(v)
    labels = package_labels(list(by_pkg))
    out = [{**c, "label": labels.get(p, p), "ml_left": str(norm(c["ml_left"]))} for p, c in by_pkg.items()]
    return loose, out


def unit_ids(chosen: list[str], vials: list[dict[str, Any]]) -> list[str]:
    """The vial ids a pick list's ticks name: a carton's ticks become its units on the list (an
    unknown carton stays as it was sent, for the service to refuse by name)."""
    units = {c["vial_id"]: c["units"] for c in cartons(vials)[1]}
    out: list[str] = []
    for v in chosen:
        out.extend(units.get(v, [v[len(CARTON):]] if v.startswith(CARTON) else [v]))
    return out


def _entry(page: Page, seq: int | None, *kinds: str) -> dict[str, Any] | None:
    """Entry ``seq`` if it is of ``kinds`` and the person signed in signed it (else None: the page
    shows the form only; the entry page has its own rule for who may read an entry)."""
    if seq is None:
        return None
    e = api_queries.entry(_ledger(page), page.dea, seq)
    obj = json.loads(e["canonical"]) if e else {}
    if obj.get("kind") not in kinds or not any(s.get("staff_id") == page.principal.staff_id
                                               for s in obj.get("signatures", [])):
        return None
    return obj


def _witness_of(e: dict[str, Any]) -> str | None:
    return next((s.get("printed_name") for s in e.get("signatures", []) if s.get("meaning") == "witnessed"), None)


def _when(page: Page, e: dict[str, Any]) -> str:
    return clock_time(e.get("occurred_at", ""), page.tz, page.local_now().date())


def _names(ids: list[str]) -> str:
    labels = short_vial_labels([{"vial_id": i} for i in ids])
    return ", ".join(labels.get(i, i) for i in ids)


def _saved(page: Page, path: str, res: dict[str, Any]) -> Response:
    """Post/redirect/get to the page, which shows the confirmation of the form's (first) entry."""
    return RedirectResponse(f"{location_path(page.dea)}{path}?saved={res['entries'][0]['seq']}", status_code=303)


def _witness_ready(form: Form, errors: Errors, prefix: str = "witness") -> None:
    """The witness is there (their password is checked once the rest of the form is right)."""
    from api.web.witness import uses_passkey

    if not form.text(f"{prefix}_username"):
        errors.add(f"{prefix}_username", "the witness enters their own username")
    if not uses_passkey(form, prefix) and not form.get(f"{prefix}_password", "") and \
            not form.text(f"{prefix}_assertion"):
        errors.add(f"{prefix}_password", "the witness enters their own password")


def _run(page: Page, form: Form, values: dict[str, Any], errors: Errors, cmd: Any, call, show, *,
         names: dict[str, str] | None = None, fix=None, witness: bool = True) -> Response | dict[str, Any]:
    """Authenticate the witness (once the rest is valid), call the service, and map a refusal to
    the field it names. Returns the service's answer, or the page shown again."""
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.services import request_fields

    keep_witness(values, form, "witness")
    w = None
    if witness:
        w = witness_from_form(page, form, request_fields(cmd), errors, idempotency_key=values["form_key"])
        if w is None:
            return show(page, values=values, errors=errors, status=422)
    try:
        return call(_ledger(page), page.principal, cmd, **({"witness": w.principal} if w else {}),
                    idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)  # issue 17: the witness confirms with a passkey
        if status is not None:
            return show(page, values=values, errors=errors, status=status)
        name, msg = error_of(exc, {"witness": "witness_username", **(names or {})})
        errors.add(fix(name) if fix else name, msg)
        return show(page, values=values, errors=errors, status=exc.status)


def _used(page: Page, key: str) -> bool:
    """Was this form key used already (the same form sent twice: a double tap, a reload)? Then the
    page's checks against the book as it is now (an infusion reconciled, a package opened, by that
    very form) are skipped and the service answers: the first result again, or a refusal."""
    return queries.form_key_response(_ledger(page), page.dea, key) is not None


def _start(page: Page, form: Form, fields: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {k: form.get(k, "") for k in fields}
    values["form_key"] = values.get("form_key") or new_form_key()
    return values


def _post(page_key: str, worker):
    async def handler(request: Request, dea: Dea) -> Response:
        page = await open_page(request, dea, page_key)
        form = await read_form(request)
        check_session_csrf(request, form, page.token)
        return await run_in_threadpool(worker, page, form)
    return handler


# --- waste after the infusion ------------------------------------------------------------------

WASTE_FIELDS = ("administration_id", "ml", "method", "occurred_at", "late_reason", "form_key")


def unreconciled_infusions(page: Page) -> list[dict[str, Any]]:
    """The location's infusions with mL drawn but neither given nor wasted (drawn - given - wasted
    > 0: the administrations projection's ``unreconciled`` status, as the alerts and the
    administrations report compute it), newest first, with the remainder and the product. Chart
    numbers only: no patient name is read."""
    rows = queries.unreconciled_administrations(_ledger(page), page.dea)
    staff = {s["staff_id"]: s["printed_name"] for s in api_queries.staff(_ledger(page), page.dea, set())}
    today = page.local_now().date()
    out = []
    for r in rows:
        drawn, given, wasted = (Decimal(str(r[k])) for k in ("ml_drawn", "ml_given", "ml_wasted"))
        left = drawn - given - wasted
        if left <= 0:
            continue
        out.append({"administration_id": r["administration_id"], "seq": r["seq"], "patient_id": r["patient_id"],
                    "product": r["name"], "remainder": str(norm(left)), "drawn": str(norm(drawn)),
                    "given": str(norm(given)), "wasted": str(norm(wasted)),
                    "when": clock_time(r["occurred_at"], page.tz, today),
                    "by": staff.get(r["performed_by"], "?")})
    return out


def _waste_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200,
                result: dict | None = None) -> Response:
    return page.render("stock_events_waste.html", status=status, active="tasks", values=values,
                       errors=errors or Errors(), infusions=unreconciled_infusions(page),
                       methods=WASTE_METHODS, result=result)


def _waste_result(page: Page, seq: int | None) -> dict[str, Any] | None:
    e = _entry(page, seq, "dose_wasted")
    if e is None:
        return None
    a = projection_tables["administrations"]
    with _ledger(page).reading() as c:
        row = c.execute(sa.select(a).where(a.c.registrant == page.dea,
                                           a.c.administration_id == e.get("administration_id"))).mappings().first()
    text = (f"Waste recorded: {e.get('ml')} mL ({e.get('mg')} mg) of {e.get('product', {}).get('name', '?')} "
            f"from infusion {e.get('administration_id')} (entry #{e.get('administration_seq')}), "
            f"{e.get('method')}, witnessed by {_witness_of(e) or '?'} at {_when(page, e)}.")
    left = norm(Decimal(str(row["ml_drawn"])) - Decimal(str(row["ml_given"])) - Decimal(str(row["ml_wasted"]))) \
        if row else None
    more = ("The infusion is reconciled: drawn = given + wasted." if left == 0 else
            f"The infusion stays unreconciled: {left} mL is still neither given nor wasted." if left else None)
    return {"seq": e["seq"], "text": text, "more": more, "late": e.get("late_reason")}


@router.get("/ui/{dea}/wastes/new", name="web_waste")
async def waste_form(request: Request, dea: Dea, saved: Saved = None) -> Response:
    page = await open_page(request, dea, "waste")
    values = {"form_key": new_form_key(), "occurred_at": local_input(page.local_now(), page.tz),
              "method": WASTE_METHODS[0][0]}

    def show() -> Response:
        return _waste_page(page, values=values, result=_waste_result(page, saved))
    return await run_in_threadpool(show)


def _waste(page: Page, form: Form) -> Response:
    from ledger.domain.commands import RecordWaste
    from ledger.domain.quantities import parse_volume

    values = _start(page, form, WASTE_FIELDS)
    errors = Errors()
    infusions = {i["administration_id"]: i for i in unreconciled_infusions(page)}
    picked = infusions.get(values["administration_id"])
    if picked is None:
        errors.add("administration_id", "pick the infusion whose remainder is wasted" if not
                   values["administration_id"] else "that infusion has nothing left to waste; pick another")
    ml = None
    try:
        ml = parse_volume(values["ml"].strip(), field="ml")
    except InvalidInput as exc:
        errors.add("ml", "enter the mL wasted" if not values["ml"].strip() else exc.reason)
    if ml is not None and picked is not None and ml > Decimal(picked["remainder"]):
        # the service refuses it too (naming ml); said here so the witness is not asked first
        errors.add("ml", f"only {picked['remainder']} mL of infusion {picked['administration_id']} is neither given "
                         f"nor wasted; {ml} mL cannot be wasted")
    if values["method"] not in dict(WASTE_METHODS):  # the page offers these; no other text is recorded
        errors.add("method", "choose how it was wasted")
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    _witness_ready(form, errors)
    if errors and not (_used(page, values["form_key"]) and occurred is not None and ml is not None):
        from api.web.witness import keep_witness

        keep_witness(values, form, "witness")
        return _waste_page(page, values=values, errors=errors, status=422)
    errors = Errors()
    cmd = RecordWaste(values["administration_id"], values["ml"].strip(), values["method"], occurred,
                      late_reason=form.optional("late_reason"))
    res = _run(page, form, values, errors, cmd, services.record_waste, _waste_page)
    return res if isinstance(res, Response) else _saved(page, "wastes/new", res)


router.add_api_route("/ui/{dea}/wastes/new", _post("waste", _waste), methods=["POST"], name="web_waste_post")


# --- breakage or spill ---------------------------------------------------------------------------

BREAKAGE_FIELDS = ("what", "description", "recoverable", "occurred_at", "late_reason", "form_key")
WHAT = [("breakage", "Breakage (a vial broke or cracked)"), ("spill", "Spill (liquid spilled from a vial)")]
RECOVERABLE = [("no", "No: the drug is gone; its mL leave the book now"),
               ("yes", "Yes: it can be collected; the vials are set aside until destroyed (Form 41)")]


def _breakage_vials(page: Page) -> list[dict[str, Any]]:
    # a unit still sealed in its carton is not handled alone (open the package first)
    return [v for v in _vials(page, "breakage form") if not v.get("packaged")]


def _breakage_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200,
                   result: dict | None = None) -> Response:
    vials = _breakage_vials(page)
    for i, v in enumerate(vials):
        v["row"] = i
    return page.render("stock_events_breakage.html", status=status, active="tasks", values=values,
                       errors=errors or Errors(), vials=vials, what=WHAT, recoverable=RECOVERABLE, result=result)


def _breakage_result(page: Page, seq: int | None) -> dict[str, Any] | None:
    e = _entry(page, seq, "breakage_recorded")
    if e is None:
        return None
    lines = e.get("lines") or []
    total = sum((Decimal(str(ln.get("ml", "0"))) for ln in lines), Decimal("0.00"))
    products = sorted({ln.get("product", {}).get("name", "?") for ln in lines})
    what = "Spill" if e.get("what") == "spill" else "Breakage"
    text = (f"{what} recorded: {total} mL of {', '.join(products)}, {'vials' if len(lines) > 1 else 'vial'} "
            f"{_names([ln.get('vial_id', '?') for ln in lines])}, witnessed by {_witness_of(e) or '?'} "
            f"at {_when(page, e)}.")
    more = ("Recoverable: the vials are set aside (never drawn from) until they are destroyed before two "
            "witnesses (Form 41)." if e.get("recoverable") else "Not recoverable: the mL left the book.")
    if e.get("after_counts"):
        more += (" Recorded after count " + ", ".join(f"#{s}" for s in e["after_counts"]) +
                 " of the same product: it explains that count's difference after the fact.")
    return {"seq": e["seq"], "text": text, "more": more, "late": e.get("late_reason")}


@router.get("/ui/{dea}/breakages/new", name="web_breakage")
async def breakage_form(request: Request, dea: Dea, saved: Saved = None) -> Response:
    page = await open_page(request, dea, "breakage")
    values = {"form_key": new_form_key(), "occurred_at": local_input(page.local_now(), page.tz), "ticked": [],
              "ml": {}}

    def show() -> Response:
        return _breakage_page(page, values=values, result=_breakage_result(page, saved))
    return await run_in_threadpool(show)


def _breakage(page: Page, form: Form) -> Response:
    from ledger.domain.commands import BreakageLineInput, RecordBreakage
    from ledger.domain.quantities import parse_volume

    values = _start(page, form, BREAKAGE_FIELDS)
    errors = Errors()
    vials = _breakage_vials(page)
    row_of = {v["vial_id"]: i for i, v in enumerate(vials)}
    ticked: list[str] = []
    ml_of: dict[str, str] = {}
    for i in range(min(len(vials) + 50, 1000)):  # the rows the form was drawn with (the list may have moved)
        vid = form.text(f"lines-{i}-id")
        if not vid:
            continue
        ml_of[vid] = form.text(f"lines-{i}-ml")
        if form.get(f"lines-{i}-use", ""):
            ticked.append(vid)
    values.update(ticked=ticked, ml=ml_of)
    if values["what"] not in dict(WHAT):
        errors.add("what", "choose breakage or spill")
    if values["recoverable"] not in dict(RECOVERABLE):
        errors.add("recoverable", "choose whether the drug can be collected")
    if not values["description"].strip():
        errors.add("description", "say what happened (where, how, what was left)")
    if not ticked:
        errors.add("lines", "tick the vials broken or spilled from")
    lines = []
    stale = False
    for vid in ticked:
        text = ml_of.get(vid, "")
        lines.append(BreakageLineInput(vid, text or None))
        if vid not in row_of:
            stale = True
            errors.add("lines", f"vial {vid} is no longer on hand here; reload the page")
            continue
        if text:
            try:
                parse_volume(text, field="ml")
            except InvalidInput as exc:
                errors.add(f"lines-{row_of[vid]}-ml", exc.reason)
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    _witness_ready(form, errors)
    if errors and not (stale and set(errors) == {"lines"} and _used(page, values["form_key"])):
        from api.web.witness import keep_witness

        keep_witness(values, form, "witness")
        return _breakage_page(page, values=values, errors=errors, status=422)
    cmd = RecordBreakage(values["what"], values["description"], values["recoverable"] == "yes", tuple(lines),
                         occurred, late_reason=form.optional("late_reason"))

    def fix(name: str) -> str:
        # lines-<k>-ml: the k-th ticked vial's mL box, on its row of the list
        parts = name.split("-")
        if parts[0] == "lines" and len(parts) >= 3 and parts[1].isdigit() and int(parts[1]) < len(ticked):
            row = row_of.get(ticked[int(parts[1])])
            if row is not None:
                return f"lines-{row}-ml" if parts[2] == "ml" else f"lines-{row}-use"
            return "lines"
        return name
    res = _run(page, form, values, Errors(), cmd, services.record_breakage, _breakage_page, fix=fix)
    return res if isinstance(res, Response) else _saved(page, "breakages/new", res)


router.add_api_route("/ui/{dea}/breakages/new", _post("breakage", _breakage), methods=["POST"],
                     name="web_breakage_post")


# --- return to the supplier ----------------------------------------------------------------------

RETURN_FIELDS = ("supplier_id", "invoice_number", "occurred_at", "late_reason", "form_key")


def _suppliers(page: Page) -> list[dict[str, Any]]:
    return api_queries.suppliers(_ledger(page), page.dea)


def _return_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200,
                 result: dict | None = None) -> Response:
    sups = _suppliers(page)
    options = [(s["supplier_id"], f"{s['name']} · DEA {s['dea_number']} · {s['address']['city']}, "
                                  f"{s['address']['state']}") for s in sups]
    loose, packs = cartons(_vials(page, "return form"))
    return page.render("stock_events_return.html", status=status, active="tasks", values=values,
                       errors=errors or Errors(), vials=loose, cartons=packs, suppliers=options, result=result)


def _return_result(page: Page, seq: int | None) -> dict[str, Any] | None:
    e = _entry(page, seq, "stock_returned")
    if e is None:
        return None
    vials = e.get("vials") or []
    total = sum((Decimal(str(v.get("ml", "0"))) for v in vials), Decimal("0.00"))
    products = sorted({v.get("product", {}).get("name", "?") for v in vials})
    text = (f"Return recorded: {len(vials)} {'vials' if len(vials) != 1 else 'vial'} ({total} mL of "
            f"{', '.join(products)}) to {e.get('recipient_name')} (DEA {e.get('recipient_dea_number')}) on invoice "
            f"{e.get('invoice_number')}, checked by {_witness_of(e) or '?'} at {_when(page, e)}.")
    return {"seq": e["seq"], "text": text, "more": "Vials: " + _names([v.get("vial_id", "?") for v in vials]) + ".",
            "late": e.get("late_reason")}


@router.get("/ui/{dea}/returns/new", name="web_return")
async def return_form(request: Request, dea: Dea, saved: Saved = None) -> Response:
    page = await open_page(request, dea, "returns")
    values: dict[str, Any] = {"form_key": new_form_key(), "occurred_at": local_input(page.local_now(), page.tz)}

    def show() -> Response:
        sups = _suppliers(page)
        if len(sups) == 1:
            values["supplier_id"] = sups[0]["supplier_id"]
        return _return_page(page, values=values, result=_return_result(page, saved))
    return await run_in_threadpool(show)


def _return(page: Page, form: Form) -> Response:
    from ledger.domain.commands import AddressInput, ReturnStock

    values = _start(page, form, RETURN_FIELDS)
    values["vial_ids"] = [v for v in form.all("vial_ids") if v]
    errors = Errors()
    sup = next((s for s in _suppliers(page) if s["supplier_id"] == values["supplier_id"]), None)
    if sup is None:
        errors.add("supplier_id", "pick the supplier the vials go back to")
    if not values["vial_ids"]:
        errors.add("vial_ids", "tick the vials returned")
    if not values["invoice_number"].strip():
        errors.add("invoice_number", "enter the number of the return invoice")
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    _witness_ready(form, errors)
    if errors or sup is None:
        from api.web.witness import keep_witness

        keep_witness(values, form, "witness")
        return _return_page(page, values=values, errors=errors, status=422)
    # Schedule III: a return goes on an invoice (DEA Form 222 is for Schedule II only). The supplier's
    # name, address and DEA number come from its record; the service checks its recorded registration.
    a = sup["address"]
    cmd = ReturnStock(tuple(unit_ids(values["vial_ids"], _vials(page, "return form"))), "supplier", sup["name"],
                      AddressInput(a["street"], a["city"], a["state"], a["postal_code"]), sup["dea_number"],
                      values["invoice_number"].strip(), occurred, late_reason=form.optional("late_reason"))

    def fix(name: str) -> str:
        if name.startswith("vial_ids"):
            return "vial_ids"
        if name.startswith("recipient_"):
            return "supplier_id"  # the supplier's record (registration, DSCSA status) says no
        return name
    res = _run(page, form, values, errors, cmd, services.return_stock, _return_page, fix=fix)
    return res if isinstance(res, Response) else _saved(page, "returns/new", res)


router.add_api_route("/ui/{dea}/returns/new", _post("returns", _return), methods=["POST"], name="web_return_post")


# --- quarantine and release ------------------------------------------------------------------------


def _quarantine_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200,
                     result: dict | None = None) -> Response:
    vials = _vials(page, "quarantine page")
    free, free_cartons = cartons([v for v in vials if v["state"] != "quarantined"])
    held, held_cartons = cartons([v for v in vials if v["state"] == "quarantined"])
    return page.render("stock_events_quarantine.html", status=status, active="tasks", values=values,
                       errors=errors or Errors(), result=result, free=free, free_cartons=free_cartons,
                       held=held, held_cartons=held_cartons, may_release=page.may("release_quarantine"))


def _quarantine_result(page: Page, seq: int | None) -> dict[str, Any] | None:
    e = _entry(page, seq, "stock_quarantined", "quarantine_released")
    if e is None:
        return None
    ids = list(e.get("vial_ids") or [])
    n = f"{len(ids)} {'vials' if len(ids) != 1 else 'vial'}"
    if e["kind"] == "stock_quarantined":
        text = f"Quarantined: {n} ({_names(ids)}) at {_when(page, e)}, because {e.get('reason')}."
        more = "Nothing can be drawn from them until a pharmacist or manager releases them."
    else:
        text = f"Released from quarantine: {n} ({_names(ids)}) at {_when(page, e)}, because {e.get('reason')}."
        more = "They can be used again."
    return {"seq": e["seq"], "text": text, "more": more, "late": None}


@router.get("/ui/{dea}/quarantines", name="web_quarantine")
async def quarantine_page(request: Request, dea: Dea, saved: Saved = None) -> Response:
    page = await open_page(request, dea, "quarantine")
    values = {"form_key": new_form_key(), "release_key": new_form_key()}

    def show() -> Response:
        return _quarantine_page(page, values=values, result=_quarantine_result(page, saved))
    return await run_in_threadpool(show)


def _hold(page: Page, form: Form, *, release: bool) -> Response:
    from ledger.domain.commands import QuarantineStock, ReleaseQuarantine

    p = "release_" if release else ""
    values: dict[str, Any] = {"form_key": form.get("form_key", "") or new_form_key(),
                              "release_key": form.get("release_key", "") or new_form_key(),
                              f"{p}reason": form.get(f"{p}reason", ""),
                              f"{p}vial_ids": [v for v in form.all(f"{p}vial_ids") if v]}
    errors = Errors()
    if not values[f"{p}vial_ids"]:
        errors.add(f"{p}vial_ids", "tick the vials to release" if release else "tick the vials to set aside")
    if not values[f"{p}reason"].strip():
        errors.add(f"{p}reason", "say why they are released (what was checked)" if release
                   else "say why (recall notice, damaged seal, suspect product)")
    if errors:
        return _quarantine_page(page, values=values, errors=errors, status=422)
    key = values["release_key"] if release else values["form_key"]
    ids = unit_ids(values[f"{p}vial_ids"], _vials(page, "quarantine page"))
    cmd = (ReleaseQuarantine if release else QuarantineStock)(tuple(ids), values[f"{p}reason"])
    call = services.release_quarantine if release else services.quarantine_stock
    try:
        res = call(_ledger(page), page.principal, cmd, idempotency_key=key)
    except LedgerError as exc:
        name, msg = error_of(exc)
        errors.add(f"{p}vial_ids" if name.startswith("vial_ids") else f"{p}{name}", msg)
        return _quarantine_page(page, values=values, errors=errors, status=exc.status)
    return _saved(page, "quarantines", res)


router.add_api_route("/ui/{dea}/quarantines", _post("quarantine", lambda page, form: _hold(page, form, release=False)),
                     methods=["POST"], name="web_quarantine_post")
router.add_api_route("/ui/{dea}/quarantines/release",
                     _post("release_quarantine", lambda page, form: _hold(page, form, release=True)),
                     methods=["POST"], name="web_release_quarantine_post")


# --- opening a sealed package --------------------------------------------------------------------

PACKAGE_FIELDS = ("package_id", "units_found", "occurred_at", "late_reason", "form_key")


def _sealed_packages(page: Page) -> list[dict[str, Any]]:
    note_stock_read(page.request, _ledger(page), page.principal, "package opening form")
    prods = {p["ndc_key"]: p for p in api_queries.products(_ledger(page), page.dea)}
    rows = api_queries.packages(_ledger(page), page.dea, sealed=True)
    labels = package_labels([r["package_id"] for r in rows])
    return [{**r, "label": labels.get(r["package_id"], r["package_id"]),
             "name": prods.get(r["ndc_key"], {}).get("name", r["ndc_key"]),
             "unit": prods.get(r["ndc_key"], {}).get("unit_kind", "vial").replace("_", " ")} for r in rows]


def _package_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200,
                  result: dict | None = None) -> Response:
    return page.render("stock_events_packages.html", status=status, active="tasks", values=values,
                       errors=errors or Errors(), packages=_sealed_packages(page), result=result)


def _package_result(page: Page, seq: int | None) -> dict[str, Any] | None:
    e = _entry(page, seq, "package_opened")
    if e is None:
        return None
    found, missing = e.get("units_found") or [], e.get("units_missing") or []
    per = e.get("units_per_package", len(found) + len(missing))
    label = package_labels([e.get("package_id", "?")]).get(e.get("package_id", "?"), "?")
    text = (f"Package {label} of {e.get('product', {}).get('name', '?')} (lot {e.get('lot')}) opened: {len(found)} of "
            f"{per} units found, witnessed by {_witness_of(e) or '?'} at {_when(page, e)}.")
    more = ("The units found can be used now." if not missing else
            f"{len(missing)} {'units' if len(missing) != 1 else 'unit'} not found ({_names(missing)}): discrepancy "
            f"{e.get('discrepancy_id')} is open for a manager who neither opened nor witnessed to resolve; those "
            "units stay on the book, unusable, until then.")
    return {"seq": e["seq"], "text": text, "more": more, "late": e.get("late_reason")}


@router.get("/ui/{dea}/packages", name="web_packages")
async def packages_page(request: Request, dea: Dea, saved: Saved = None) -> Response:
    page = await open_page(request, dea, "packages")
    values = {"form_key": new_form_key(), "occurred_at": local_input(page.local_now(), page.tz)}

    def show() -> Response:
        return _package_page(page, values=values, result=_package_result(page, saved))
    return await run_in_threadpool(show)


def _open_package(page: Page, form: Form) -> Response:
    from ledger.domain.commands import OpenPackage

    values = _start(page, form, PACKAGE_FIELDS)
    errors = Errors()
    pkgs = {p["package_id"]: p for p in _sealed_packages(page)}
    pkg = pkgs.get(values["package_id"])
    if pkg is None:
        errors.add("package_id", "pick the package opened" if not values["package_id"] else
                   "that package is no longer sealed on the book here; pick another")
    found = whole_number(values["units_found"].strip(), digits=4)
    if found is None:
        errors.add("units_found", "enter the units found in it, a whole number (0 if empty)")
    elif pkg is not None and found > pkg["units_per_package"]:
        errors.add("units_found", f"the package was received holding {pkg['units_per_package']} units; count again "
                                  "(units not received are not on the book: quarantine any extra and ask the "
                                  "supplier)")
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    _witness_ready(form, errors)
    if errors and not (set(errors) == {"package_id"} and values["package_id"] and _used(page, values["form_key"])):
        from api.web.witness import keep_witness

        keep_witness(values, form, "witness")
        return _package_page(page, values=values, errors=errors, status=422)
    errors = Errors()
    cmd = OpenPackage(values["package_id"], found, occurred, late_reason=form.optional("late_reason"))
    res = _run(page, form, values, errors, cmd, services.open_package, _package_page)
    return res if isinstance(res, Response) else _saved(page, "packages", res)


router.add_api_route("/ui/{dea}/packages", _post("packages", _open_package), methods=["POST"],
                     name="web_packages_post")
