"""Clinic-floor pages for stock leaving the registrant: destruction with two witnesses (Form 41),
transfer to another practitioner, theft or loss (Form 106).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

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
from api.web.routes_clinic import Dea
from api.web.security import check_session_csrf
from ledger import services
from ledger.domain.errors import LedgerError
from ledger.domain.form106 import IN_TRANSIT  # issue 20

router = APIRouter(route_class=PageRoute, include_in_schema=False)


DESTROY_FIELDS = ("method", "place", "reason", "occurred_at", "late_reason", "form_key",
                  "witness1_username", "witness2_username")


def _destroy_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200) -> Response:
    vials = queries.usable_vials(page.request.app.state.ledger, page.dea, page.local_now().date())
    vials = [v for v in vials if v["state"] != "quarantined"]
    return page.render("destroy.html", status=status, active="destroy", values=values, errors=errors or Errors(),
                       vials=vials)


@router.get("/ui/{dea}/destructions/new", name="web_destroy")
async def destroy_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "destroy")
    values = {"form_key": new_form_key(), "occurred_at": local_input(page.local_now(), page.tz),
              "place": page.location["name"], "method": "chemical digestion (Rx Destroyer), non-retrievable"}
    return await run_in_threadpool(_destroy_page, page, values=values)


def _destroy(page: Page, form: Form) -> Response:
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.domain.commands import DestroyStock
    from ledger.services import request_fields

    values: dict[str, Any] = {k: form.get(k, "") for k in DESTROY_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "witness1", "witness2")
    chosen = [v for v in form.all("vial_ids") if v]
    values["vial_ids"] = chosen
    errors = Errors()
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    if not chosen:
        errors.add("vial_ids", "tick the vials destroyed")
    if errors:
        return _destroy_page(page, values=values, errors=errors, status=422)
    cmd = DestroyStock(tuple(chosen), values["method"], values["place"], values["reason"], occurred,
                       late_reason=form.optional("late_reason"))
    request = request_fields(cmd)
    w1 = witness_from_form(page, form, request, errors, prefix="witness1", idempotency_key=values["form_key"] + "-1")
    w2 = witness_from_form(page, form, request, errors, prefix="witness2", idempotency_key=values["form_key"] + "-2")
    if w1 is None or w2 is None:
        return _destroy_page(page, values=values, errors=errors, status=422)
    try:
        res = services.destroy_stock(page.request.app.state.ledger, page.principal, cmd,
                                     witnesses=[w1.principal, w2.principal], idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)  # issue 17: a witness confirms with a passkey
        if status is not None:
            return _destroy_page(page, values=values, errors=errors, status=status)
        name, msg = error_of(exc, {"witnesses": "witness2_username", "witnesses-0-": "witness1_username",
                                   "vial_ids": "vial_ids"})
        if name.startswith("witnesses-"):
            name = "witness1_username" if name.startswith("witnesses-0") else "witness2_username"
        if name.startswith("vial_ids-"):
            name = "vial_ids"
        errors.add(name, msg)
        return _destroy_page(page, values=values, errors=errors, status=exc.status)
    from api.web.routes_pages import saved_redirect

    return saved_redirect(page, res)


@router.post("/ui/{dea}/destructions/new", name="web_destroy_post")
async def destroy(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "destroy")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_destroy, page, form)


TRANSFER_FIELDS = ("receiver_dea_number", "receiver_name", "street", "city", "state", "postal_code",
                   "invoice_number", "occurred_at", "late_reason", "form_key", "witness_username",
                   "receiver_registration_expires_on", "receiver_schedules")  # issue 19: the receiver's registration


LOSS_FIELDS = ("discovered_at", "loss_type", "police_notified", "police_department", "police_report_number",
               "losses_past_24_months", "purchase_value_usd", "covers_seqs", "form_key", "witness_username",
               # issue 20: the rest of Form 106
               "narrative", "corrective_measures", "other_explanation", "contact_name", "contact_phone")


def _vial_choices(page: Page) -> list[dict[str, Any]]:
    """The vials a form may pick, with their mL left: the book, so the read is recorded (a blind
    count lists its counters' reads)."""
    ledger = page.request.app.state.ledger
    note_stock_read(page.request, ledger, page.principal, "destruction, transfer or loss form")
    return queries.usable_vials(ledger, page.dea, page.local_now().date())


def _transfer_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200) -> Response:
    return page.render("transfer.html", status=status, active="transfer", values=values, errors=errors or Errors(),
                       vials=[v for v in _vial_choices(page) if v["state"] == "sealed"])


@router.get("/ui/{dea}/transfers/new", name="web_transfer")
async def transfer_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "transfer")
    values = {"form_key": new_form_key(), "occurred_at": local_input(page.local_now(), page.tz)}
    return await run_in_threadpool(_transfer_page, page, values=values)


def _transfer(page: Page, form: Form) -> Response:
    from api.web.witness import keep_witness, passkey_outcome
    from ledger.domain.commands import AddressInput, TransferStock

    values: dict[str, Any] = {k: form.get(k, "") for k in TRANSFER_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "witness")
    values["vial_ids"] = [v for v in form.all("vial_ids") if v]
    errors = Errors()
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    if errors:
        return _transfer_page(page, values=values, errors=errors, status=422)
    # Issue 19: the receiver's registration, as on its certificate: expiry and schedules ("3N 4 5").
    schedules = tuple(x for x in values["receiver_schedules"].replace(",", " ").split() if x) or None
    cmd = TransferStock(tuple(values["vial_ids"]), values["receiver_dea_number"], values["receiver_name"],
                        AddressInput(values["street"], values["city"], values["state"], values["postal_code"]),
                        values["invoice_number"], occurred, late_reason=form.optional("late_reason"),
                        receiver_registration_expires_on=form.optional("receiver_registration_expires_on"),
                        receiver_schedules=schedules)
    # Stock leaves the registrant: a second person checks it against the invoice and signs here.
    from api.web.witness import witness_from_form
    from ledger.services import request_fields

    witness = witness_from_form(page, form, request_fields(cmd), errors, idempotency_key=values["form_key"])
    if witness is None:
        return _transfer_page(page, values=values, errors=errors, status=422)
    try:
        res = services.transfer_stock(page.request.app.state.ledger, page.principal, cmd, witness=witness.principal,
                                      idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)  # issue 17: the second person uses a passkey
        if status is not None:
            return _transfer_page(page, values=values, errors=errors, status=status)
        name, _msg = error_of(exc)
        name = name.replace("receiver_address-", "")
        if name.startswith("vial_ids"):
            name = "vial_ids"
        if name.startswith("receiver_schedules"):
            name = "receiver_schedules"
        if name == "witness":
            name = "witness_username"
        errors.add(name, exc.reason)
        return _transfer_page(page, values=values, errors=errors, status=exc.status)
    from api.web.routes_pages import saved_redirect

    return saved_redirect(page, res)


@router.post("/ui/{dea}/transfers/new", name="web_transfer_post")
async def transfer(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "transfer")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_transfer, page, form)


def _loss_page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200) -> Response:
    # issue 20: a loss in transit is the supplier's to report (21 CFR 1301.74(c)): not offered here
    return page.render("loss.html", status=status, active="loss", values=values, errors=errors or Errors(),
                       vials=_vial_choices(page), loss_types=[(t, t.replace("_", " ")) for t in services.LOSS_TYPES
                                                              if t != IN_TRANSIT])


@router.get("/ui/{dea}/losses/new", name="web_loss")
async def loss_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "loss")
    values = {"form_key": new_form_key(), "discovered_at": local_input(page.local_now(), page.tz),
              "losses_past_24_months": "0", "purchase_value_usd": "",
              "contact_name": page.principal.printed_name}  # issue 20: the reporter, unless they change it
    return await run_in_threadpool(_loss_page, page, values=values)


def _loss(page: Page, form: Form) -> Response:
    from api.web.witness import keep_witness, passkey_outcome
    from ledger.domain.commands import LostVialInput, ReportTheftOrLoss

    values: dict[str, Any] = {k: form.get(k, "") for k in LOSS_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "witness")
    values["vial_ids"] = [v for v in form.all("vial_ids") if v]
    errors = Errors()
    discovered = parse_local_time(values["discovered_at"], page.tz, field="discovered_at", errors=errors)
    past = whole_number(values["losses_past_24_months"].strip())
    if past is None:
        errors.add("losses_past_24_months", "enter a whole number (0 if none)")
    covers = [whole_number(c) for c in values["covers_seqs"].replace(",", " ").split() if c]
    if any(c is None for c in covers):
        errors.add("covers_seqs", "entry numbers, separated by spaces")
    if values["police_notified"] not in ("yes", "no"):  # anything else was read as "no"
        errors.add("police_notified", "choose yes or no")
    if not values["purchase_value_usd"].strip():  # was recorded as 0.00 though the field is required
        errors.add("purchase_value_usd", "enter the purchase value (0.00 if none)")
    if errors:
        return _loss_page(page, values=values, errors=errors, status=422)
    cmd = ReportTheftOrLoss(discovered, values["loss_type"], values["police_notified"] == "yes", past,
                            values["purchase_value_usd"].strip(),
                            lost=tuple(LostVialInput(v) for v in values["vial_ids"]),
                            covers_seqs=tuple(c for c in covers if c is not None),
                            police_department=form.optional("police_department"),
                            police_report_number=form.optional("police_report_number"),
                            # issue 20: the service says which are required (and refuses an
                            # explanation for a type other than "other")
                            narrative=form.optional("narrative"),
                            corrective_measures=form.optional("corrective_measures"),
                            other_explanation=form.optional("other_explanation"),
                            contact_name=form.optional("contact_name"), contact_phone=form.optional("contact_phone"))
    # issue 15: vials taken off the book need a second person, who signs on this screen
    witness = None
    if cmd.lost and (values["witness_username"] or form.get("witness_password", "")):
        from api.web.witness import witness_from_form
        from ledger.services import request_fields

        witness = witness_from_form(page, form, request_fields(cmd), errors, idempotency_key=values["form_key"])
        if witness is None:
            return _loss_page(page, values=values, errors=errors, status=422)
    try:
        res = services.report_theft_or_loss(page.request.app.state.ledger, page.principal, cmd,
                                            witness=witness.principal if witness else None,
                                            idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)  # issue 17: the second person uses a passkey
        if status is not None:
            return _loss_page(page, values=values, errors=errors, status=status)
        name, _msg = error_of(exc, {"lost": "vial_ids"})
        if name.startswith("lost-"):
            name = "vial_ids"
        if name.startswith("covers_seqs"):
            name = "covers_seqs"
        if name == "witness":
            name = "witness_username"
        errors.add(name, exc.reason)
        return _loss_page(page, values=values, errors=errors, status=exc.status)
    from api.web.routes_pages import saved_redirect

    return saved_redirect(page, res)


@router.post("/ui/{dea}/losses/new", name="web_loss_post")
async def loss(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "loss")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_loss, page, form)
