"""Choose a location, log in (with the TOTP code where the role needs one), change a temporary
password, log out. Logins go through ``Authenticator.login``, exactly as the API's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http.auth import wait_words
from api.http.problems import SignInThrottled, Unauthorized
from api.web import queries
from api.web.core import (
    DEA_PATTERN,
    LOGIN_NOTICES,
    LoginNeeded,
    PageRoute,
    auth_of,
    open_page,
    templates,
    web_settings,
)
from api.web.forms import Errors, read_form
from api.web.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    check_login_csrf,
    check_session_csrf,
    clear_cookie,
    location_path,
    new_login_csrf,
    set_cookie,
)
from ledger.domain.errors import LedgerError

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]


@router.get("/ui/", name="web_locations")
def locations(request: Request) -> Response:
    """Choose a location: each DEA registration is its own ledger and its own login."""
    locs = queries.locations(request.app.state.ledger)
    return templates.TemplateResponse(request, "locations.html", {"locations": locs, "dea": None})


@router.get("/", name="web_root")
def root() -> Response:
    return RedirectResponse("/ui/", status_code=303)


def _login_page(request: Request, dea: str, location: dict, *, errors: Errors | None = None,
                values: dict | None = None, notice: str | None = None, status: int = 200) -> Response:
    csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_csrf()
    r = templates.TemplateResponse(request, "login.html", {
        "dea": dea, "location": location, "errors": errors or Errors(), "values": values or {},
        "notice": notice, "csrf": csrf, "public": True}, status_code=status)
    set_cookie(r, LOGIN_CSRF_COOKIE, csrf, path="/ui/", secure=web_settings(request).cookie_secure, max_age=3600)
    return r


def _location_or_404(request: Request, dea: str) -> dict:
    loc = queries.location(request.app.state.ledger, dea)
    if loc is None:
        from ledger.domain.errors import NotFound

        raise NotFound(f"no location with DEA number {dea} here", field="dea")
    return loc


@router.get("/ui/{dea}/login", name="web_login")
def login_form(request: Request, dea: Dea, m: str | None = None) -> Response:
    loc = _location_or_404(request, dea)
    return _login_page(request, dea, loc, notice=LOGIN_NOTICES.get(m or ""))


@router.post("/ui/{dea}/login", name="web_login_post")
async def login(request: Request, dea: Dea) -> Response:
    loc = await run_in_threadpool(_location_or_404, request, dea)
    form = await read_form(request)
    check_login_csrf(request, form)
    values = {"username": form.text("username")}
    errors = Errors()
    if not values["username"]:
        errors.add("username", "enter your username")
    if not form.get("password"):
        errors.add("password", "enter your password")
    if errors:
        return _login_page(request, dea, loc, errors=errors, values=values, status=422)
    auth = auth_of(request)
    try:
        token, session = await run_in_threadpool(auth.login, dea, values["username"], form["password"],
                                                 form.optional("totp"))
    except SignInThrottled as exc:
        # Said in plain words, with the wait; the password was not checked, so no field is wrong.
        errors.add("form", "Too many failed sign-ins for this login. Try again in "
                           f"{wait_words(exc.retry_after)}, or ask a manager to clear your sign-in throttle.")
        r = _login_page(request, dea, loc, errors=errors, values=values, status=429)
        r.headers.update(exc.headers)
        return r
    except LedgerError as exc:
        field = exc.field if exc.field in ("totp",) else ("password" if isinstance(exc, Unauthorized) else "form")
        if getattr(exc, "type", "") == "totp-required":
            field = "totp"
        errors.add(field, exc.reason)
        return _login_page(request, dea, loc, errors=errors, values=values, status=401)
    target = location_path(dea) + ("password" if session.must_change_password else "")
    r = RedirectResponse(target, status_code=303)
    secure = web_settings(request).cookie_secure
    set_cookie(r, SESSION_COOKIE, token, path=location_path(dea), secure=secure)
    clear_cookie(r, LOGIN_CSRF_COOKIE, path="/ui/", secure=secure)
    return r


@router.post("/ui/{dea}/logout", name="web_logout")
async def logout(request: Request, dea: Dea) -> Response:
    form = await read_form(request)
    try:
        page = await open_page(request, dea, "home", password_change_ok=True)
    except LoginNeeded:
        return RedirectResponse(location_path(dea) + "login?m=out", status_code=303)
    check_session_csrf(request, form, page.token)
    await run_in_threadpool(auth_of(request).logout, page.session)
    r = RedirectResponse(location_path(dea) + "login?m=out", status_code=303)
    clear_cookie(r, SESSION_COOKIE, path=location_path(dea), secure=web_settings(request).cookie_secure)
    return r


@router.get("/ui/{dea}/password", name="web_password")
async def password_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "home", password_change_ok=True)
    return page.render("password.html", must_change=page.session.must_change_password)


@router.post("/ui/{dea}/password", name="web_password_post")
async def change_password(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "home", password_change_ok=True)
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    errors = Errors()
    if form.get("new_password", "") != form.get("new_password_again", ""):
        errors.add("new_password_again", "the two new passwords differ")
    if not errors:
        try:
            await run_in_threadpool(auth_of(request).change_password, page.session, page.principal,
                                    form.get("current_password", ""), form.get("new_password", ""))
        except LedgerError as exc:
            errors.add(exc.field or "form", exc.reason)
    if errors:
        return page.render("password.html", status=422, errors=errors, must_change=page.session.must_change_password)
    r = RedirectResponse(location_path(dea) + "login?m=password", status_code=303)
    clear_cookie(r, SESSION_COOKIE, path=location_path(dea), secure=web_settings(request).cookie_secure)
    return r
