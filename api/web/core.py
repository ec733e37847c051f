"""What every page shares: the route class that turns errors into pages, the page session, role
checks, rendering, and the mapping of a service's field names to form inputs.

Pages parse a form, authenticate from the session cookie, call the same ledger service or auth
function the API calls, and render. No business rule lives here or in the templates: the
services validate (and name the bad field), and a page shows their answer next to that field.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from api.http.auth import Authenticator, Session, require_role
from api.http.problems import AccessDenied, Unauthorized
from api.web import queries
from api.web.forms import Errors
from api.web.gs1 import short_vial_labels as _short_vial_labels
from api.web.security import (
    SESSION_COOKIE,
    CsrfRejected,
    add_security_headers,
    clear_cookie,
    csrf_for_token,
    location_path,
)
from api.web.settings import WebSettings
from ledger.domain.errors import LedgerError
from ledger.domain.principal import Principal
from ledger.domain.principal import Role as R

HERE = Path(__file__).resolve().parent
log = logging.getLogger("csledger.web")
templates = Jinja2Templates(directory=str(HERE / "templates"))
# issue 21: short vial names for pick lists ("carton …00C001 · vial 08"), not the whole GS1 id
templates.env.filters["vial_labels"] = _short_vial_labels
DEA_PATTERN = r"^[A-Z]{2}[0-9]{7}$"

N, PH, PR, M, C, A, AD = (R.NURSE.value, R.PHARMACIST.value, R.PRESCRIBER.value, R.MANAGER.value,
                          R.COMPLIANCE_OFFICER.value, R.AUDITOR.value, R.ADMINISTRATOR.value)

#: Who may open which page (the services check their own roles again when a form is sent).
#: An empty set means any login at the location.
PAGE_ROLES: dict[str, frozenset[str]] = {
    "home": frozenset(),
    "infusion": frozenset({N, PR}),
    "count": frozenset({N, PH, M}),
    "discrepancies": frozenset({N, PH, M, C}),
    "resolve_discrepancy": frozenset({M}),
    "receive": frozenset({N, PH, M}),
    "inventory": frozenset({N, PH, M}),  # issue 20: receiving.INVENTORY_TAKERS
    "destroy": frozenset({N, PH, PR, M}),
    "transfer": frozenset({PH, M}),
    "loss": frozenset({M, C}),
    "stock": frozenset({N, PH, PR, M, C, A}),
    "alerts": frozenset({M, C}),
    "reports": frozenset({PH, M, C, A}),
    "status": frozenset(),
    # issue 17: one's own signatures and signing credentials, for every login
    "me": frozenset(),
    # issue 21: beyond-use labels and the downtime paper forms, for those who draw and prepare
    "labels": frozenset({N, PH, M}),
    "downtime": frozenset({N, PH, M}),
    # issue 20: the stored documents entries cite, for those who read them over the API (get_document)
    "documents": frozenset({N, PH, M, C, A}),
    # issue 21: the overview charts (stock over time, weekly use, discrepancies by age, deadlines)
    "overview": frozenset({M, C, PH, A}),
    # issue 21: every task of the API on a page, with the API's roles (api/http/roles.py)
    "tasks": frozenset(),  # the index of the pages below, each shown to the roles that may use it
    "staff": frozenset({AD, M}),  # enrol, roles, sign-in throttle, sessions (set password: AD only)
    "products": frozenset({AD, M, PH}),
    "suppliers": frozenset({AD, M, PH}),
    "prescribers": frozenset({AD, M}),
    "policies": frozenset({AD, M}),
    "patients": frozenset({M, N, PH, PR}),
    "waste": frozenset({M, N, PH, PR}),  # a waste recorded after its infusion
    "breakage": frozenset({M, N, PH, PR}),
    "returns": frozenset({M, PH}),
    "corrections": frozenset({M, N, PH, PR}),
    "quarantine": frozenset({M, N, PH, PR}),
    "release_quarantine": frozenset({M, PH}),
    "document_upload": frozenset({AD, C, M, N, PH}),
    "esketamine": frozenset({N, PH, PR}),
    "preparations": frozenset({N, PH, PR}),
    "infuse_preparation": frozenset({N, PR}),
    "waste_preparation": frozenset({M, N, PH, PR}),
    "packages": frozenset({M, N, PH}),
    "backfill": frozenset({M, N, PH, PR}),  # late entries from the downtime paper forms
}
#: The navigation, in the order of the clinic's day.
NAV = [("home", "Today", ""), ("infusion", "Record an infusion", "infusions/new"),
       ("count", "Count", "counts/new"), ("receive", "Receive stock", "receipts/new"),
       ("inventory", "Inventory", "inventories/new"),
       ("stock", "Stock", "stock"), ("destroy", "Destroy", "destructions/new"),
       ("transfer", "Transfer", "transfers/new"), ("loss", "Theft or loss", "losses/new"),
       ("discrepancies", "Discrepancies", "discrepancies"),
       ("alerts", "Alerts", "alerts"), ("overview", "Overview", "overview"), ("reports", "Reports", "reports"),
       ("downtime", "Downtime forms", "downtime"), ("tasks", "More tasks", "tasks"),
       ("status", "Ledger status", "status"),
       ("me_signatures", "My signatures", "me/signatures")]  # "My signing key": beside the name (base.html)


#: The "More tasks" page (issue 21): every task page not in the navigation, grouped, in the
#: clinic's words. (group, page key, label, href under /ui/<DEA>/); each is listed only to the
#: roles of its page key.
TASK_INDEX: list[tuple[str, str, str, str]] = [
    ("Patients and doses", "patients", "Patients: register, look up, change details", "patients"),
    ("Patients and doses", "waste", "Record waste after the infusion", "wastes/new"),
    ("Patients and doses", "esketamine", "Spravato (esketamine) session", "esketamine-sessions/new"),
    ("Patients and doses", "preparations", "Preparations: bags and syringes", "preparations"),
    ("Stock", "packages", "Open a package (carton)", "packages"),
    ("Stock", "breakage", "Breakage or spill", "breakages/new"),
    ("Stock", "returns", "Return to supplier", "returns/new"),
    ("Stock", "quarantine", "Quarantine and release", "quarantines"),
    ("Records", "corrections", "Correct an entry", "corrections/new"),
    ("Records", "document_upload", "Upload a document", "documents/new"),
    ("Records", "backfill", "Backfill from downtime paper", "backfill"),
    ("Set-up", "staff", "Staff and roles", "staff"),
    ("Set-up", "products", "Products", "products"),
    ("Set-up", "suppliers", "Suppliers", "suppliers"),
    ("Set-up", "prescribers", "Prescribers", "prescribers"),
    ("Set-up", "policies", "Policies", "policies"),
]


#: Navigation keys that are not page keys of their own ("me" pages open for any login).
NAV_PAGES = {"me_signatures": "me"}


class LoginNeeded(Exception):
    def __init__(self, dea: str, message: str):
        self.dea, self.message = dea, message


class PasswordChangeNeeded(Exception):
    def __init__(self, dea: str):
        self.dea = dea


def web_settings(request: Request) -> WebSettings:
    st = request.app.state
    if getattr(st, "web_settings", None) is None:
        st.web_settings = WebSettings()
    return st.web_settings


def auth_of(request: Request) -> Authenticator:
    return request.app.state.auth


def _render_error(request: Request, status: int, title: str, message: str) -> Response:
    r = templates.TemplateResponse(request, "error.html", {"title": title, "message": message, "status": status,
                                                           "dea": request.path_params.get("dea")},
                                   status_code=status)
    return add_security_headers(r)


class PageRoute(APIRoute):
    """Errors become pages: no session -> the login page; a missing role or a bad CSRF token ->
    a 403 page; anything else the services refuse and the page did not catch -> an error page."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginNeeded as exc:
                response = RedirectResponse(f"{location_path(exc.dea)}login?m={_LOGIN_MESSAGES.get(exc.message, 'login')}",
                                            status_code=303)
                clear_cookie(response, SESSION_COOKIE, path=location_path(exc.dea),
                             secure=web_settings(request).cookie_secure)
            except PasswordChangeNeeded as exc:
                response = RedirectResponse(f"{location_path(exc.dea)}password", status_code=303)
            except RequestValidationError as exc:
                # A path or query parameter that does not fit (counts/X1, entries/abc, a DEA
                # number in lower case): FastAPI refuses it before the page runs. It is the
                # address that is wrong, not the server (this was a 500 page).
                errs = exc.errors()
                in_path = any(tuple(e.get("loc", ()))[:1] == ("path",) for e in errs)
                where = "; ".join(f"{e.get('loc', ('', '?'))[-1]}: {e.get('msg', 'not valid')}" for e in errs[:3])
                response = _render_error(request, 404 if in_path else 422, "Not found" if in_path else "Could not do that",
                                         f"this address is not valid ({where})")
            except CsrfRejected as exc:
                response = _render_error(request, 403, "Form refused", exc.reason)
            except AccessDenied as exc:
                response = _render_error(request, 403, "Not allowed", exc.reason)
            except LedgerError as exc:
                if exc.status >= 500:
                    log.error("page error %s on %s", type(exc).__name__, self.path)
                    response = _render_error(request, 500, "Something went wrong",
                                             "The server could not complete this. Nothing was recorded unless the "
                                             "record shows it; try again or tell your manager.")
                else:
                    response = _render_error(request, exc.status, "Could not do that", exc.reason)
            except Exception:
                log.exception("unexpected page error on %s", self.path)  # no bodies: they may hold health data
                response = _render_error(request, 500, "Something went wrong",
                                         "The server could not complete this. Nothing was recorded unless the record "
                                         "shows it; try again or tell your manager.")
            return add_security_headers(response)

        return page


_LOGIN_MESSAGES = {"token-expired": "expired", "token-revoked": "ended", "unauthorized": "login"}
LOGIN_NOTICES = {
    "expired": "Your session timed out. Log in again.",
    "ended": "Your session was ended. Log in again.",
    "login": "Log in to continue.",
    "out": "You are logged out.",
    "password": "Password changed. Log in with the new password.",
}


@dataclass
class Page:
    """One request's page context: who, where, and their session."""

    request: Request
    dea: str
    token: str
    session: Session
    location: dict[str, Any]
    #: The witnesses established on this request's form (``api.web.witness``), by form prefix.
    witnesses: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def principal(self) -> Principal:
        return self.session.principal

    @property
    def roles(self) -> frozenset[str]:
        return self.session.roles

    @property
    def csrf(self) -> str:
        return csrf_for_token(self.token)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.location["time_zone"])

    def may(self, page: str) -> bool:
        allowed = PAGE_ROLES[NAV_PAGES.get(page, page)]
        return not allowed or bool(self.roles & allowed)

    def require(self, page: str) -> Principal:
        return require_role(self.session, self.dea, PAGE_ROLES[page])

    def local_now(self) -> datetime:
        return auth_of(self.request).now().astimezone(self.tz)

    def render(self, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        settings = self.request.app.state.settings
        base = {
            "dea": self.dea, "location": self.location, "me": self.principal, "roles": sorted(self.roles),
            "csrf": self.csrf, "nav": [(key, label, href) for key, label, href in NAV if self.may(key)],
            "idle_seconds": settings.session_idle_minutes * 60, "errors": Errors(), "values": {},
        }
        base.update(ctx)
        return templates.TemplateResponse(self.request, template, base, status_code=status)


async def open_page(request: Request, dea: str, page: str, *, password_change_ok: bool = False) -> Page:
    """The page session from the cookie (or LoginNeeded), checked for this location and page."""
    token = request.cookies.get(SESSION_COOKIE)
    auth = auth_of(request)
    try:
        session = await run_in_threadpool(auth.session, token)
    except Unauthorized as exc:
        raise LoginNeeded(dea, exc.type) from None
    if session.principal.registrant != dea:
        raise LoginNeeded(dea, "unauthorized")
    request.state.staff_id = session.principal.staff_id  # for the access log
    try:
        require_role(session, dea, PAGE_ROLES[page], password_change_ok=password_change_ok)
    except AccessDenied as exc:
        if exc.type == "password-change-required":
            raise PasswordChangeNeeded(dea) from None
        raise
    location = await run_in_threadpool(queries.location, request.app.state.ledger, dea)
    if location is None:
        raise LoginNeeded(dea, "unauthorized")
    return Page(request, dea, token, session, location)


_INDEX = re.compile(r"\[(\d+)\]\.?")


def input_name(field: str | None) -> str:
    """A service's field name as the form input's: ``lines[0].ndc`` -> ``lines-0-ndc``."""
    if not field:
        return "form"
    return _INDEX.sub(lambda m: f"-{m.group(1)}-", field).rstrip("-").replace(".", "-")


def error_of(exc: LedgerError, names: dict[str, str] | None = None) -> tuple[str, str]:
    """(input name, message) for a service error; ``names`` maps service fields to inputs."""
    field = exc.field or "form"
    if names and field in names:
        return names[field], exc.reason
    return input_name(field), exc.reason


def new_form_key() -> str:
    """An idempotency key per form: sending the same form twice records it once."""
    return "web-" + secrets.token_urlsafe(18)


def parse_local_time(value: str, tz: zoneinfo.ZoneInfo, *, field: str, errors: Errors) -> datetime | None:
    """A ``datetime-local`` input in the location's time zone, as an aware time."""
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        errors.add(field, "enter a date and time")
        return None
    if len(value.strip()) <= 10:  # a date alone ("2026-11-25") was read as midnight, a time nobody entered
        errors.add(field, "enter the time too")
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt


def local_input(dt: datetime, tz: zoneinfo.ZoneInfo) -> str:
    return dt.astimezone(tz).strftime("%Y-%m-%dT%H:%M")
