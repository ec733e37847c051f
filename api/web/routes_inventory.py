"""Inventory pages (issue 20): take an inventory before a witness who signs on the same screen.

A biennial or other inventory (21 CFR 1304.11(c)-(e)) lists the vials on the book by their short
id and product; for each, the person taking it says how it was found: sealed, opened (with an
estimate of the mL left) or not found. The service compares that with the book at that instant
and every difference opens a discrepancy (``services.take_inventory``). An initial inventory
creates the book: lines of product, lot, expiry and containers (an opened vial: its mL and the
day it was first punctured). Afterwards a plain confirmation names the discrepancies opened.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
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
from ledger.domain.commands import InventoryItemInput, TakeInventory
from ledger.domain.errors import LedgerError
from ledger.domain.projections import ON_HAND
from ledger.services import stock

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Dea = Annotated[str, Path(pattern=DEA_PATTERN)]

TYPES = (("biennial", "Biennial (every two years)"), ("other", "Other (newly controlled substance, change of ownership)"),
         ("initial", "Initial (the first: creates the book)"))
FOUND = (("sealed", "Found sealed"), ("opened", "Found opened"), ("missing", "Not found"))
TAKEN_AT = (("opening_of_business", "Opening of business"), ("close_of_business", "Close of business"))
#: Blank lines an initial inventory page offers at first ("More lines" adds as many; one entry).
INITIAL_LINES = 6


def _natural(vial_id: str) -> list:
    """V12-2 before V12-10: the order of the shelf's labels, not of their text."""
    return [int(t) if k % 2 else t for k, t in enumerate(re.split(r"(\d+)", vial_id))]


def _book(page: Page) -> list[dict[str, Any]]:
    """The vials on the book, by product then id: what a biennial or other inventory names."""
    prods = {p["ndc_key"]: p for p in api_queries.products(page.request.app.state.ledger, page.dea)}
    rows = [v for v in stock.vials(page.request.app.state.ledger, page.dea) if v["state"] in ON_HAND]
    out = []
    for v in sorted(rows, key=lambda v: (v["ndc_key"], _natural(v["vial_id"]))):
        p = prods.get(v["ndc_key"], {})
        out.append({"vial_id": v["vial_id"], "ndc": p.get("ndc", v["ndc_key"]), "name": p.get("name", ""),
                    "lot": v["lot"], "expiry": v["expiry"], "container_ml": p.get("container_ml", "")})
    return out


def _form_page(page: Page, kind: str, *, values: dict | None = None, errors: Errors | None = None,
               status: int = 200, lines: int = INITIAL_LINES) -> Response:
    prods = api_queries.products(page.request.app.state.ledger, page.dea)
    values = values or {"occurred_at": local_input(page.local_now(), page.tz), "form_key": new_form_key(),
                        "taken_at": "close_of_business" if kind != "initial" else "opening_of_business"}
    return page.render("inventory.html", status=status, active="inventory", kind=kind, types=TYPES,
                       type_label=dict(TYPES)[kind], found_options=FOUND, taken_options=TAKEN_AT,
                       vials=_book(page) if kind != "initial" else [], line_count=lines,
                       product_options=[(p["ndc"], f"{p['name']} · NDC {p['ndc']}") for p in prods],
                       values=values, errors=errors or Errors())


def _default_kind(page: Page) -> str:
    return "biennial" if stock.vials(page.request.app.state.ledger, page.dea) else "initial"


@router.get("/ui/{dea}/inventories/new", name="web_inventory")
async def inventory_form(request: Request, dea: Dea, type: str | None = None) -> Response:  # noqa: A002
    page = await open_page(request, dea, "inventory")
    kind = type if type in dict(TYPES) else await run_in_threadpool(_default_kind, page)
    return await run_in_threadpool(_form_page, page, kind)


def _items(form: Form, kind: str, errors: Errors) -> tuple[list[InventoryItemInput], list[str]]:
    """The command's items from the form, and for each the input row it came from (errors of
    ``items[k]`` go next to that row's fields)."""
    items: list[InventoryItemInput] = []
    rows: list[str] = []
    if kind == "initial":
        n = min(whole_number(form.get("line_count", "0")) or 0, 100)
        for i in range(n):
            f = f"lines-{i}"
            if not form.text(f"{f}-ndc"):
                continue  # a blank line
            is_sealed = form.text(f"{f}-state") != "opened"
            containers = whole_number(form.text(f"{f}-containers") or "1")
            if containers is None:
                errors.add(f"{f}-containers", "enter a whole number of containers")
                containers = 1
            items.append(InventoryItemInput(
                form.text(f"{f}-ndc"), form.text(f"{f}-lot"), form.text(f"{f}-expiry"), is_sealed,
                None if is_sealed else (form.text(f"{f}-ml") or None), containers,
                first_punctured_on=None if is_sealed else (form.text(f"{f}-first_punctured_on") or None)))
            rows.append(f)
        return items, rows
    n = whole_number(form.get("vial_count", ""))
    if n is None or n > 2000:
        errors.add("form", "the page was sent incomplete (its list of vials); open it again")
        n = 0
    for i in range(n):
        f = f"vials-{i}"
        found = form.get(f"{f}-found", "")
        if found not in ("sealed", "opened", "missing"):
            errors.add(f"{f}-found", "say how this vial was found: sealed, opened or not found")
            continue
        if found != "opened" and form.get(f"{f}-ml", ""):
            errors.add(f"{f}-ml", "give the mL left only for a vial found opened (a sealed one is counted exactly)")
            continue
        if found == "missing":
            continue  # not listed: the comparison with the book names it as not found
        items.append(InventoryItemInput(form.text(f"{f}-ndc"), "", "", found == "sealed",
                                        None if found == "sealed" else (form.text(f"{f}-ml") or None),
                                        vial_id=form.text(f"{f}-id")))
        rows.append(f)
    return items, rows


#: Service item fields -> the page's input names.
_ITEM_INPUTS = {"vial_id": "found", "sealed": "found", "ml": "ml", "ndc": "ndc", "lot": "lot", "expiry": "expiry",
                "containers": "containers", "first_punctured_on": "first_punctured_on"}


def _error_input(exc: LedgerError, rows: list[str]) -> tuple[str, str]:
    field = exc.field or ""
    if field.startswith("items["):
        k, _, rest = field[len("items["):].partition("].")
        if k.isdigit() and int(k) < len(rows):
            return f"{rows[int(k)]}-{_ITEM_INPUTS.get(rest, 'found')}", exc.reason
    return error_of(exc)


def _take(page: Page, form: Form) -> Response:
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.services import request_fields

    kind = form.get("inventory_type", "")
    bad_kind = kind not in dict(TYPES)
    if bad_kind:
        kind = "biennial"
    values: dict[str, str] = {k: v for k, v in form.items() if not k.endswith("_password") and k != "csrf_token"}
    keep_witness(values, form, "witness")
    errors = Errors()
    if bad_kind:
        errors.add("form", "the page was sent with an unknown kind of inventory; open it again")
    occurred = parse_local_time(form.get("occurred_at", ""), page.tz, field="occurred_at", errors=errors)
    items, rows = _items(form, kind, errors)
    lines = min(whole_number(form.get("line_count", "0")) or INITIAL_LINES, 100)
    if kind == "initial" and form.text("action") == "more":
        return _form_page(page, kind, values=values, lines=min(lines + INITIAL_LINES, 100))
    cmd = TakeInventory(kind, form.text("taken_at"), occurred, tuple(items), late_reason=form.optional("late_reason"),
                        reason=form.optional("reason") if kind == "other" else None)
    key = form.text("form_key") or None
    witness = None
    if not errors:
        witness = witness_from_form(page, form, request_fields(cmd), errors, prefix="witness", idempotency_key=key)
    if errors or witness is None:
        return _form_page(page, kind, values=values, errors=errors, status=422, lines=lines)
    try:
        res = services.take_inventory(page.request.app.state.ledger, page.principal, cmd,
                                      witness=witness.principal, idempotency_key=key)
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)  # issue 17: a witness with a passkey
        if status is None:
            errors.add(*_error_input(exc, rows))
            status = exc.status
        return _form_page(page, kind, values=values, errors=errors, status=status, lines=lines)
    return RedirectResponse(f"{location_path(page.dea)}inventories/{res['entries'][0]['seq']}", status_code=303)


@router.post("/ui/{dea}/inventories/new", name="web_inventory_post")
async def inventory_post(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "inventory")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_take, page, form)


def _done_page(page: Page, seq: int) -> Response:
    row = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    e = json.loads(row["canonical"]) if row is not None else None
    if e is None or e.get("kind") != "inventory_taken":
        return page.render("error.html", status=404, title="Not an inventory", message=f"entry {seq} is not an inventory at this location")
    lines = e.get("lines") or []
    return page.render("inventory.html", active="inventory", done=e, lines=lines, kind=e["inventory_type"],
                       type_label=dict(TYPES).get(e["inventory_type"], e["inventory_type"]),
                       discrepancy_ids=[ln["discrepancy_id"] for ln in lines if ln.get("discrepancy_id")],
                       signers=[(s["meaning"], s["printed_name"]) for s in e["signatures"]])


@router.get("/ui/{dea}/inventories/{seq}", name="web_inventory_done")
async def inventory_done(request: Request, dea: Dea, seq: Annotated[int, Path(ge=0, le=10**15)]) -> Response:
    page = await open_page(request, dea, "inventory")
    return await run_in_threadpool(_done_page, page, seq)
