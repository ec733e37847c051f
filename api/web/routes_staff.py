"""Staff and roles (issue 21): the location's staff with their roles and sign-in state, an
enrolment form, and one page per staff member to grant or revoke a role, set a temporary
password (administrators), sign them out everywhere, clear their sign-in throttle and revoke a
signing credential.

Every form calls what the API route of the same task calls, with the same command:
``services.enroll_staff`` / ``grant_role`` / ``revoke_role`` and ``credentials.revoke_credential``
(ledger entries), and the API's own route functions for the login-state tasks that record no entry
(``set_staff_password``, ``revoke_staff_sessions``, ``clear_sign_in_throttle``: their rules, the
alert they raise and the credential a password reset revokes live there). The second manager or
administrator who approves an enrolment or a role change types their own credentials on the same
form (``api.web.witness``), as on the API's ``Witness-Assertion``; the services decide whether one
is needed and say so beside the approver's username.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.http import routes_session as api_session
from api.http.auth import require_role
from api.http.roles import roles_for
from api.http.schemas import StaffPasswordCreate
from api.web.core import DEA_PATTERN, Page, PageRoute, auth_of, error_of, new_form_key, open_page
from api.web.forms import Errors, Form, read_form
from api.web.readable import clock_time, method_words
from api.web.security import check_session_csrf, location_path
from api.web.witness import keep_witness, witness_from_form
from ledger import services
from ledger.domain.commands import EnrollStaff, GrantRole, RevokeRole
from ledger.domain.errors import InvalidInput, LedgerError, NotFound
from ledger.domain.principal import Role
from ledger.integrity.canonical import decode, format_time
from ledger.integrity.credential_chain import APPROVER_ROLES
from ledger.services import credentials as creds
from ledger.services.reference import printed_name
from ledger.storage.tables import ApiSession, StaffCredential

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]
#: The API's StaffId, bounded the same way (a longer or odd id is a 404 address, not a lookup).
StaffIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]

ROLES = [r.value for r in Role]
ROLE_WORDS = {r: r.replace("_", " ") for r in ROLES}
#: The member page's forms (``action``), each with its own form key and the inputs it keeps.
ACTIONS = ("grant", "revoke", "password", "sessions", "throttle", "credential")
#: The API bounds these (schemas: RoleRevokeCreate.reason, CredentialRevocationCreate.reason, Password).
MAX_ROLE_REASON, MAX_CREDENTIAL_REASON, MAX_PASSWORD = 500, 200, 128
#: Entry kinds a member page explains after a form recorded one (``?saved=<seq>``).
SAVED_KINDS = ("staff_enrolled", "role_granted", "role_revoked", "staff_credential_revoked")

cred_t = StaffCredential.__table__
session_t = ApiSession.__table__


# --- reads ---------------------------------------------------------------------------------------


def _roles_words(roles: list[str] | tuple[str, ...]) -> str:
    words = [ROLE_WORDS.get(r, r) for r in roles]
    if not words:
        return "no roles"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _login_state(page: Page) -> dict[str, dict[str, Any]]:
    """Per staff member: password set, must change it, failed sign-ins, throttled until, and
    how many sessions are open (not ended, not expired). Login state, not entries."""
    now = format_time(auth_of(page.request).now())
    ledger = page.request.app.state.ledger
    with ledger.reading() as c:
        creds_rows = c.execute(sa.select(cred_t.c.staff_id, cred_t.c.must_change_password, cred_t.c.failed_logins,
                                         cred_t.c.locked_until).where(cred_t.c.registrant == page.dea)).mappings().all()
        open_sessions = dict(c.execute(
            sa.select(session_t.c.staff_id, sa.func.count())
            .where(session_t.c.registrant == page.dea, session_t.c.revoked_at.is_(None), session_t.c.expires_at > now)
            .group_by(session_t.c.staff_id)).all())
    out: dict[str, dict[str, Any]] = {}
    for r in creds_rows:
        until = r["locked_until"] if r["locked_until"] and r["locked_until"] > now else None
        out[r["staff_id"]] = {"has_password": True, "must_change": bool(r["must_change_password"]),
                              "failed": int(r["failed_logins"] or 0), "throttled_until": until}
    for sid, n in open_sessions.items():
        out.setdefault(sid, {"has_password": False, "must_change": False, "failed": 0, "throttled_until": None})
        out[sid]["sessions"] = n
    return out


def _state_words(member: dict[str, Any], login: dict[str, Any] | None, page: Page) -> list[str]:
    """The staff member's state in the clinic's words (several may hold at once)."""
    today = page.local_now().date()
    words = []
    if not member["roles"]:
        words.append("no roles (cannot do anything here)")
    if login is None or not login.get("has_password"):
        words.append("no password yet")
    else:
        if login["must_change"]:
            words.append("must change the temporary password at the next sign-in")
        if login["throttled_until"]:
            words.append(f"sign-in throttled until {clock_time(login['throttled_until'], page.tz, today)} "
                         f"({login['failed']} failed sign-ins)")
        elif login["failed"]:
            words.append(f"{login['failed']} failed sign-in{'s' if login['failed'] != 1 else ''} in a row")
    if not words:
        words.append("active")
    return words


def staff_list(page: Page) -> list[dict[str, Any]]:
    """The location's staff as the API lists them (``list_staff``: roles from the role entries'
    projection), each with their login state."""
    auth = auth_of(page.request)
    rows = api_queries.staff(page.request.app.state.ledger, page.dea, auth.store.has_credentials(page.dea))
    logins = _login_state(page)
    for m in rows:
        login = logins.get(m["staff_id"])
        m["roles_words"] = _roles_words(m["roles"])
        m["state"] = _state_words(m, login, page)
        m["sessions"] = (login or {}).get("sessions", 0)
        m["failed"] = (login or {}).get("failed", 0)
        m["throttled_until"] = (login or {}).get("throttled_until")
    return rows


def _member(page: Page, staff_id: str) -> dict[str, Any]:
    found = next((m for m in staff_list(page) if m["staff_id"] == staff_id), None)
    if found is None:
        raise NotFound(f"no staff member {staff_id} at {page.dea}", field="staff_id")
    return found


def _credential_label(c: dict[str, Any]) -> str:
    return (f"{method_words(c['method'])} …{c['fingerprint'][-8:]}{' (root)' if c.get('root') else ''}, "
            f"enrolled in entry #{c['enrolled_seq']}")


def _credentials(page: Page, staff_id: str) -> list[dict[str, Any]]:
    rows = sorted(creds.credentials_of(page.request.app.state.ledger, page.dea, staff_id),
                  key=lambda c: c["enrolled_seq"], reverse=True)
    return [{**c, "label": _credential_label(c), "method_words": method_words(c["method"])} for c in rows]


# --- confirmations -------------------------------------------------------------------------------


def _entry(page: Page, seq: int) -> dict[str, Any] | None:
    e = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    return None if e is None else decode(e["canonical"].encode("utf-8"))


def _who(entry: dict[str, Any]) -> tuple[str, str | None]:
    """(who acted, who approved if a second person did) from the entry's signatures."""
    sigs = [s for s in entry.get("signatures") or [] if isinstance(s, dict)]
    actor = sigs[0] if sigs else {}
    second = next((s for s in sigs[1:] if s.get("meaning") == "approved" and s.get("staff_id") != actor.get("staff_id")),
                  None)
    return actor.get("printed_name", "?"), (second or {}).get("printed_name")


def saved_confirmation(page: Page, staff_id: str, seq: int) -> dict[str, Any] | None:
    """What the entry ``seq`` recorded about ``staff_id``, in plain words, read from the entry
    itself (never from the form): None when it is not a staff entry about them."""
    e = _entry(page, seq)
    if e is None or e.get("kind") not in SAVED_KINDS or e.get("staff_id") != staff_id:
        return None
    today = page.local_now().date()
    actor, approver = _who(e)
    at = clock_time(e.get("occurred_at") or e.get("recorded_at", ""), page.tz, today)
    approved = f", approved by {approver}" if approver else ""
    kind = e["kind"]
    if kind == "staff_enrolled":
        roles = []
        for k in range(seq + 1, seq + 1 + len(ROLES)):  # its role grants follow it in the same command
            g = _entry(page, k)
            if g is None or g.get("kind") != "role_granted" or g.get("staff_id") != staff_id:
                break
            roles.append(g.get("role", "?"))
        alone = "" if approver else " alone (no second manager or administrator could approve)"
        text = (f"{e.get('printed_name', '?')} is enrolled (staff id {staff_id}, login {e.get('username', '?')}) "
                f"with {'the role' if len(roles) == 1 else 'the roles'} {_roles_words(roles)}, by {actor}{alone} "
                f"at {at}{approved}.")
        return {"text": text, "seq": seq,
                "next": "Next: an administrator sets their temporary password below; they change it at their "
                        "first sign-in."}
    name = _member_name(page, staff_id)
    if kind == "role_granted":
        text = f"{name} now holds the role {ROLE_WORDS.get(e.get('role', ''), '?')}, granted by {actor} at {at}{approved}."
    elif kind == "role_revoked":
        text = (f"{name} no longer holds the role {ROLE_WORDS.get(e.get('role', ''), '?')}: revoked by {actor} at "
                f"{at}{approved}. Reason: {e.get('reason', '')}. It takes effect on their next request.")
    else:
        c = next((c for c in _credentials(page, staff_id) if c["credential_id"] == e.get("credential_id")), None)
        what = f"{c['method_words']} …{c['fingerprint'][-8:]}" if c else "signing credential"
        text = (f"The {what} of {name} is revoked, by {actor} at {at}. Reason: {e.get('reason', '')}. It signs "
                "nothing recorded after this entry.")
    return {"text": text, "seq": seq}


def _member_name(page: Page, staff_id: str) -> str:
    m = auth_of(page.request).store.staff(page.dea, staff_id)
    return m.printed_name if m is not None else staff_id


class _Sent:
    """Forms already carried out that record no entry (password, sessions, throttle), by session
    and form key, with what was said: sent twice (a double tap, a reload), the second one does
    nothing again and says so. Entries have the ledger's idempotency key instead."""

    def __init__(self, size: int = 2000) -> None:
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.size = size

    def get(self, session: str, key: str) -> str | None:
        with self.lock:
            return self.items.get((session, key))

    def put(self, session: str, key: str, said: str) -> None:
        with self.lock:
            self.items[(session, key)] = said
            while len(self.items) > self.size:
                self.items.popitem(last=False)


SENT = _Sent()


# --- the list and the enrolment ------------------------------------------------------------------


def _list_page(page: Page, *, values: dict[str, Any] | None = None, errors: Errors | None = None,
               status: int = 200) -> Response:
    values = {"form_key": new_form_key(), "roles": [], **(values or {})}
    return page.render("staff_list.html", status=status, active="tasks", staff=staff_list(page), values=values,
                       errors=errors or Errors(), role_options=[(r, ROLE_WORDS[r]) for r in ROLES],
                       is_admin=Role.ADMINISTRATOR.value in page.roles)


@router.get("/ui/{dea}/staff", name="web_staff")
async def staff(request: Request, dea: Dea) -> Response:
    """The location's staff (name, login, roles, state) and the enrolment form."""
    page = await open_page(request, dea, "staff")
    return await run_in_threadpool(_list_page, page)


ENROL_ERRORS = {"approver": "approver_username", "role": "roles", "principal": "form"}


def _enrol(page: Page, form: Form) -> Response:
    values: dict[str, Any] = {"printed_name": form.text("printed_name"), "username": form.text("username"),
                              "roles": form.all("roles"), "form_key": form.text("form_key") or new_form_key()}
    keep_witness(values, form, "approver")
    errors = Errors()
    name = values["printed_name"]
    if not name:
        errors.add("printed_name", "enter the name as it is printed on their badge")
    else:
        try:
            name = printed_name(name)  # the service's own check (one script): shown with the others
        except InvalidInput as exc:
            errors.add("printed_name", exc.reason)
    if not values["username"]:
        errors.add("username", "enter the login name they will sign in with")
    bad = [r for r in values["roles"] if r not in ROLES]
    if bad:
        errors.add("roles", "pick roles from the list")
    roles = tuple(dict.fromkeys(r for r in values["roles"] if r in ROLES))
    if errors:
        return _list_page(page, values=values, errors=errors, status=422)
    cmd = EnrollStaff(name, values["username"], roles)
    approver = None
    if form.text("approver_username") or form.get("approver_password", ""):
        request = {"type": "EnrollStaff", "printed_name": name, "username": values["username"], "roles": list(roles)}
        approver = witness_from_form(page, form, request, errors, prefix="approver",
                                     idempotency_key=values["form_key"], passkey=False)
        if errors:
            return _list_page(page, values=values, errors=errors, status=422)
    try:
        res = services.enroll_staff(page.request.app.state.ledger, page.principal, cmd,
                                    approver=approver.principal if approver else None,
                                    idempotency_key=values["form_key"])
    except LedgerError as exc:
        field, msg = error_of(exc, ENROL_ERRORS)
        errors.add(field if field in ("printed_name", "username", "roles", "approver_username") else "form", msg)
        return _list_page(page, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}staff/{res['staff_id']}?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/staff", name="web_staff_enrol_post")
async def enrol(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "staff")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_enrol, page, form)


# --- one staff member ----------------------------------------------------------------------------


def _fresh_keys() -> dict[str, str]:
    return {f"{a}_key": new_form_key() for a in ACTIONS}


def _member_page(page: Page, staff_id: str, *, values: dict[str, Any] | None = None, errors: Errors | None = None,
                 status: int = 200, said: dict[str, Any] | None = None) -> Response:
    member = _member(page, staff_id)
    credentials = _credentials(page, staff_id)
    is_self = staff_id == page.principal.staff_id
    values = {**_fresh_keys(), **(values or {})}
    return page.render(
        "staff_member.html", status=status, active="tasks", member=member, values=values, errors=errors or Errors(),
        said=said, credentials=credentials, active_credentials=[c for c in credentials if c["revoked_seq"] is None],
        grant_options=[(r, ROLE_WORDS[r]) for r in ROLES if r not in member["roles"]],
        revoke_options=[(r, ROLE_WORDS[r]) for r in member["roles"]],
        is_self=is_self,
        # set_staff_password is the administrator's (roles.py); the route refuses anyone else
        may_set_password=bool(page.roles & roles_for("set_staff_password")),
        # revoke_credential: its owner, or a manager or administrator (credentials.revoke_credential)
        may_revoke_credential=is_self or bool(page.roles & APPROVER_ROLES))


@router.get("/ui/{dea}/staff/{staff_id}", name="web_staff_member")
async def staff_member(request: Request, dea: Dea, staff_id: StaffIdPath,
                       saved: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> Response:
    """One staff member: roles, sign-in state, credentials, and the forms that change them;
    ``saved`` (an entry's number) says what a form just recorded."""
    page = await open_page(request, dea, "staff")

    def run() -> Response:
        said = saved_confirmation(page, staff_id, saved) if saved is not None else None
        return _member_page(page, staff_id, said=said)

    return await run_in_threadpool(run)


#: Service field -> the input of each form that shows it ("<action>_form": above that form's button).
FORM_ERRORS = {
    "grant": {"role": "grant_role", "approver": "grant_approver_username", "staff_id": "grant_form",
              "principal": "grant_form"},
    "revoke": {"role": "revoke_role", "reason": "revoke_reason", "approver": "revoke_approver_username",
               "staff_id": "revoke_form", "principal": "revoke_form"},
    "password": {"password": "temp_password", "staff_id": "temp_password", "principal": "temp_password"},
    "sessions": {},
    "throttle": {},
    "credential": {"credential_id": "credential_id", "reason": "credential_reason", "principal": "credential_id"},
}
FORM_INPUTS = {
    "grant": ("grant_role", "grant_approver_username", "grant_approver_password", "grant_approver_totp"),
    "revoke": ("revoke_role", "revoke_reason", "revoke_approver_username", "revoke_approver_password",
               "revoke_approver_totp"),
    "password": ("temp_password",),
    "credential": ("credential_id", "credential_reason"),
}


def _refused(action: str, exc: LedgerError, page: Page) -> tuple[str, str]:
    """Where a service's refusal goes on the member page: beside the field it names, else above
    the button of the form that was sent."""
    field, msg = error_of(exc, FORM_ERRORS[action])
    if getattr(exc, "type", "") == "own-password-reset":  # the API's message names its own address
        msg = "you change your own password on the Change password page, with your current one"
    if action == "password" and not page.roles & roles_for("set_staff_password"):
        return "form", msg  # the page shows them no password form: said above the page's forms
    known = FORM_INPUTS.get(action, ())
    return (field if field in known else f"{action}_form"), msg


def _grant(page: Page, staff_id: str, form: Form, values: dict[str, Any], errors: Errors) -> dict[str, Any] | None:
    role = values["grant_role"]
    if role not in ROLES:
        errors.add("grant_role", "pick the role to grant")
        return None
    approver = None
    if form.text("grant_approver_username") or form.get("grant_approver_password", ""):
        request = {"type": "GrantRole", "staff_id": staff_id, "role": role}
        approver = witness_from_form(page, form, request, errors, prefix="grant_approver",
                                     idempotency_key=values["grant_key"], passkey=False)
        if errors:
            return None
    res = services.grant_role(page.request.app.state.ledger, page.principal, GrantRole(staff_id, role),
                              approver=approver.principal if approver else None, idempotency_key=values["grant_key"])
    return {"seq": res["entries"][0]["seq"]}


def _revoke(page: Page, staff_id: str, form: Form, values: dict[str, Any], errors: Errors) -> dict[str, Any] | None:
    role, reason = values["revoke_role"], values["revoke_reason"]
    if role not in ROLES:
        errors.add("revoke_role", "pick the role to revoke")
    if not reason:
        errors.add("revoke_reason", "say why (e.g. left the clinic on 2026-11-20)")
    elif len(reason) > MAX_ROLE_REASON:
        errors.add("revoke_reason", f"must be at most {MAX_ROLE_REASON} characters")
    if errors:
        return None
    approver = None
    if form.text("revoke_approver_username") or form.get("revoke_approver_password", ""):
        request = {"type": "RevokeRole", "staff_id": staff_id, "role": role, "reason": reason}
        approver = witness_from_form(page, form, request, errors, prefix="revoke_approver",
                                     idempotency_key=values["revoke_key"], passkey=False)
        if errors:
            return None
    res = services.revoke_role(page.request.app.state.ledger, page.principal, RevokeRole(staff_id, role, reason),
                               approver=approver.principal if approver else None, idempotency_key=values["revoke_key"])
    return {"seq": res["entries"][0]["seq"]}


def _revoke_credential(page: Page, staff_id: str, values: dict[str, Any], errors: Errors) -> dict[str, Any] | None:
    cid, reason = values["credential_id"], values["credential_reason"]
    # any of theirs, revoked ones too: the same form sent twice is answered by the ledger's
    # idempotency key with the first revocation; the service refuses another one as already revoked
    theirs = {c["credential_id"] for c in _credentials(page, staff_id)}
    if not cid:
        errors.add("credential_id", "pick the credential to revoke")
    elif cid not in theirs:
        errors.add("credential_id", "that is not one of their credentials; pick one from the list")
    if not reason:
        errors.add("credential_reason", "say why (e.g. security key lost)")
    elif len(reason) > MAX_CREDENTIAL_REASON:
        errors.add("credential_reason", f"must be at most {MAX_CREDENTIAL_REASON} characters")
    if errors:
        return None
    res = creds.revoke_credential(page.request.app.state.ledger, page.principal, staff_id, cid, reason,
                                  idempotency_key=values["credential_key"])
    return {"seq": res["seq"]}


def _now_words(page: Page) -> str:
    return clock_time(format_time(auth_of(page.request).now()), page.tz, page.local_now().date())


def _set_password(page: Page, staff_id: str, form: Form, errors: Errors) -> dict[str, Any] | None:
    password = form.get("temp_password", "")
    if not password:
        errors.add("temp_password", "type a temporary password for them")
    elif len(password) > MAX_PASSWORD:
        errors.add("temp_password", f"must be at most {MAX_PASSWORD} characters")
    if errors:
        return None
    auth = auth_of(page.request)
    admin = require_role(page.session, page.dea, roles_for("set_staff_password"))  # as the API's actor(...)
    before = {c["credential_id"] for c in creds.credentials_of(auth.store.ledger, page.dea, staff_id)
              if c["revoked_seq"] is None}
    out = api_session.set_staff_password(staff_id, StaffPasswordCreate(
        password=password, enroll_totp=True if form.get("enroll_totp", "") else None), auth, admin)
    revoked = [c for c in creds.credentials_of(auth.store.ledger, page.dea, staff_id)
               if c["credential_id"] in before and c["revoked_seq"] is not None]
    name = _member_name(page, staff_id)
    text = (f"A temporary password for {name} was set by {page.principal.printed_name} at {_now_words(page)}: "
            f"they must change it at their next sign-in, and every session of theirs has ended. Tell them the "
            "password in person; the reset is shown to those who follow alerts up.")
    if revoked:
        text += (f" Their password key (locked with the old password) is revoked: entry #{revoked[0]['revoked_seq']}; "
                 "they make a new one after signing in.")
    return {"text": text, "seq": revoked[0]["revoked_seq"] if revoked else None,
            "totp_secret": out.totp_secret, "totp_uri": out.totp_uri}


def _sign_out(page: Page, staff_id: str) -> dict[str, Any]:
    who = require_role(page.session, page.dea, roles_for("revoke_staff_sessions"))
    out = api_session.revoke_staff_sessions(staff_id, auth_of(page.request), who)
    n = out.revoked
    return {"text": f"{_member_name(page, staff_id)} is signed out everywhere, by {who.printed_name} at "
                    f"{_now_words(page)}: {n} open session{'s' if n != 1 else ''} ended."
                    + (" They sign in again to go on." if n else "")}


def _clear_throttle(page: Page, staff_id: str) -> dict[str, Any]:
    who = require_role(page.session, page.dea, roles_for("clear_sign_in_throttle"))
    out = api_session.clear_sign_in_throttle(staff_id, auth_of(page.request), who)
    name = _member_name(page, staff_id)
    if not out.cleared:
        return {"text": f"{name} had no failed sign-ins to clear; nothing was changed."}
    n = out.failed_attempts
    return {"text": f"The sign-in throttle of {name} is cleared, by {who.printed_name} at {_now_words(page)}: "
                    f"{n} failed sign-in{'s' if n != 1 else ''} forgotten; they may sign in now. The clearing is "
                    "recorded as an alert."}


def _act(page: Page, staff_id: str, form: Form) -> Response:
    action = form.get("action", "")
    if action not in ACTIONS:
        raise InvalidInput("send one of the page's forms", field="action")
    _member(page, staff_id)  # a staff id that is not here: 404 before anything is done
    values: dict[str, Any] = {**_fresh_keys(),
                              **{f"{a}_key": form.text(f"{a}_key") for a in ACTIONS if form.text(f"{a}_key")},
                              "grant_role": form.text("grant_role"), "revoke_role": form.text("revoke_role"),
                              "revoke_reason": form.text("revoke_reason"), "credential_id": form.text("credential_id"),
                              "credential_reason": form.text("credential_reason"),
                              "enroll_totp": bool(form.get("enroll_totp", ""))}
    keep_witness(values, form, "grant_approver", "revoke_approver")
    key = values[f"{action}_key"]
    errors = Errors()
    if action in ("password", "sessions", "throttle"):
        again = SENT.get(page.session.token_hash, key)
        if again is not None:
            return _member_page(page, staff_id, said={"text": again + " (This form was already sent: nothing was "
                                                      "done again.)"})
    try:
        if action == "grant":
            said = _grant(page, staff_id, form, values, errors)
        elif action == "revoke":
            said = _revoke(page, staff_id, form, values, errors)
        elif action == "credential":
            said = _revoke_credential(page, staff_id, values, errors)
        elif action == "password":
            said = _set_password(page, staff_id, form, errors)
        elif action == "sessions":
            said = _sign_out(page, staff_id)
        else:
            said = _clear_throttle(page, staff_id)
    except LedgerError as exc:
        field, msg = _refused(action, exc, page)
        errors.add(field, msg)
        return _member_page(page, staff_id, values=values, errors=errors, status=exc.status)
    if said is None:
        return _member_page(page, staff_id, values=values, errors=errors, status=422)
    if action in ("grant", "revoke", "credential"):  # an entry: its confirmation is read back from it
        return RedirectResponse(f"{location_path(page.dea)}staff/{staff_id}?saved={said['seq']}", status_code=303)
    SENT.put(page.session.token_hash, key, said["text"])
    if action == "sessions" and staff_id == page.principal.staff_id:
        # this very session ended with the others
        return RedirectResponse(f"{location_path(page.dea)}login?m=ended", status_code=303)
    return _member_page(page, staff_id, said=said)


@router.post("/ui/{dea}/staff/{staff_id}", name="web_staff_member_post")
async def act(request: Request, dea: Dea, staff_id: StaffIdPath) -> Response:
    page = await open_page(request, dea, "staff")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_act, page, staff_id, form)


__all__ = ["router", "saved_confirmation", "staff_list"]
