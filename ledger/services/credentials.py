"""Staff credentials (issue 17): the keys and passkeys people sign entries with, enrolled as entries.

A credential is enrolled by its owner, signing the enrolment with the new credential itself (proof
they hold it), and approved by a manager or administrator with a credential of their own. The
registrant's first credential (the **root**) is its first administrator's, made at ``init``; it
needs no approver, and from it on every signature on every entry is a staff signature. Rotation is
an enrolment that ``replaces`` the old credential; revocation is an entry. The ledger's log key
takes no part: it can add no credential and sign as nobody.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.domain import entries as ev
from ledger.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal
from ledger.integrity import staff_signatures as ss
from ledger.integrity.credential_chain import APPROVER_ROLES, Credential
from ledger.services.common import text
from ledger.storage.store import CommandContext, Ledger


def _approval(ctx: CommandContext, owner: Principal, approver: Principal | None, new: Credential) -> list[dict]:
    """The approval signature(s) a new credential needs (none for the root)."""
    authority = ctx.authority()
    if not authority.signing_required:
        if approver is not None:
            raise InvalidInput("the registrant's first credential is its administrator's own, with no approver",
                               field="approver")
        if "administrator" not in authority.roles(owner.staff_id):
            raise Forbidden("the registrant's first credential must be an administrator's: the administrator "
                            "enrolled at init enrols theirs first", type_="credential-root-not-administrator",
                            field="principal")
        return []
    others = {c.staff_id for c in authority.credentials.values()
              if c.active and authority.roles(c.staff_id) & APPROVER_ROLES} - {owner.staff_id}
    if approver is None:
        if others:
            raise InvalidInput("a manager or administrator other than the owner approves a new credential: "
                               "they confirm on this screen (Witness-Assertion)", type_="approver-required",
                               field="approver")
        approver = owner  # the only approver is the owner: their earlier credential vouches for the new one
    elif approver.staff_id == owner.staff_id:
        raise Conflict("the approver must be a second person", field="approver")
    if approver is owner and owner.signer is not None and owner.signer.credential_id == new.credential_id:
        raise InvalidInput("an earlier credential of yours approves this one: sign in with it", field="approver")
    try:
        return [ctx.signature(approver, Meaning.APPROVED, roles=APPROVER_ROLES)]
    except (NotFound, Forbidden) as exc:
        raise type(exc)(exc.reason, field="approver", type_=exc.type) from None


def _enrol(ledger: Ledger, owner: Principal, new_signer: Any, event: ev.StaffCredentialEnrolled, *,
           approver: Principal | None, request: dict, idempotency_key: str | None,
           replace_active: bool = False) -> dict:
    def build(ctx: CommandContext) -> dict:
        nonlocal event
        authority = ctx.authority()
        if authority.member(owner.staff_id) is None:
            raise NotFound(f"staff member {owner.staff_id} is not enrolled at {ctx.registrant}", field="staff_id")
        if authority.signing_required and (event.rp_id is not None or event.origins):
            raise InvalidInput("only the registrant's root credential fixes the WebAuthn relying party",
                               field="rp_id")
        if replace_active:
            # Decided under the registrant's lock: two rotations at once must not both keep a key.
            same = [c for c in authority.active_credentials(owner.staff_id) if c.method == event.method]
            event = replace(event, replaces=same[-1].credential_id if same else None)
        if event.credential_id in authority.credentials:
            raise Conflict(f"credential {event.credential_id} is already enrolled", field="credential_id")
        if event.replaces is not None:
            old = authority.credentials.get(event.replaces)
            if old is None or old.staff_id != owner.staff_id or not old.active:
                raise NotFound(f"{owner.staff_id} has no active credential {event.replaces} to replace",
                               field="replaces")
        new = Credential(owner.staff_id, event.credential_id, event.method, event.public_key, event.fingerprint,
                         ctx.next_seq)
        approvals = _approval(ctx, owner, approver, new)
        mine = ctx.signature(replace(owner, signer=new_signer), Meaning.PERFORMED, credential=new)
        e = ctx.append(event, signatures=[mine, *approvals], occurred_at=ctx.now)
        return {"staff_id": owner.staff_id, "credential_id": event.credential_id, "method": event.method,
                "replaces": event.replaces,
                "fingerprint": event.fingerprint, "seq": e.seq, "root": not authority.signing_required,
                "approved_by": approvals[0]["staff_id"] if approvals else None}

    return ledger.execute(owner.registrant, "enrol_credential", request, build, principal_id=owner.staff_id,
                          idempotency_key=idempotency_key)


def enrol_password_key(ledger: Ledger, owner: Principal, password: str, *, params: ss.KdfParams,
                       approver: Principal | None = None, replaces: str | None = None, rp_id: str | None = None,
                       origins: tuple[str, ...] = (), idempotency_key: str | None = None,
                       replace_active: bool = False) -> tuple[dict, dict, Ed25519PrivateKey]:
    """Make and enrol a password key for ``owner``: an Ed25519 key wrapped under their password.

    Returns (the command's response, the wrapped-key record to store with their login, the
    opened private key). ``rp_id`` and ``origins`` fix the WebAuthn relying party and are
    accepted only for the root. The caller stores the record; until then nothing can open it.
    """
    private = Ed25519PrivateKey.generate()
    pub = ss.public_key_text(private)
    cid = ss.password_key_credential_id(pub)
    record = ss.wrap_key(private, password, bound_to=f"{owner.registrant}|{owner.staff_id}|{cid}", params=params)
    record["credential_id"] = cid
    event = ev.StaffCredentialEnrolled(staff_id=owner.staff_id, credential_id=cid, method=ss.PASSWORD_KEY,
                                       public_key=pub, fingerprint=ss.fingerprint(ss.PASSWORD_KEY, pub),
                                       replaces=replaces, rp_id=rp_id, origins=tuple(origins))
    request = {"type": "EnrolCredential", "staff_id": owner.staff_id, "method": ss.PASSWORD_KEY,
               "credential_id": cid, "public_key": pub, "replaces": "active" if replace_active else replaces,
               "rp_id": rp_id, "origins": list(origins)}
    res = _enrol(ledger, owner, ss.PasswordKeySigner(private, cid), event, approver=approver, request=request,
                 idempotency_key=idempotency_key, replace_active=replace_active)
    return res, record, private


def enrol_passkey(ledger: Ledger, owner: Principal, *, credential_id: str, public_key: str,
                  possession: Any, approver: Principal | None = None, idempotency_key: str | None = None) -> dict:
    """Enrol a passkey whose registration the caller verified; ``possession`` is a passkey signer
    carrying the new passkey's assertion over the enrolment statement (nonce from the caller)."""
    cid = text(credential_id, field="credential_id", max_len=512)
    pub = text(public_key, field="public_key", max_len=2048)
    event = ev.StaffCredentialEnrolled(staff_id=owner.staff_id, credential_id=cid, method=ss.PASSKEY,
                                       public_key=pub, fingerprint=ss.fingerprint(ss.PASSKEY, pub))
    request = {"type": "EnrolCredential", "staff_id": owner.staff_id, "method": ss.PASSKEY, "credential_id": cid,
               "public_key": pub, "replaces": None, "rp_id": None, "origins": []}
    return _enrol(ledger, owner, possession, event, approver=approver, request=request,
                  idempotency_key=idempotency_key)


def passkey_enrolment_statement(registrant: str, staff_id: str, credential_id: str, public_key: str,
                                nonce: str) -> dict:
    """The statement a new passkey signs to prove its owner holds it (same fields as the entry's)."""
    request = {"type": "EnrolCredential", "staff_id": staff_id, "method": ss.PASSKEY, "credential_id": credential_id,
               "public_key": public_key, "replaces": None, "rp_id": None, "origins": []}
    return ss.statement(registrant, "enrol_credential", Meaning.PERFORMED.value, request, nonce)


# --- passkey enrolment ceremony (the API and the pages share these steps) --------------------------


def passkey_relying_party(ledger: Ledger, registrant: str, *, field: str) -> Any:
    """The registrant's authority, once its root credential has fixed a WebAuthn relying party;
    409 naming ``field`` before that (no passkey can be checked without it)."""
    from ledger.storage.authority import authority_at

    with ledger.reading() as conn:
        authority = authority_at(conn, registrant)
    if not authority.signing_required:
        raise Conflict("no one at this registrant has a signing key yet: its administrator makes the first one "
                       "(the root) before anyone enrols a passkey", field=field)
    if authority.relying_party is None:
        raise Conflict("this registrant fixed no WebAuthn relying party when its root key was made; passkeys "
                       "cannot be used", field=field)
    return authority


def begin_passkey_registration(ledger: Ledger, who: Principal, *, field: str) -> tuple[dict, str]:
    """Step 1: options for navigator.credentials.create (a roaming security key or the person's own
    phone, never a passkey kept on a shared tablet) and the challenge (base64url) to keep for step 2."""
    import secrets

    from ledger.integrity import passkeys

    authority = passkey_relying_party(ledger, who.registrant, field=field)
    challenge = secrets.token_bytes(32)
    existing = [ss.unb64u(c.credential_id) for c in authority.active_credentials(who.staff_id) if c.method == ss.PASSKEY]
    options = passkeys.registration_options(
        rp_id=authority.relying_party.rp_id, rp_name="csledger", user_id=f"{who.registrant}|{who.staff_id}".encode(),
        user_name=who.staff_id, display_name=who.printed_name, challenge=challenge, exclude_credential_ids=existing)
    return options, ss.b64u(challenge)


def finish_passkey_registration(ledger: Ledger, who: Principal, challenge: str, answer: Any, *,
                                field: str) -> dict:
    """Step 2: check the authenticator's registration answer against the kept challenge; returns
    the enrolment to keep for step 3 (credential id, COSE public key, algorithm, statement nonce)."""
    from ledger.integrity import passkeys

    rp = passkey_relying_party(ledger, who.registrant, field=field).relying_party
    try:
        reg = passkeys.verify_registration(answer, challenge=ss.unb64u(challenge), rp_id=rp.rp_id,
                                           origins=list(rp.origins))
    except passkeys.PasskeyError as exc:
        raise InvalidInput(f"the passkey's registration does not verify: {exc.reason}", field=field) from None
    return {**reg, "nonce": ss.new_nonce()}


def passkey_enrolment_challenge(ledger: Ledger, who: Principal, enrolment: dict, *, field: str) -> tuple[dict, dict]:
    """Step 3's prompt: the enrolment statement the new passkey signs, and the options for
    navigator.credentials.get over it."""
    from ledger.integrity import passkeys

    rp = passkey_relying_party(ledger, who.registrant, field=field).relying_party
    st = passkey_enrolment_statement(who.registrant, who.staff_id, enrolment["credential_id"],
                                     enrolment["public_key"], enrolment["nonce"])
    options = passkeys.authentication_options(rp_id=rp.rp_id, challenge=passkeys.challenge_for(ss.statement_bytes(st)),
                                              credential_ids=[ss.unb64u(enrolment["credential_id"])])
    return st, options


def revoke_credential(ledger: Ledger, actor: Principal, staff_id: str, credential_id: str, reason: str, *,
                      idempotency_key: str | None = None) -> dict:
    """Revoke a credential: its owner, or a manager or administrator, signs the revocation."""
    why = text(reason, field="reason", max_len=500)

    def build(ctx: CommandContext) -> dict:
        authority = ctx.authority()
        cred = authority.credentials.get(credential_id)
        if cred is None or cred.staff_id != staff_id:
            raise NotFound(f"{staff_id} has no credential {credential_id}", field="credential_id")
        if not cred.active:
            raise Conflict(f"credential {credential_id} was already revoked (entry {cred.revoked_seq})",
                           field="credential_id")
        roles = None if actor.staff_id == staff_id else APPROVER_ROLES
        sig = ctx.signature(actor, Meaning.PERFORMED, roles=roles)
        e = ctx.append(ev.StaffCredentialRevoked(staff_id=staff_id, credential_id=credential_id, reason=why),
                       signatures=[sig], occurred_at=ctx.now)
        return {"staff_id": staff_id, "credential_id": credential_id, "seq": e.seq}

    return ledger.execute(actor.registrant, "revoke_credential",
                          {"type": "RevokeCredential", "staff_id": staff_id, "credential_id": credential_id,
                           "reason": why}, build, principal_id=actor.staff_id, idempotency_key=idempotency_key)


def credentials_of(ledger: Ledger, registrant: str, staff_id: str | None = None) -> list[dict]:
    """Enrolled credentials (active and revoked) from the chain, optionally of one person."""
    from ledger.storage.authority import authority_at

    with ledger.reading() as conn:
        authority = authority_at(conn, registrant)
    return [{"staff_id": c.staff_id, "credential_id": c.credential_id, "method": c.method,
             "fingerprint": c.fingerprint, "enrolled_seq": c.enrolled_seq, "revoked_seq": c.revoked_seq,
             "root": c.enrolled_seq == authority.root_seq}
            for c in authority.credentials.values() if staff_id is None or c.staff_id == staff_id]


def signatures_of(ledger: Ledger, registrant: str, staff_id: str, *, before: int | None, limit: int
                  ) -> tuple[list[dict], int | None]:
    """Entries ``staff_id`` signed, newest first, before seq ``before``: (items, next cursor).

    Reads the chain backwards in batches and decodes each entry (no index of signers is kept:
    a table a database writer could edit is exactly what this page must not trust)."""
    from ledger.integrity import canonical as canon
    from ledger.storage.store import raw

    items: list[dict] = []
    upper = before
    with ledger.reading() as conn:
        r = raw(conn)
        while len(items) < limit:
            rows = r.rows(conn, "SELECT seq, canonical FROM entries WHERE registrant = :r"
                          + ("" if upper is None else " AND seq < :u") + " ORDER BY seq DESC LIMIT 500",
                          {"r": registrant, "u": upper})
            if not rows:
                return items, None
            for row in rows:
                upper = row["seq"]
                e = canon.decode(bytes(row["canonical"]))
                for sig in e.get("signatures") or []:
                    if isinstance(sig, dict) and sig.get("staff_id") == staff_id:
                        items.append({"seq": e["seq"], "kind": e["kind"], "recorded_at": e["recorded_at"],
                                      "occurred_at": e["occurred_at"], "meaning": sig.get("meaning"),
                                      "auth_method": sig.get("auth_method"),
                                      "credential_id": sig.get("credential_id"),
                                      "statement": sig.get("statement")})
                if len(items) >= limit:
                    return items, (upper if upper else None)
    return items, None


__all__ = ["begin_passkey_registration", "credentials_of", "finish_passkey_registration",
           "passkey_enrolment_challenge", "passkey_relying_party", "signatures_of", "enrol_passkey", "enrol_password_key", "passkey_enrolment_statement",
           "revoke_credential"]
