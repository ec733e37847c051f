"""Page sessions, CSRF protection and security headers.

A page session *is* an API session (``Authenticator.login`` / ``Authenticator.session``): the same
password and TOTP checks, lock-out, idle and absolute expiry and role reads. Its bearer token is
kept in a cookie that scripts cannot read (HttpOnly), that the browser sends only to this site's
pages of that location (SameSite=Strict, Path=/ui/<DEA>/), and over HTTPS only unless the
deployment turns that off for loopback tests.

CSRF: every form carries a synchronizer token derived from the session token
(HMAC-SHA256(token, "csrf")): it cannot be computed without the HttpOnly cookie, needs no storage,
and changes with every login. Before login, the login form uses a double-submit cookie. Every
POST must also come from this origin when the browser says where it comes from (Origin header).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request
from fastapi.responses import Response

from api.http.problems import AccessDenied

SESSION_COOKIE = "csl_session"
LOGIN_CSRF_COOKIE = "csl_login_csrf"
CSRF_FIELD = "csrf_token"

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    # not "no-referrer": under it Chrome sends "Origin: null" on form posts, which the origin check refuses
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


class CsrfRejected(AccessDenied):
    """A form without its CSRF token, with a wrong one, or from another origin (403)."""

    type = "csrf-rejected"


def location_path(dea: str) -> str:
    return f"/ui/{dea}/"


def csrf_for_token(token: str) -> str:
    return hmac.new(token.encode(), b"csledger-web-csrf-v1", hashlib.sha256).hexdigest()


def check_origin(request: Request) -> None:
    """A POST whose Origin (or, lacking it, Referer) names another site is refused."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return  # old browsers and non-browser clients: the token check below still applies
    host = request.headers.get("host", "")
    allowed = {f"http://{host}", f"https://{host}"}
    base = origin if origin.count("/") < 3 else "/".join(origin.split("/")[:3])
    if base not in allowed:
        raise CsrfRejected("this form was sent from another site", field=CSRF_FIELD)


def check_session_csrf(request: Request, form: dict[str, str], token: str) -> None:
    check_origin(request)
    sent = form.get(CSRF_FIELD, "")
    if not sent or not hmac.compare_digest(sent, csrf_for_token(token)):
        raise CsrfRejected("the form's security token is missing or wrong; reload the page and try again",
                           field=CSRF_FIELD)


def check_login_csrf(request: Request, form: dict[str, str]) -> None:
    check_origin(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise CsrfRejected("the form's security token is missing or wrong; reload the page and try again",
                           field=CSRF_FIELD)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response: Response, name: str, value: str, *, path: str, secure: bool,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, path=path, httponly=True, samesite="strict", secure=secure, max_age=max_age)


def clear_cookie(response: Response, name: str, *, path: str, secure: bool) -> None:
    response.delete_cookie(name, path=path, httponly=True, samesite="strict", secure=secure)


def add_security_headers(response: Response) -> Response:
    for k, v in SECURITY_HEADERS.items():
        response.headers[k] = v
    return response
