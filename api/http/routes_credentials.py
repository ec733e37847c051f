"""Staff signing credentials (issue 17): password keys, passkeys, revocation, and "my signatures".

Every credential is an entry (``staff_credential_enrolled`` / ``_revoked``): signed by the new
credential itself and approved by a second manager or administrator, who confirms on the same
screen with a ``Witness-Assertion`` (password or passkey). The registrant's first credential, the
root, is its administrator's, with no approver (``csledger init`` makes it; an older database's
administrator makes it here).
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import ConfigDict, Field

from api.http.auth import Witness, require_role
from api.http.deps import AuthDep, Dea, LedgerDep, OptionalWitnessDep, SessionDep, actor
from api.http.problems import AccessDenied
from api.http.roles import roles_for
from api.http.schemas import PROBLEM_RESPONSES, Body, Password, PublicModel, StaffId, Text, TotpCode
from ledger.domain.errors import InvalidInput, NotFound
from ledger.domain.principal import Principal
from ledger.integrity import staff_signatures as ss
from ledger.services import credentials as creds
from ledger.storage.authority import authority_at

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["signatures"], responses=PROBLEM_RESPONSES)

#: How long a passkey registration or enrolment challenge stays usable.
PENDING_SECONDS = 300


class SigningKeyCreate(Body):
    password: Password = Field(description="Your current password: the new key is wrapped under it.")
    totp: TotpCode | None = None
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"password": "correct horse battery staple"}]})


class CredentialEnrolledPublic(PublicModel):
    staff_id: str
    credential_id: str
    method: str
    fingerprint: str = Field(description="sha256 of the credential's method and public key; the root's is pinned.")
    seq: int
    root: bool = Field(description="The registrant's first credential: pin its fingerprint with the verifier keys.")
    approved_by: str | None


class CredentialPublic(PublicModel):
    staff_id: str
    credential_id: str
    method: str
    fingerprint: str
    enrolled_seq: int
    revoked_seq: int | None
    root: bool


class CredentialRevocationCreate(Body):
    reason: Text
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "security key lost"}]})


class PasskeyRegistrationCreate(Body):
    response: dict[str, Any] = Field(description="navigator.credentials.create()'s answer (RegistrationResponseJSON).")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"response": {
        "id": "AQID", "rawId": "AQID", "type": "public-key",
        "response": {"clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIn0", "attestationObject": "o2NmbXRkbm9uZQ"}}}]})


class PasskeyChallengePublic(PublicModel):
    public_key: dict[str, Any] = Field(description="WebAuthn options for navigator.credentials.create()/get().")
    credential_id: str | None = None
    statement: dict[str, Any] | None = Field(default=None, description="What the passkey signs (enrolment).")


class PasskeyEnrolCreate(Body):
    credential_id: Annotated[str, Field(min_length=1, max_length=1400)]
    assertion: dict[str, Any] = Field(description="navigator.credentials.get()'s answer over the enrolment statement.")
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"credential_id": "AQID", "assertion": {
        "id": "AQID", "rawId": "AQID", "type": "public-key",
        "response": {"clientDataJSON": "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0", "authenticatorData": "SZYN5YgO",
                     "signature": "MEUCIQ"}}}]})


class SignaturePublic(PublicModel):
    seq: int
    kind: str
    recorded_at: str
    occurred_at: str
    meaning: str
    auth_method: str
    credential_id: str | None
    statement: dict[str, Any] | None = Field(description="What you signed: the command and its fields.")


class SignaturePagePublic(PublicModel):
    items: list[SignaturePublic]
    next_cursor: int | None = Field(description="Pass as `cursor` for older signatures; null at the first.")


class _Pending:
    """Passkey ceremonies in progress, per session (in memory: a restart asks to start again)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[tuple[str, str], tuple[float, dict]] = {}

    def put(self, session_hash: str, what: str, value: dict) -> None:
        with self.lock:
            now = time.monotonic()
            self.items = {k: v for k, v in self.items.items() if v[0] > now}
            self.items[(session_hash, what)] = (now + PENDING_SECONDS, value)

    def take(self, session_hash: str, what: str) -> dict | None:
        with self.lock:
            found = self.items.pop((session_hash, what), None)
        return None if found is None or found[0] < time.monotonic() else found[1]


PENDING = _Pending()


def _approver(w: Witness | None) -> Principal | None:
    return None if w is None else w.principal


@router.post("/me/signing-key", status_code=status.HTTP_201_CREATED, response_model=CredentialEnrolledPublic,
             name="enrol_signing_key")
def enrol_signing_key(dea: Dea, body: SigningKeyCreate, session: SessionDep, auth: AuthDep,
                      p: Annotated[Principal, actor("enrol_signing_key")],
                      approver: OptionalWitnessDep = None) -> CredentialEnrolledPublic:
    """Make your password key: an Ed25519 key wrapped under your password, enrolled as an entry
    signed by the key itself and approved by a second manager or administrator (sent as
    ``Witness-Assertion``). Replaces your earlier password key. The registrant's first credential
    is its administrator's, with no approver."""
    member = auth.store.staff(dea, p.staff_id)
    if member is None:
        raise NotFound(f"staff member {p.staff_id} is not enrolled", field="staff_id")
    with auth.store.ledger.reading() as conn:
        root = not authority_at(conn, dea).signing_required
    s = auth.settings
    res = auth.enrol_signing_key(member, p, body.password, approver=_approver(approver), session=session,
                                 rp_id=s.webauthn_rp_id if root else None,
                                 origins=tuple(s.webauthn_origins) if root else ())
    return CredentialEnrolledPublic(**{k: res[k] for k in CredentialEnrolledPublic.model_fields})


@router.get("/staff/{staff_id}/credentials", response_model=list[CredentialPublic], name="list_staff_credentials")
def list_staff_credentials(dea: Dea, staff_id: StaffId, session: SessionDep, ledger: LedgerDep,
                           auth: AuthDep) -> list[CredentialPublic]:
    """A staff member's credentials, active and revoked (yours, or anyone's for managers,
    administrators, compliance officers and auditors)."""
    p = require_role(session, dea, frozenset())
    if staff_id != p.staff_id and not session.roles & roles_for("list_staff_credentials"):
        raise AccessDenied("you may list your own credentials only", type_="role-required", field="staff_id")
    if auth.store.staff(dea, staff_id) is None:  # a mistyped id must not read as "no credentials"
        raise NotFound(f"no staff member {staff_id} at {dea}", field="staff_id")
    return [CredentialPublic(**c) for c in creds.credentials_of(ledger, dea, staff_id)]


@router.post("/staff/{staff_id}/credentials/{credential_id}/revocation", status_code=status.HTTP_201_CREATED,
             name="revoke_credential")
def revoke_credential(dea: Dea, staff_id: StaffId, credential_id: Annotated[str, Field(max_length=1400)],
                      body: CredentialRevocationCreate, ledger: LedgerDep,
                      who: Annotated[Principal, actor("revoke_credential")]) -> dict:
    """Revoke a credential (a lost security key, a departure): by its owner, or a manager or
    administrator. It signs nothing recorded after this entry."""
    return creds.revoke_credential(ledger, who, staff_id, credential_id, body.reason)


@router.post("/me/passkeys/registration-options", response_model=PasskeyChallengePublic,
             name="passkey_registration_options")
def passkey_registration_options(dea: Dea, session: SessionDep, ledger: LedgerDep) -> PasskeyChallengePublic:
    """Step 1 of enrolling a passkey: options for navigator.credentials.create() (a roaming
    security key or your own phone; never a passkey kept on a shared tablet)."""
    p = require_role(session, dea, roles_for("passkey_registration_options"))
    options, challenge = creds.begin_passkey_registration(ledger, p, field="registrant")
    PENDING.put(session.token_hash, "registration", {"challenge": challenge})
    return PasskeyChallengePublic(public_key=options)


@router.post("/me/passkeys/registrations", response_model=PasskeyChallengePublic, name="passkey_registration")
def passkey_registration(dea: Dea, body: PasskeyRegistrationCreate, session: SessionDep, ledger: LedgerDep,
                         p: Annotated[Principal, actor("passkey_registration")]) -> PasskeyChallengePublic:
    """Step 2: the authenticator's registration answer is checked; the answer is the enrolment
    statement for the new passkey to sign (proof you hold it), with options for navigator.credentials.get()."""
    creds.passkey_relying_party(ledger, dea, field="registrant")
    pending = PENDING.take(session.token_hash, "registration")
    if pending is None:
        raise InvalidInput("no passkey registration is in progress on this session (or it expired): start again",
                           field="response")
    enrolment = creds.finish_passkey_registration(ledger, p, pending["challenge"], body.response, field="response")
    st, options = creds.passkey_enrolment_challenge(ledger, p, enrolment, field="registrant")
    PENDING.put(session.token_hash, "enrolment", enrolment)
    return PasskeyChallengePublic(public_key=options, credential_id=enrolment["credential_id"], statement=st)


@router.post("/me/passkeys", status_code=status.HTTP_201_CREATED, response_model=CredentialEnrolledPublic,
             name="enrol_passkey")
def enrol_passkey(dea: Dea, body: PasskeyEnrolCreate, session: SessionDep, ledger: LedgerDep,
                  p: Annotated[Principal, actor("enrol_passkey")],
                  approver: OptionalWitnessDep = None) -> CredentialEnrolledPublic:
    """Step 3: enrol the passkey: its assertion over the enrolment statement, approved by a second
    manager or administrator (``Witness-Assertion``)."""
    pending = PENDING.take(session.token_hash, "enrolment")
    if pending is None or pending["credential_id"] != body.credential_id:
        raise InvalidInput("no passkey enrolment of this credential is in progress on this session: start again",
                           field="credential_id")
    res = creds.enrol_passkey(ledger, p, credential_id=pending["credential_id"], public_key=pending["public_key"],
                              possession=ss.PasskeySigner(pending["nonce"], body.assertion),
                              approver=_approver(approver))
    return CredentialEnrolledPublic(**{k: res[k] for k in CredentialEnrolledPublic.model_fields})


@router.get("/me/signatures", response_model=SignaturePagePublic, name="my_signatures")
def my_signatures(dea: Dea, session: SessionDep, ledger: LedgerDep,
                  cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50) -> SignaturePagePublic:
    """Every entry you signed, newest first, with the statement you signed: a compromised
    server could show you one command and record another; here you see what was recorded."""
    p = require_role(session, dea, roles_for("my_signatures"), password_change_ok=True)
    items, next_cursor = creds.signatures_of(ledger, dea, p.staff_id, before=cursor, limit=limit)
    return SignaturePagePublic(items=[SignaturePublic(**i) for i in items], next_cursor=next_cursor)


__all__ = ["router"]
