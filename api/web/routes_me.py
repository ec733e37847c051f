"""One's own signatures and signing credentials (issue 17): "My signatures" and "My signing key".

"My signatures" lists the entries the person signed, newest first, with the statement each
signature covers, read from the chain itself (``credentials.signatures_of``): a compromised
server could put one command before a person and record another, so this is where they check
that what was recorded is what they confirmed.

"My signing key" shows their credentials and makes (or replaces) their password key, approved by
a manager or administrator typing their own credentials on the same screen (none for the
registrant's root, its administrator's first key), and enrols a passkey in three form posts of
one form (``static/passkey.js`` runs the WebAuthn ceremonies between them):

1. ``step=start``: registration options for ``navigator.credentials.create``;
2. ``step=register``: the authenticator's registration answer is checked; the page shows the
   enrolment statement and options for ``navigator.credentials.get``;
3. ``step=enrol``: the new passkey's assertion over that statement (proof its owner holds it),
   with the approver's credentials: the enrolment entry is recorded.

The ceremony state is the API's (``routes_credentials.PENDING``, per session, five minutes).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import routes_credentials as rc
from api.web.core import Page, PageRoute, auth_of, error_of, new_form_key, open_page
from api.web.forms import Errors, Form, read_form
from api.web.readable import command_rows, kind_words, local_time, method_words
from api.web.routes_clinic import Dea
from api.web.security import check_session_csrf, location_path
from ledger.domain.errors import InvalidInput, LedgerError, NotFound
from ledger.integrity import staff_signatures as ss
from ledger.integrity.credential_chain import APPROVER_ROLES
from ledger.services import credentials as creds
from ledger.storage.authority import authority_at

router = APIRouter(route_class=PageRoute, include_in_schema=False)

#: Signatures per page of "My signatures".
PAGE_SIZE = 25
#: A WebAuthn answer is a few kilobytes at most; this bounds what is parsed.
MAX_ANSWER = 20_000
MAX_CREDENTIAL_ID = 1400


# --- my signatures -------------------------------------------------------------------------------


def _signature_rows(page: Page, before: int | None) -> tuple[list[dict[str, Any]], int | None]:
    items, next_cursor = creds.signatures_of(page.request.app.state.ledger, page.dea, page.principal.staff_id,
                                             before=before, limit=PAGE_SIZE)
    rows = []
    for it in items:
        st = it.get("statement") if isinstance(it.get("statement"), dict) else None
        rows.append({"seq": it["seq"], "recorded": local_time(it["recorded_at"], page.tz),
                     "kind": kind_words(it["kind"]), "meaning": it.get("meaning") or "—",
                     "method": method_words(it.get("auth_method")),
                     "fields": command_rows(st.get("command") or {}, page.tz) if st else None})
    return rows, next_cursor


@router.get("/ui/{dea}/me/signatures", name="web_my_signatures")
async def my_signatures(request: Request, dea: Dea,
                        before: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> Response:
    """The entries I signed, newest first, with the command fields each signature covers."""
    page = await open_page(request, dea, "me")
    rows, next_cursor = await run_in_threadpool(_signature_rows, page, before)
    return page.render("signatures.html", active="me_signatures", rows=rows, next_cursor=next_cursor,
                       first=before is None)


# --- my signing key ------------------------------------------------------------------------------


def _key_context(page: Page) -> dict[str, Any]:
    """What the signing-key page shows: my credentials, and whether an approver is needed."""
    ledger = page.request.app.state.ledger
    with ledger.reading() as conn:
        authority = authority_at(conn, page.dea)
    me = page.principal.staff_id
    mine = sorted(creds.credentials_of(ledger, page.dea, me), key=lambda c: c["enrolled_seq"], reverse=True)
    approvers = {c.staff_id for c in authority.credentials.values()
                 if c.active and authority.roles(c.staff_id) & APPROVER_ROLES} - {me}
    return {
        "credentials": [{**c, "method_words": method_words(c["method"])} for c in mine],
        "root_needed": not authority.signing_required,
        "is_admin": "administrator" in page.roles,
        "approver_needed": authority.signing_required and bool(approvers),
        "passkeys_possible": authority.signing_required and authority.relying_party is not None,
        "has_password_key": any(c["method"] == ss.PASSWORD_KEY and c["revoked_seq"] is None for c in mine),
        # a sign-in made before this person's key existed holds none: they sign in again
        "session_signs": page.principal.signer is not None,
    }


def _key_page(page: Page, *, errors: Errors | None = None, values: dict | None = None, status: int = 200,
              done: int | None = None, passkey: dict | None = None) -> Response:
    ctx = _key_context(page)
    values = {"form_key": new_form_key(), **(values or {})}
    return page.render("signing_key.html", status=status, active="me_key", errors=errors or Errors(),
                       values=values, done=done, passkey=passkey or {}, **ctx)


@router.get("/ui/{dea}/me/signing-key", name="web_signing_key")
async def signing_key(request: Request, dea: Dea,
                      done: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> Response:
    """My credentials, and the forms to make my password key and enrol a passkey."""
    page = await open_page(request, dea, "me")
    return await run_in_threadpool(_key_page, page, done=done)


def _approver(page: Page, form: Form, request: dict[str, Any], errors: Errors, key: str | None):
    """The approver typed on this screen, or None when they typed nothing (the service decides
    whether one is needed, and says so next to the approver's username)."""
    from api.web.witness import witness_from_form

    if not (form.text("approver_username") or form.get("approver_password", "")):
        return None
    return witness_from_form(page, form, request, errors, prefix="approver", idempotency_key=key, passkey=False)


APPROVER_ERRORS = {"approver": "approver_username", "password": "password"}


def _enrol_password_key(page: Page, form: Form) -> Response:
    auth = auth_of(page.request)
    values = {"approver_username": form.text("approver_username"), "form_key": form.text("form_key") or new_form_key()}
    errors = Errors()
    password = form.get("password", "")
    if not password:
        errors.add("password", "enter your own password: the new key is locked with it")
    approver = None
    if not errors:
        request = {"type": "EnrolCredential", "staff_id": page.principal.staff_id, "method": ss.PASSWORD_KEY}
        approver = _approver(page, form, request, errors, values["form_key"])
    if errors:
        return _key_page(page, errors=errors, values=values, status=422)
    member = auth.store.staff(page.dea, page.principal.staff_id)
    try:
        if member is None:
            raise NotFound(f"staff member {page.principal.staff_id} is not enrolled", field="form")
        with page.request.app.state.ledger.reading() as conn:
            root = not authority_at(conn, page.dea).signing_required
        s = auth.settings
        res = auth.enrol_signing_key(member, page.principal, password,
                                     approver=approver.principal if approver else None, session=page.session,
                                     rp_id=s.webauthn_rp_id if root else None,
                                     origins=tuple(s.webauthn_origins) if root else ())
    except LedgerError as exc:
        name, msg = error_of(exc, APPROVER_ERRORS)
        errors.add(name if name in ("password", "approver_username") else "form", msg)
        return _key_page(page, errors=errors, values=values, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}me/signing-key?done={res['seq']}", status_code=303)


@router.post("/ui/{dea}/me/signing-key", name="web_signing_key_post")
async def enrol_signing_key(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "me")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_enrol_password_key, page, form)


# --- passkey enrolment ---------------------------------------------------------------------------


def _json_field(form: Form, name: str, what: str) -> dict:
    text = form.get(name, "").strip()
    try:
        value = json.loads(text) if 0 < len(text) <= MAX_ANSWER else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise InvalidInput(f"the {what} could not be read; start again with \"Add a passkey\"", field="passkey")
    return value


def _registration_options(page: Page) -> dict[str, Any]:
    """Step 1: options for navigator.credentials.create, the challenge kept for step 2."""
    options, challenge = creds.begin_passkey_registration(page.request.app.state.ledger, page.principal,
                                                          field="passkey")
    rc.PENDING.put(page.session.token_hash, "registration", {"challenge": challenge})
    return {"step": "register", "options": json.dumps(options, separators=(",", ":"))}


def _registration(page: Page, answer: dict) -> dict[str, Any]:
    """Step 2: the authenticator's registration answer, checked; the enrolment statement the new
    passkey signs (proof its owner holds it) is kept for step 3."""
    ledger = page.request.app.state.ledger
    creds.passkey_relying_party(ledger, page.dea, field="passkey")
    pending = rc.PENDING.take(page.session.token_hash, "registration")
    if pending is None:
        raise InvalidInput("no passkey registration is in progress on this sign-in (or it expired): start again "
                           "with \"Add a passkey\"", field="passkey")
    enrolment = creds.finish_passkey_registration(ledger, page.principal, pending["challenge"], answer,
                                                  field="passkey")
    rc.PENDING.put(page.session.token_hash, "enrolment", enrolment)
    return _enrol_prompt(page, enrolment)


def _enrol_prompt(page: Page, pending: dict) -> dict[str, Any]:
    """Step 3's page state: the statement the new passkey signs and the options to sign it."""
    st, options = creds.passkey_enrolment_challenge(page.request.app.state.ledger, page.principal, pending,
                                                    field="passkey")
    return {"step": "enrol", "options": json.dumps(options, separators=(",", ":")),
            "credential_id": pending["credential_id"], "statement": command_rows(st["command"], page.tz)}


def _passkey_step(page: Page, form: Form) -> Response:
    step = form.get("step", "")
    errors = Errors()
    values = {"approver_username": form.text("approver_username"), "form_key": form.text("form_key") or new_form_key()}
    try:
        if step == "register":
            prompt = _registration(page, _json_field(form, "registration", "security key's registration"))
            return _key_page(page, values=values, passkey=prompt)
        if step == "enrol":
            return _enrol_passkey(page, form, values)
        return _key_page(page, values=values, passkey=_registration_options(page))
    except LedgerError as exc:
        errors.add("passkey", exc.reason)
        return _key_page(page, errors=errors, values=values, status=exc.status)


def _enrol_passkey(page: Page, form: Form, values: dict[str, Any]) -> Response:
    errors = Errors()
    cid = form.text("credential_id")
    if not 0 < len(cid) <= MAX_CREDENTIAL_ID:
        raise InvalidInput("no passkey enrolment is in progress on this page: start again", field="passkey")
    pending = rc.PENDING.take(page.session.token_hash, "enrolment")
    if pending is None or pending["credential_id"] != cid:
        raise InvalidInput("no passkey enrolment of this security key is in progress on this session (or it "
                           "expired): start again with \"Add a passkey\"", field="passkey")
    prompt = _enrol_prompt(page, pending)
    try:
        assertion = _json_field(form, "assertion", "passkey's answer")
        request = {"type": "EnrolCredential", "staff_id": page.principal.staff_id, "method": ss.PASSKEY,
                   "credential_id": cid}
        approver = _approver(page, form, request, errors, values["form_key"])
        if errors:
            rc.PENDING.put(page.session.token_hash, "enrolment", pending)  # the approver may try again
            return _key_page(page, errors=errors, values=values, status=422, passkey=prompt)
        res = creds.enrol_passkey(page.request.app.state.ledger, page.principal, credential_id=cid,
                                  public_key=pending["public_key"],
                                  possession=ss.PasskeySigner(pending["nonce"], assertion),
                                  approver=approver.principal if approver else None)
    except LedgerError as exc:
        rc.PENDING.put(page.session.token_hash, "enrolment", pending)
        name, msg = error_of(exc, APPROVER_ERRORS)
        errors.add(name if name == "approver_username" else "passkey", msg)
        return _key_page(page, errors=errors, values=values, status=exc.status, passkey=prompt)
    return RedirectResponse(f"{location_path(page.dea)}me/signing-key?done={res['seq']}", status_code=303)


@router.post("/ui/{dea}/me/passkeys", name="web_passkey_post")
async def passkey_step(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "me")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_passkey_step, page, form)
