"""Clinical pages: alerts with their evidence (issue 7), and, with the clinical services of
issue 3, infusions with their witness, blind counts and discrepancies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from ..api import queries as api_queries
from ..ledger.errors import LedgerError
from . import integrations
from .core import DEA_PATTERN, Page, PageRoute, error_of, new_form_key, open_page
from .forms import Errors, Form, read_form
from .security import check_session_csrf, location_path

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]


# --- alerts -------------------------------------------------------------------------------------


def _staff_names(page: Page) -> dict[str, str]:
    return {s["staff_id"]: s["printed_name"]
            for s in api_queries.staff(page.request.app.state.ledger, page.dea, set())}


def _alerts_page(page: Page, *, show: str, errors: Errors | None = None, values: dict | None = None,
                 status: int = 200, done: str | None = None) -> Response:
    svc = integrations.alert_service()
    if svc is None:
        return page.render("alerts.html", status=status, available=False, active="alerts")
    from ..ledger import alerts as rules

    rows = svc.list_alerts(page.request.app.state.ledger, page.dea, status=None if show == "all" else "open")
    return page.render("alerts.html", status=status, available=True, alerts=rows, show=show, names=_staff_names(page),
                       categories=[(c, c.replace("_", " ")) for c in rules.CATEGORIES], errors=errors or Errors(),
                       values=values or {}, done=done, form_key=new_form_key(), active="alerts")


@router.get("/ui/{dea}/alerts", name="web_alerts")
async def alerts(request: Request, dea: Dea, show: str = "open", done: str | None = None) -> Response:
    page = await open_page(request, dea, "alerts")
    return await run_in_threadpool(_alerts_page, page, show=show if show in ("open", "all") else "open",
                                   done=done if done and done.startswith("AL") and done[2:].isdigit() else None)


def _close_alert(page: Page, form: Form) -> Response:
    svc = integrations.alert_service()
    if svc is None:
        return _alerts_page(page, show="open", status=404)
    alert_id = form.text("alert_id")
    values = {"alert_id": alert_id, "category": form.text("category"), "explanation": form.get("explanation", ""),
              "action": form.text("action")}
    fn = svc.acknowledge_alert if values["action"] == "acknowledge" else svc.resolve_alert
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


# --- pages waiting for the clinical services (issue 3) ----------------------------------------

def _clinical():
    """The clinical services module, or None while issue 3 has not landed."""
    return integrations.module("clinical")


@router.get("/ui/{dea}/infusions/new", name="web_infusion")
async def infusion_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "infusion")
    return page.render("pending.html", active="infusion", title="Record an infusion")


@router.get("/ui/{dea}/counts/new", name="web_count")
async def count_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "count")
    return page.render("pending.html", active="count", title="Count")


@router.get("/ui/{dea}/discrepancies", name="web_discrepancies")
async def discrepancies(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "discrepancies")
    return page.render("pending.html", active="discrepancies", title="Discrepancies")
