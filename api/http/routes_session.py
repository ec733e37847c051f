"""Logins, sessions, credentials and witness assertions (not ledger entries)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import Field

from api.http.auth import require_role
from api.http.deps import AuthDep, Dea, SessionDep, actor
from api.http.problems import AccessDenied, SignInThrottled
from api.http.roles import roles_for
from api.http.schemas import (
    PROBLEM_RESPONSES,
    CredentialPublic,
    LoginCreate,
    PasswordChangeCreate,
    Problem,
    PublicModel,
    SessionPublic,
    SessionsRevokedPublic,
    StaffId,
    StaffPasswordCreate,
    WhoAmIPublic,
    WitnessAssertionCreate,
    WitnessAssertionPublic,
)
from ledger.domain.alerts import Candidate
from ledger.domain.errors import InvalidInput, NotFound
from ledger.domain.principal import Principal
from ledger.integrity.canonical import format_time


class SignInRoute(APIRoute):
    """A throttled sign-in (login, witness sign-off, password change) is a 429 problem with a
    ``Retry-After`` header and the end of the wait in the body (``until``, UTC)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInThrottled as exc:
                from api.http.app import problem  # the app module builds every problem response

                return problem(exc.status, exc.type, str(exc), headers=exc.headers,
                               errors=[{"field": exc.field, "reason": exc.reason}], retry_after=exc.retry_after,
                               until=exc.until)

        return route


THROTTLED = {429: {"description": "Too many failed sign-ins for this login: refused without checking the "
                                  "password; retry after the Retry-After header's seconds",
                   "content": {"application/problem+json": {"schema": Problem.model_json_schema()}}}}
router = APIRouter(prefix="/v1/registrants/{dea}", tags=["sessions"], responses=PROBLEM_RESPONSES,
                   route_class=SignInRoute)


class SignInThrottlePublic(PublicModel):
    staff_id: str
    cleared: bool = Field(description="False when the login had no failed sign-ins to clear.")
    failed_attempts: int = Field(description="Consecutive failed sign-ins before clearing.")
    throttled_until: str | None = Field(default=None, description="Where the throttle would have ended (UTC).")


@router.post("/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionPublic, name="login",
             openapi_extra={"security": []}, responses=THROTTLED)
def login(dea: Dea, body: LoginCreate, auth: AuthDep) -> SessionPublic:
    """Log in with username, password and (administrators, managers) a TOTP code; answers a
    short-lived bearer token. Not idempotent: every login opens a new session."""
    token, s = auth.login(dea, body.username, body.password, body.totp)
    return SessionPublic(
        access_token=token, expires_at=s.expires_at, idle_timeout_seconds=auth.settings.session_idle_minutes * 60,
        registrant=dea, staff_id=s.principal.staff_id, printed_name=s.principal.printed_name,
        roles=sorted(s.roles), auth_method=s.principal.auth_method.value,
        password_change_required=s.must_change_password)


@router.delete("/sessions/current", status_code=status.HTTP_204_NO_CONTENT, name="logout")
def logout(dea: Dea, session: SessionDep, auth: AuthDep) -> Response:
    """End this session: the bearer token stops working at once."""
    require_role(session, dea, roles_for("logout"), password_change_ok=True)
    auth.logout(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=WhoAmIPublic, name="whoami")
def whoami(dea: Dea, session: SessionDep) -> WhoAmIPublic:
    """Who this session acts as, with the roles held now (read from the role entries)."""
    p = require_role(session, dea, roles_for("whoami"), password_change_ok=True)
    return WhoAmIPublic(registrant=p.registrant, staff_id=p.staff_id, printed_name=p.printed_name,
                        roles=sorted(session.roles), auth_method=p.auth_method.value, expires_at=session.expires_at,
                        password_change_required=session.must_change_password)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, name="change_own_password",
             responses=THROTTLED)
def change_own_password(dea: Dea, body: PasswordChangeCreate, session: SessionDep, auth: AuthDep) -> Response:
    """Change your own password (needs the current one). Every session of yours ends; log in again."""
    p = require_role(session, dea, roles_for("change_own_password"), password_change_ok=True)
    auth.change_password(session, p, body.current_password, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/staff/{staff_id}/password", response_model=CredentialPublic, name="set_staff_password")
def set_staff_password(staff_id: StaffId, body: StaffPasswordCreate, auth: AuthDep,
                       admin: Annotated[Principal, actor("set_staff_password")]) -> CredentialPublic:
    """An administrator sets a temporary password for a staff member (who must change it at first
    login), ending their sessions; a TOTP secret is created and shown once where needed."""
    member = auth.store.staff(admin.registrant, staff_id)
    if member is None:
        raise NotFound(f"no staff member {staff_id!r} at {admin.registrant}", field="staff_id")
    if staff_id == admin.staff_id:
        raise AccessDenied("change your own password at POST .../me/password", type_="own-password-reset",
                           field="staff_id")
    prior = auth.store.signing_record(auth.store.credential(admin.registrant, staff_id))
    secret = auth.set_password(member, body.password, must_change=True, enroll_totp=body.enroll_totp)
    if prior is not None and auth.store.signing_record(auth.store.credential(admin.registrant, staff_id)) is None:
        # The key wrapped under the old password is gone with it; its credential must not stay
        # usable by anyone who kept a copy of the record: revoked, signed by the administrator.
        from ledger.services.credentials import credentials_of, revoke_credential

        if any(c["credential_id"] == prior["credential_id"] and c["revoked_seq"] is None
               for c in credentials_of(auth.store.ledger, admin.registrant, staff_id)):
            revoke_credential(auth.store.ledger, admin, staff_id, prior["credential_id"],
                              f"password reset by {admin.staff_id}")
    # Whoever sets a temporary password knows it and could sign in as that person before they
    # do: every reset is put in front of those who follow alerts up (review of issue 15).
    now = format_time(auth.now())
    auth.raise_alert(admin.registrant, Candidate(
        alert_key=f"staff_password_set:{staff_id}:{now}", rule="staff_password_set", severity="medium",
        subjects=(admin.staff_id, staff_id),
        summary=f"{admin.printed_name} ({admin.staff_id}) set a temporary password for {member.printed_name} "
                f"({staff_id}) at {now}; until {staff_id} replaces it, {admin.staff_id} knows it",
        parameters={}, evidence_seqs=(), figures={"set_by": admin.staff_id, "staff_id": staff_id, "set_at": now,
                                                  "totp_enrolled": "yes" if secret else "no"}))
    return CredentialPublic(staff_id=staff_id, password_change_required=True, totp_secret=secret,
                            totp_uri=auth.totp_uri(member, secret) if secret else None)


@router.delete("/staff/{staff_id}/sessions", response_model=SessionsRevokedPublic, name="revoke_staff_sessions")
def revoke_staff_sessions(staff_id: StaffId, auth: AuthDep,
                          who: Annotated[Principal, actor("revoke_staff_sessions")]) -> SessionsRevokedPublic:
    """End every session of a staff member at once (a lost tablet, a departure)."""
    if auth.store.staff(who.registrant, staff_id) is None:  # a mistyped id must not read as "0 ended"
        raise NotFound(f"no staff member {staff_id} at {who.registrant}", field="staff_id")
    n = auth.revoke_all(who.registrant, staff_id, f"revoked by {who.staff_id}")
    return SessionsRevokedPublic(staff_id=staff_id, revoked=n)


@router.delete("/staff/{staff_id}/sign-in-throttle", response_model=SignInThrottlePublic,
               name="clear_sign_in_throttle")
def clear_sign_in_throttle(staff_id: StaffId, auth: AuthDep,
                           who: Annotated[Principal, actor("clear_sign_in_throttle")]) -> SignInThrottlePublic:
    """Clear a staff member's failed sign-ins and throttle at once (they forgot their password,
    or someone guessed at it and they must witness now). Recorded as a
    ``sign_in_throttle_cleared`` alert naming who cleared it; no one clears their own."""
    prior = auth.clear_throttle(who, staff_id)
    failures, until = prior if prior is not None else (0, None)
    return SignInThrottlePublic(staff_id=staff_id, cleared=prior is not None, failed_attempts=failures,
                                throttled_until=until)


@router.post("/witness-assertions", status_code=status.HTTP_201_CREATED, response_model=WitnessAssertionPublic,
             name="create_witness_assertion", responses=THROTTLED)
def create_witness_assertion(body: WitnessAssertionCreate, session: SessionDep, auth: AuthDep,
                             _: Annotated[Principal, actor("create_witness_assertion")]) -> WitnessAssertionPublic:
    """The witness enters their own credentials on the recording person's device; the answer is a
    single-use assertion for exactly the command body whose SHA-256 is given, valid 2 minutes.
    Send it as the ``Witness-Assertion`` header of that command."""
    if body.method == "passkey":
        if body.password is not None:
            raise InvalidInput("a passkey confirmation sends no password", field="password")
        token, witness, expires = auth.issue_passkey_assertion(session, body.username, body.body_sha256)
    else:
        if body.password is None:
            raise InvalidInput("the witness types their password (or uses method passkey)", field="password")
        token, witness, _method, expires = auth.issue_assertion(session, body.username, body.password, body.totp,
                                                               body.body_sha256)
    return WitnessAssertionPublic(assertion=token, expires_at=expires, witness_staff_id=witness.staff_id,
                                  witness_printed_name=witness.printed_name, body_sha256=body.body_sha256.lower())
