"""FastAPI dependencies: who is calling (bearer session), whether their roles allow the route,
the witness of a witnessed command, and the Idempotency-Key header."""

from __future__ import annotations

import base64
import json
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.http.auth import Authenticator, Session, Witness, require_role
from api.http.roles import roles_for
from ledger.domain.errors import InvalidInput
from ledger.domain.principal import Principal
from ledger.storage.store import Ledger

bearer = HTTPBearer(auto_error=False, description="The token from POST /v1/registrants/{dea}/sessions.")

Dea = Annotated[str, Path(pattern=r"^[A-Z]{2}[0-9]{7}$", description="The registrant's DEA number.",
                          examples=["AB1234563"])]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=128,
    description="Retry-safe key: the same key and body give the first answer and record nothing; the same key "
                "with another body is a 409.", examples=["6f1c2a9e-0d3b-4f7a-9a53-1d2e4b5c6d7e"])]
PasskeyHeader = Annotated[str | None, Header(
    alias="Passkey-Signature", max_length=20000,
    description="A witness's passkey answer (base64url of the WebAuthn AuthenticationResponseJSON) over the "
                "statement a 428 answer gave; comma-separated for several witnesses.")]
WitnessHeader = Annotated[str | None, Header(
    alias="Witness-Assertion", max_length=500,
    description="Single-use token from POST .../witness-assertions, bound to the SHA-256 of this body.")]


def _nul_in(value, path: str) -> str | None:
    """The path (``lines[0].vial_id``) of the first string holding a NUL character, else None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return path or "body"
            found = _nul_in(item, inner)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_in(item, f"{path or 'body'}[{i}]")
            if found is not None:
                return found
    return None


async def refuse_nul(request: Request) -> None:
    """Every route: a NUL character in a path parameter, a query parameter or a JSON body is a 422
    naming where it is. No field has a use for it, and PostgreSQL text cannot hold one (a lookup
    with it would fail in the driver, not answer "not found")."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInput("must not contain the NUL character", field=name)
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InvalidInput("must not contain the NUL character", field=name.replace("\x00", "") or "query")
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        body = await request.body()
        if b"\\u0000" in body or b"\x00" in body:
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                return  # not JSON: the route refuses it
            where = _nul_in(parsed, "")
            if where is not None:
                raise InvalidInput("must not contain the NUL character", field=where)


# Dependencies that do no I/O are ``async``: FastAPI runs sync dependencies in its threadpool,
# and each hop costs latency under load.


async def get_ledger(request: Request) -> Ledger:
    return request.app.state.ledger


async def get_auth(request: Request) -> Authenticator:
    return request.app.state.auth


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
AuthDep = Annotated[Authenticator, Depends(get_auth)]


def current_session(request: Request, auth: AuthDep,
                    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Session:
    """The caller's live session (401 otherwise); remembered on the request for the access log."""
    session = auth.session(creds.credentials if creds is not None else None)
    request.state.staff_id = session.principal.staff_id
    return session


SessionDep = Annotated[Session, Depends(current_session)]


def actor(endpoint: str, *, password_change_ok: bool = False):
    """A dependency giving the principal for ``endpoint``: the session's staff member, who must
    belong to the registrant in the URL and hold one of the roles the role table lists."""
    allowed = roles_for(endpoint)

    async def dependency(dea: Dea, session: SessionDep) -> Principal:
        return require_role(session, dea, allowed, password_change_ok=password_change_ok)

    dependency.__name__ = f"actor_{endpoint}"
    return Depends(dependency)


def passkey_responses(header: str | None) -> list[dict]:
    """The WebAuthn answers in a ``Passkey-Signature`` header (422 naming it when unreadable)."""
    out = []
    for part in (header or "").split(","):
        if not part.strip():
            continue
        try:
            value = json.loads(base64.urlsafe_b64decode(part.strip() + "=" * (-len(part.strip()) % 4)))
        except (ValueError, RecursionError):
            raise InvalidInput("must be base64url of a WebAuthn AuthenticationResponseJSON",
                               field="Passkey-Signature") from None
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise InvalidInput("must be base64url of a WebAuthn answer: a JSON object whose id is the credential id",
                               field="Passkey-Signature")
        out.append(value)
    return out


async def witness(request: Request, session: SessionDep, auth: AuthDep, idempotency_key: IdempotencyKey = None,
                  assertion: WitnessHeader = None, passkey: PasskeyHeader = None) -> Witness:
    """The witness of this request, from its ``Witness-Assertion`` header (401 when missing,
    unknown, replayed, expired, given on another login, or signed for another body)."""
    body = await request.body()
    return await run_in_threadpool(auth.redeem_assertion, session, assertion, body, idempotency_key,
                                   passkey_responses(passkey))


WitnessDep = Annotated[Witness, Depends(witness)]


async def optional_witness(request: Request, session: SessionDep, auth: AuthDep, idempotency_key: IdempotencyKey = None,
                           assertion: WitnessHeader = None, passkey: PasskeyHeader = None) -> Witness | None:
    """The witness when the request carries a ``Witness-Assertion`` (e.g. an infusion with waste)."""
    if not assertion:
        return None
    return await witness(request, session, auth, idempotency_key, assertion, passkey)


async def witnesses(request: Request, session: SessionDep, auth: AuthDep, idempotency_key: IdempotencyKey = None,
                    assertion: WitnessHeader = None, passkey: PasskeyHeader = None) -> list[Witness]:
    """Several witnesses: comma-separated assertions in one ``Witness-Assertion`` header."""
    tokens = [t.strip() for t in (assertion or "").split(",") if t.strip()]
    if not tokens:
        return [await witness(request, session, auth, idempotency_key, None)]
    body = await request.body()
    answers = passkey_responses(passkey)
    return [await run_in_threadpool(auth.redeem_assertion, session, t, body, idempotency_key, answers)
            for t in tokens]


OptionalWitnessDep = Annotated[Witness | None, Depends(optional_witness)]
WitnessesDep = Annotated[list[Witness], Depends(witnesses)]
