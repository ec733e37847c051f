"""Authentication: argon2 passwords (pwdlib), password rules, bearer sessions with idle and
absolute expiry, sign-in throttling after repeated failures, TOTP (pyotp) for administrators and
managers, and single-use witness assertions bound to one command body.

Throttling: every sign-in attempt (login, witness sign-off, password change) on an existing login
is counted as a failure in one conditional UPDATE *before* its password is checked, and a success
resets the count. After ``lockout_after_failures`` failures the login is throttled: attempts are
refused (429, ``Retry-After``) unchecked until a delay has passed, then one attempt is checked
per delay, the delay doubling with each failure up to a cap. A manager or administrator can clear
it. A burst of concurrent guesses therefore gets at most the threshold's worth of checks.

Bearer tokens and witness assertions are random (``secrets``), handed out once and stored only as
their SHA-256. Who a request acts as is the staff member of the session; the roles it may use are
read on every request from the role entries of the chain (``ledger.storage.authority``, cached by
chain head), never from the ``staff_roles`` projection, so a ``role_revoked`` entry takes effect
at once and a role row written into the database by hand grants nothing.

TOTP secrets are stored sealed (``TotpKey``, AES-GCM, key outside the database, bound to the
login); the secret is shown once, in the clear, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyotp
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from api.http.auth_store import AuthStore, StaffMember, TotpKey, TotpKeyError
from api.http.problems import AccessDenied, SignInThrottled, Unauthorized
from ledger.domain.alerts import Candidate
from ledger.domain.errors import InvalidInput, LedgerError, NotFound
from ledger.domain.principal import AuthMethod, Principal, Role
from ledger.integrity import staff_signatures as ss
from ledger.integrity.canonical import format_time, parse_time
from ledger.services.alerts import raise_alerts
from ledger.settings import Settings

log = logging.getLogger(__name__)

#: Roles whose logins need a second factor (TOTP): they change who may do what.
TOTP_ROLES = frozenset({Role.ADMINISTRATOR.value, Role.MANAGER.value})
PASSWORD_MIN = 12
PASSWORD_MAX = 128
#: A few of the most used passwords of at least 12 characters; a real deployment may extend it.
COMMON_PASSWORDS = frozenset({
    "123456789012", "1234567890123", "qwertyuiopas", "passwordpassword", "password1234", "password12345",
    "iloveyou1234", "qwerty123456", "letmein12345", "welcome12345", "administrator", "changeme1234",
    "ketamine1234", "password123!", "Password1234", "Password123!", "abcdefghijkl", "111111111111",
})
TOKEN_PREFIX = "csl_"
ASSERTION_PREFIX = "csw_"
#: How often a session's last-use time is written (not on every request: that would serialize reads).
TOUCH_EVERY = timedelta(seconds=30)


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def default_hasher() -> PasswordHash:
    """argon2id with pwdlib's recommended parameters (64 MiB, 3 passes)."""
    return PasswordHash.recommended()


def fast_test_hasher() -> PasswordHash:
    """argon2id with tiny parameters: for tests only, never for a deployment. An authenticator
    given it derives signing-key wrap keys at the same tiny cost (``staff_signatures.TEST_KDF``)."""
    hasher = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    hasher.csledger_test = True  # type: ignore[attr-defined]
    return hasher


def wait_words(seconds: int) -> str:
    """A wait in plain words, rounded up: "30 seconds", "1 minute", "15 minutes"."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def check_password_rules(password: str, *, username: str, printed_name: str, field: str = "password") -> None:
    """NIST SP 800-63B style: long, not common, not the user's own name; no composition rules."""
    if not isinstance(password, str):
        raise InvalidInput("must be text", field=field)
    if len(password) < PASSWORD_MIN:
        raise InvalidInput(f"must be at least {PASSWORD_MIN} characters", field=field)
    if len(password) > PASSWORD_MAX:
        raise InvalidInput(f"must be at most {PASSWORD_MAX} characters", field=field)
    if not password.isprintable():
        raise InvalidInput("must not contain control characters", field=field)
    low = password.lower()
    if low in {p.lower() for p in COMMON_PASSWORDS}:
        raise InvalidInput("is a commonly used password; choose another", field=field)
    if len(set(password)) < 5:
        raise InvalidInput("must use at least 5 different characters", field=field)
    names = [username.lower()] + [p.lower() for p in printed_name.split() if len(p) >= 4]
    if any(n and n in low for n in names):
        raise InvalidInput("must not contain your username or name", field=field)


@dataclass(frozen=True)
class Session:
    """An authenticated bearer session, as the routes see it."""

    token_hash: str
    principal: Principal
    roles: frozenset[str]
    must_change_password: bool
    expires_at: str
    #: The bearer token itself, held for this request only: it opens the session's signing key.
    token: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Witness:
    """A witness established by a consumed assertion: their principal, for the service."""

    principal: Principal
    roles: frozenset[str]


class BoundedHasher:
    """A password hasher that runs at most ``slots`` hashes at once.

    Each argon2id check takes 64 MiB. The server answers requests from a pool of threads, so a
    burst of logins and witness sign-offs (every infusion has one) would otherwise allocate
    64 MiB per thread at once; beyond the number of cores extra parallel hashes only add memory,
    not speed. Callers queue for a slot instead."""

    def __init__(self, hasher: PasswordHash, slots: int):
        self.inner = hasher
        self._slots = threading.BoundedSemaphore(max(1, slots))

    def hash(self, password: str) -> str:
        with self._slots:
            return self.inner.hash(password)

    def slot(self) -> threading.BoundedSemaphore:
        """Hold a slot for other argon2id work (opening a password key)."""
        return self._slots

    def verify(self, password: str, hash_: str) -> bool:
        with self._slots:
            return self.inner.verify(password, hash_)

    def verify_and_update(self, password: str, hash_: str) -> tuple[bool, str | None]:
        with self._slots:
            return self.inner.verify_and_update(password, hash_)


class Authenticator:
    """Login, sessions, credentials and witness assertions for the HTTP layer."""

    def __init__(self, store: AuthStore, settings: Settings, *, clock: Callable[[], datetime],
                 hasher: PasswordHash | None = None, signing_kdf: ss.KdfParams | None = None):
        self.store = store
        #: argon2id cost of the password keys (issue 17): one run per sign-in checks the password
        #: and opens the key. Tiny only with the test hasher.
        self.kdf = signing_kdf or (ss.TEST_KDF if getattr(hasher, "csledger_test", False) else ss.KdfParams())
        self.settings = settings
        self.clock = clock
        self.hasher = BoundedHasher(hasher or default_hasher(), getattr(settings, "password_hash_slots", 2))
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        self._totp_key: TotpKey | None = None
        self._totp_lock = threading.Lock()

    @property
    def totp_key(self) -> TotpKey:
        """The key sealing TOTP secrets, loaded at first use. The process that creates the key
        file (the first start of a deployment with sealed secrets) seals, in place, every secret
        an earlier version stored in plaintext; from then on a plaintext secret is refused."""
        with self._totp_lock:
            if self._totp_key is None:
                key, created = TotpKey.load(self.settings)
                if created:
                    sealed = self.store.seal_plaintext_totp(key.seal)
                    if sealed:
                        log.warning("sealed %d TOTP secrets stored in plaintext by an earlier version", sealed)
                self._totp_key = key
            return self._totp_key

    def _totp_secret(self, member: StaffMember, stored: str) -> str:
        """The base32 secret behind a stored (sealed) one; 401 when it is not sealed for this
        login under this server's key (plaintext written into the row, or moved from another)."""
        key = self.totp_key
        if not TotpKey.is_sealed(stored):
            # Sealed just now, if loading the key created it; else written in the clear by hand.
            cred = self.store.credential(member.registrant, member.staff_id)
            stored = (cred or {}).get("totp_secret") or stored
        if TotpKey.is_sealed(stored):
            try:
                return key.open(member.registrant, member.staff_id, stored)
            except TotpKeyError:
                pass
        log.error("the stored TOTP secret of staff member %s is not sealed for it under this server's TOTP key",
                  member.staff_id)
        raise Unauthorized("the TOTP secret of this login cannot be used (not sealed with this server's TOTP key); "
                           "ask an administrator to reset the credential", type_="totp-not-enrolled")

    def now(self) -> datetime:
        return self.clock()

    # --- credentials ----------------------------------------------------------------------------

    def set_password(self, member: StaffMember, password: str, *, must_change: bool,
                     enroll_totp: bool | None = None, opened_key: Any = None) -> str | None:
        """Set ``member``'s password (after the rules) and revoke their sessions. A TOTP secret is
        created when asked, or when their roles need one and none exists; returns it (once).

        Their signing key (issue 17) is re-wrapped under the new password when its owner, changing
        their own password, opened it (``opened_key``); kept when it still opens with the new
        password; otherwise dropped: a password set by someone else must not open the owner's key,
        so the owner enrols a new one."""
        check_password_rules(password, username=member.username, printed_name=member.printed_name,
                             field="new_password" if not must_change else "password")
        prior = self.store.credential(member.registrant, member.staff_id)
        has_totp = prior is not None and prior["totp_secret"] is not None
        new_secret = None
        if enroll_totp or (enroll_totp is None and member.roles & TOTP_ROLES and not has_totp):
            new_secret = pyotp.random_base32()
        sealed = self.totp_key.seal(member.registrant, member.staff_id, new_secret) if new_secret else None
        record = AuthStore.signing_record(prior)
        if record is not None:
            if opened_key is not None:
                cid = record["credential_id"]
                record = ss.wrap_key(opened_key, password, bound_to=self._bound(member.registrant, member.staff_id, cid),
                                     params=self.kdf)
                record["credential_id"] = cid
            else:
                with self.hasher.slot():
                    if ss.open_key(record, password) is None:
                        record = None
        now = format_time(self.now())
        self.store.set_credential(member.registrant, member.staff_id, password_hash=self.hasher.hash(password),
                                  must_change=must_change, totp_secret=sealed, keep_totp=new_secret is None,
                                  now=now)
        self.store.set_signing_key(member.registrant, member.staff_id, record, now)
        return new_secret

    def totp_uri(self, member: StaffMember, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=f"{member.username}@{member.registrant}",
                                                   issuer_name="csledger")

    def check_credentials(self, registrant: str, username: str, password: str, totp: str | None,
                          *, field_prefix: str = "") -> tuple[StaffMember, AuthMethod]:
        """Verify a username, password and (where needed) TOTP code at ``registrant``.

        Every failure is a 401 with one message, so a caller cannot tell a wrong username from a
        wrong password. Each attempt on an existing login is counted as a failure *before* its
        password is checked (a success resets the count); once the login is throttled an attempt
        is refused with 429 (:class:`SignInThrottled`) without checking anything.
        """
        member, method, _cred, _key = self._check(registrant, username, password, totp, field_prefix=field_prefix)
        return member, method

    def _password_ok(self, cred: dict[str, Any], password: str) -> tuple[bool, str | None, Any]:
        """(right?, a new pwdlib hash to store, the opened signing key). A login with a password
        key is checked by it: one argon2id run gives the verifier and opens the key."""
        record = AuthStore.signing_record(cred)
        if record is None:
            ok, new_hash = self.hasher.verify_and_update(password, cred["password_hash"])
            return ok, new_hash, None
        with self.hasher.slot():
            key = ss.open_key(record, password) if isinstance(password, str) else None
        return key is not None, None, key

    def _check(self, registrant: str, username: str, password: str, totp: str | None,
               *, field_prefix: str = "") -> tuple[StaffMember, AuthMethod, dict[str, Any], Any]:
        now = self.now()
        member = self.store.staff_by_username(registrant, username.strip().lower()) if isinstance(username, str) else None
        cred = self.store.credential(registrant, member.staff_id) if member is not None else None
        if member is None or cred is None:
            self.hasher.verify(password, self._dummy)  # same work as a real check
            raise Unauthorized("wrong username or password", type_="login-failed")
        count, until = self._claim(member, now, field=field_prefix + "username")
        ok, new_hash, key = self._password_ok(cred, password)
        if not ok:
            self._failed(member, count, until)
            raise Unauthorized("wrong username or password", type_="login-failed")
        method = AuthMethod.PASSWORD
        needs_totp = bool(member.roles & TOTP_ROLES) or cred["totp_secret"] is not None
        if needs_totp:
            # The password was right, but the attempt stays counted until the whole sign-in
            # succeeds: "TOTP code needed" tells a guesser the password, so it costs a try.
            if cred["totp_secret"] is None:
                self._failed(member, count, until)
                raise Unauthorized("this login needs a second factor but has no TOTP enrolled; ask an "
                                   "administrator to reset the credential", type_="totp-not-enrolled")
            if not totp:
                self._failed(member, count, until)
                raise Unauthorized("this login needs its TOTP code", type_="totp-required", field=field_prefix + "totp")
            try:
                secret = self._totp_secret(member, cred["totp_secret"])
            except Unauthorized:
                self._failed(member, count, until)
                raise
            if not (isinstance(totp, str) and totp.isdigit() and len(totp) == 6
                    and pyotp.TOTP(secret).verify(totp, for_time=now, valid_window=1)):
                self._failed(member, count, until)
                raise Unauthorized("wrong TOTP code", type_="login-failed", field=field_prefix + "totp")
            method = AuthMethod.PASSWORD_TOTP
        self.store.record_success(registrant, member.staff_id, format_time(now))
        if new_hash is not None:
            self.store.rehash(registrant, member.staff_id, new_hash, format_time(now))
        return member, method, cred, key

    def console_principal(self, registrant: str, username: str, password: str, totp: str | None) -> Principal:
        """A staff member signing in at the server's console (``csledger alerts``): the same checks
        and throttle as an HTTP login, a temporary password refused, and their own signing key
        opened for the commands they run there."""
        member, method, cred, key = self._check(registrant, username, password, totp)
        if cred["must_change_password"]:
            raise AccessDenied("replace your temporary password first (log in to the API or the pages and change it)",
                               type_="password-change-required", field="password")
        record = AuthStore.signing_record(cred)
        signer = ss.PasswordKeySigner(key, record["credential_id"]) if key is not None and record else None
        return Principal(registrant, member.staff_id, member.printed_name, method, signer=signer)

    # --- signing keys (issue 17) ----------------------------------------------------------------

    @staticmethod
    def _bound(registrant: str, staff_id: str, credential_id: str) -> str:
        return f"{registrant}|{staff_id}|{credential_id}"

    def _seal(self, key: Any, cred: dict[str, Any], token: str) -> str | None:
        """The opened key sealed under a token, as stored beside the token's hash."""
        record = AuthStore.signing_record(cred)
        if key is None or record is None:
            return None
        cid = record["credential_id"]
        return json.dumps({"credential_id": cid, "sealed": ss.seal_for_token(
            key, token, bound_to=self._bound(cred["registrant"], cred["staff_id"], cid))}, sort_keys=True)

    def _signer(self, registrant: str, staff_id: str, stored: str | None, token: str) -> ss.PasswordKeySigner | None:
        if not stored:
            return None
        try:
            data = json.loads(stored)
            key = ss.open_with_token(data["sealed"], token, bound_to=self._bound(registrant, staff_id,
                                                                                  data["credential_id"]))
        except (ValueError, KeyError, TypeError):
            return None
        return None if key is None else ss.PasswordKeySigner(key, data["credential_id"])

    def enrol_signing_key(self, member: StaffMember, principal: Principal, password: str, *,
                          approver: Principal | None = None, rp_id: str | None = None,
                          origins: tuple[str, ...] = (), session: Session | None = None) -> dict[str, Any]:
        """Enrol a password key for ``member`` (their login's current ``password`` wraps it), approved
        by ``approver`` (a second manager or administrator; none for the registrant's root). An
        active password key of theirs is replaced (revoked by the same entry). The wrapped key is
        stored with the login; ``session``, if given, signs with the new key from now on."""
        from ledger.services.credentials import enrol_password_key

        cred = self.store.credential(member.registrant, member.staff_id)
        if cred is None:
            raise NotFound(f"staff member {member.staff_id} has no login", field="staff_id")
        if cred["must_change_password"]:
            raise AccessDenied("replace your temporary password first: whoever set it could otherwise open the key",
                               type_="password-change-required", field="password")
        # A stolen session must not become a password oracle: counted and throttled like a login.
        count, until = self._claim(member, self.now(), field="password")
        ok, _new, _key = self._password_ok(cred, password)
        if not ok:
            self._failed(member, count, until)
            raise Unauthorized("the password is wrong", type_="login-failed", field="password")
        self.store.record_success(member.registrant, member.staff_id, format_time(self.now()))
        res, record, key = enrol_password_key(self.store.ledger, principal, password, params=self.kdf,
                                              approver=approver, replace_active=True, rp_id=rp_id, origins=origins)
        now = format_time(self.now())
        self.store.set_signing_key(member.registrant, member.staff_id, record, now)
        if session is not None and session.token is not None:
            fresh = self.store.credential(member.registrant, member.staff_id)
            self.store.set_session_signing_key(session.token_hash, self._seal(key, fresh, session.token))
        return res

    # --- sign-in throttle -----------------------------------------------------------------------

    def throttle_untils(self, now: datetime) -> list[str]:
        """``locked_until`` for the failure that makes the count ``lockout_after_failures + k``,
        k = 0, 1, ...: the first delay, doubling, up to the cap (the last serves every later k)."""
        delay = self.settings.throttle_delay_seconds
        cap = self.settings.throttle_max_delay_seconds
        out = []
        while True:
            wait = min(delay, cap)
            out.append(format_time(now + timedelta(seconds=wait)))
            if wait >= cap:
                return out
            delay *= 2

    def _claim(self, member: StaffMember, now: datetime, *, field: str) -> tuple[int, str | None]:
        """Count this attempt before any password is checked, or refuse it (429) if throttled."""
        claim = self.store.claim_attempt(member.registrant, member.staff_id, now=format_time(now),
                                         threshold=self.settings.lockout_after_failures,
                                         untils=self.throttle_untils(now))
        if claim is None:
            raise self._throttled(member, now, field=field)
        return claim

    def _throttled(self, member: StaffMember, now: datetime, *, field: str) -> SignInThrottled:
        cred = self.store.credential(member.registrant, member.staff_id)
        until = cred["locked_until"] if cred is not None else None
        # The delay may have ended since the claim was refused (a race): "retry in 1 second".
        wait = max(1, math.ceil((parse_time(until) - now).total_seconds())) if until else 1
        until = until if until and until > format_time(now) else format_time(now + timedelta(seconds=wait))
        return SignInThrottled(f"too many failed sign-ins for this login; try again in {wait_words(wait)}, "
                               "or ask a manager to clear the sign-in throttle", retry_after=wait, until=until,
                               field=field)

    def _failed(self, member: StaffMember, count: int, until: str | None) -> None:
        """The claimed attempt failed (it is counted already). The failure that throttles the
        login raises the ``sign_in_throttled`` alert: one per throttle episode, since only one
        attempt can bring the count to the threshold before a success or a clearing resets it."""
        if count != self.settings.lockout_after_failures or until is None:
            return
        s = self.settings
        self.raise_alert(member.registrant, Candidate(
            alert_key=f"sign_in_throttled:{member.staff_id}:{until}", rule="sign_in_throttled", severity="medium",
            subjects=(member.staff_id,),
            summary=f"{count} failed sign-ins in a row for staff member {member.staff_id}; further attempts are "
                    f"refused unchecked until {until}, then one per growing delay, until a sign-in succeeds or a "
                    "manager clears the throttle",
            parameters={"after_failures": str(s.lockout_after_failures),
                        "first_delay_seconds": str(s.throttle_delay_seconds),
                        "max_delay_seconds": str(s.throttle_max_delay_seconds)},
            evidence_seqs=(), figures={"failures": str(count), "until": until}))

    def raise_alert(self, registrant: str, candidate: Candidate) -> None:
        """Record an alert about sign-in or credential events; a failure to record it is logged, never
        turned into a refusal of the request that triggered it."""
        try:
            raise_alerts(self.store.ledger, registrant, [candidate], raised_by="sign_in")
        except LedgerError as exc:  # the throttle holds regardless; the refusal must still go out
            log.warning("could not raise alert %s: %s", candidate.rule, type(exc).__name__)

    def clear_throttle(self, who: Principal, staff_id: str) -> tuple[int, str | None] | None:
        """A manager or administrator clears a login's failure count and throttle; recorded as a
        ``sign_in_throttle_cleared`` alert naming who cleared it and when. Returns the prior
        (failures, until), or None when there was nothing to clear (nothing is recorded then)."""
        if self.store.staff(who.registrant, staff_id) is None:
            raise NotFound(f"no staff member {staff_id} at {who.registrant}", field="staff_id")
        if staff_id == who.staff_id:
            raise AccessDenied("a second person clears your own sign-in throttle", type_="own-sign-in-throttle",
                               field="staff_id")
        now = format_time(self.now())
        prior = self.store.clear_throttle(who.registrant, staff_id, now)
        if prior is not None:
            failures, until = prior
            self.raise_alert(who.registrant, Candidate(
                alert_key=f"sign_in_throttle_cleared:{staff_id}:{now}", rule="sign_in_throttle_cleared",
                severity="low", subjects=(staff_id,),
                summary=f"the sign-in failures of staff member {staff_id} ({failures}) were cleared by "
                        f"{who.printed_name} ({who.staff_id})",
                parameters={}, evidence_seqs=(),
                figures={"failures": str(failures), "until": until or "", "cleared_by": who.staff_id,
                         "cleared_at": now}))
        return prior

    # --- sessions -------------------------------------------------------------------------------

    def login(self, registrant: str, username: str, password: str, totp: str | None) -> tuple[str, Session]:
        """Check the credentials and open a session; returns the bearer token (shown once)."""
        member, method, cred, key = self._check(registrant, username, password, totp)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.now()
        expires = format_time(now + timedelta(minutes=self.settings.session_max_minutes))
        sealed = self._seal(key, cred, token)
        self.store.create_session(token_hash=sha256_hex(token), registrant=registrant, staff_id=member.staff_id,
                                  auth_method=method.value, now=format_time(now), expires_at=expires,
                                  signing_key=sealed)
        principal = Principal(registrant, member.staff_id, member.printed_name, method,
                              signer=self._signer(registrant, member.staff_id, sealed, token))
        return token, Session(sha256_hex(token), principal, member.roles, bool(cred and cred["must_change_password"]),
                              expires, token)

    def session(self, token: str | None) -> Session:
        """The live session of a bearer token, or 401 (unknown, revoked, expired or idle)."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise Unauthorized("a bearer token is needed: log in at POST /v1/registrants/{dea}/sessions",
                               type_="unauthorized")
        th = sha256_hex(token)
        found = self.store.session_context(th)
        if found is None:
            raise Unauthorized("unknown bearer token; log in again", type_="token-invalid")
        row, member, must_change = found
        now = self.now()
        now_text = format_time(now)
        if row["revoked_at"] is not None:
            raise Unauthorized("this session was ended; log in again", type_="token-revoked")
        if now_text >= row["expires_at"]:
            self.store.revoke(th, now_text, "expired")  # drops its sealed signing key too
            raise Unauthorized("this session has expired; log in again", type_="token-expired")
        if row["last_used_at"] < format_time(now - timedelta(minutes=self.settings.session_idle_minutes)):
            self.store.revoke(th, now_text, "idle timeout")
            raise Unauthorized("this session was idle too long; log in again", type_="token-expired")
        if member is None:
            raise Unauthorized("the staff member of this session is not enrolled", type_="token-invalid")
        if row["last_used_at"] < format_time(now - TOUCH_EVERY):
            self.store.touch(th, now_text)
        principal = Principal(member.registrant, member.staff_id, member.printed_name, AuthMethod(row["auth_method"]),
                              signer=self._signer(member.registrant, member.staff_id, row.get("signing_key"), token))
        return Session(th, principal, member.roles, must_change, row["expires_at"], token)

    def change_password(self, session: Session, principal: Principal, current: str, new: str) -> None:
        """Change one's own password after checking the current one; ends every session."""
        cred = self.store.credential(principal.registrant, principal.staff_id)
        member = self.store.staff(principal.registrant, principal.staff_id)
        if cred is None or member is None:
            raise Unauthorized("the current password is wrong", type_="login-failed", field="current_password")
        # A stolen session must not become a password oracle: counted and throttled like a login.
        now = self.now()
        count, until = self._claim(member, now, field="current_password")
        ok, _new_hash, key = self._password_ok(cred, current)
        if not ok:
            self._failed(member, count, until)
            raise Unauthorized("the current password is wrong", type_="login-failed", field="current_password")
        self.store.record_success(principal.registrant, principal.staff_id, format_time(now))
        if current == new:
            raise InvalidInput("must differ from the current password", field="new_password")
        self.set_password(member, new, must_change=False, enroll_totp=False, opened_key=key)

    def revoke_all(self, registrant: str, staff_id: str, reason: str) -> int:
        return self.store.revoke_all(registrant, staff_id, format_time(self.now()), reason)

    def logout(self, session: Session) -> None:
        self.store.revoke(session.token_hash, format_time(self.now()), "logout")

    # --- witness assertions ---------------------------------------------------------------------

    def issue_assertion(self, actor: Session, username: str, password: str, totp: str | None,
                        body_sha256: str) -> tuple[str, StaffMember, AuthMethod, str]:
        """The witness, on the actor's device, proves who they are; returns a single-use token
        bound to the SHA-256 of the command body the actor is about to send. Their opened signing
        key is kept sealed under that token: it signs that command, as them, and nothing else."""
        reg = actor.principal.registrant
        body = self._body_hash(body_sha256)
        witness, method, cred, key = self._check(reg, username, password, totp)
        if witness.staff_id == actor.principal.staff_id:
            raise Unauthorized("a witness must be a second person, not the one recording", type_="witness-is-actor",
                               field="username")
        if cred["must_change_password"]:
            # A temporary password was set by someone else (an administrator, the console): until
            # its owner replaces it, whoever set it could sign as them.
            raise AccessDenied(f"{witness.printed_name} must first replace their temporary password (log in and "
                               "change it) before they can witness, count or approve",
                               type_="witness-temporary-password", field="username")
        token = ASSERTION_PREFIX + secrets.token_urlsafe(32)
        expires = self._store_assertion(actor, token, witness, method.value, body,
                                        signing_key=self._seal(key, cred, token), method=ss.PASSWORD_KEY)
        return token, witness, method, expires

    def issue_passkey_assertion(self, actor: Session, username: str, body_sha256: str) -> tuple[str, StaffMember, str]:
        """A witness who will confirm with their passkey: names them and binds the command body;
        proves nothing until their authenticator signs the statement (the command answers 428 with
        the challenge, then is sent again with ``Passkey-Signature``)."""
        reg = actor.principal.registrant
        body = self._body_hash(body_sha256)
        member = self.store.staff_by_username(reg, username.strip().lower()) if isinstance(username, str) else None
        if member is not None and member.staff_id == actor.principal.staff_id:
            raise Unauthorized("a witness must be a second person, not the one recording", type_="witness-is-actor",
                               field="username")
        from ledger.services.credentials import credentials_of

        if member is None or not any(c["method"] == ss.PASSKEY and c["revoked_seq"] is None
                                     for c in credentials_of(self.store.ledger, reg, member.staff_id)):
            # One answer for "no such username" and "no passkey": no password is asked here, so
            # telling them apart would let any signed-in user list usernames and passkey holders.
            raise AccessDenied("no passkey is enrolled here for that username; a witness without one confirms with "
                               "their password", type_="passkey-not-enrolled", field="username")
        token = ASSERTION_PREFIX + secrets.token_urlsafe(32)
        expires = self._store_assertion(actor, token, member, "passkey", body, signing_key=None, method=ss.PASSKEY,
                                        nonce=ss.new_nonce())
        return token, member, expires

    @staticmethod
    def _body_hash(body_sha256: Any) -> str:
        body = body_sha256.lower() if isinstance(body_sha256, str) else ""
        if len(body) != 64 or any(c not in "0123456789abcdef" for c in body):
            raise InvalidInput("must be the SHA-256 of the command body, 64 hex digits", field="body_sha256")
        return body

    def _store_assertion(self, actor: Session, token: str, witness: StaffMember, auth_method: str, body: str, *,
                         signing_key: str | None, method: str, nonce: str | None = None) -> str:
        now = self.now()
        expires = format_time(now + timedelta(seconds=self.settings.witness_assertion_seconds))
        self.store.create_assertion(
            token_hash=sha256_hex(token), registrant=actor.principal.registrant, witness_staff_id=witness.staff_id,
            auth_method=auth_method, actor_staff_id=actor.principal.staff_id, actor_session_hash=actor.token_hash,
            body_sha256=body, created_at=format_time(now), expires_at=expires, signing_key=signing_key,
            method=method, nonce=nonce)
        return expires

    def redeem_assertion(self, actor: Session, token: str | None, body: bytes, idempotency_key: str | None,
                         passkey_responses: list[dict] | None = None) -> Witness:
        """Use a witness assertion for this request: it must be unused (or used by this very
        request's idempotency key), unexpired, issued on this session, for exactly this body.
        A passkey assertion without the authenticator's answer is not used up: the command will
        answer 428 with the statement to sign."""
        if not token:
            raise Unauthorized("this command needs a witness: send the Witness-Assertion header",
                               type_="witness-required", field="Witness-Assertion")
        if not token.startswith(ASSERTION_PREFIX) or len(token) > 200:
            raise Unauthorized("not a witness assertion", type_="witness-assertion-invalid", field="Witness-Assertion")
        now = format_time(self.now())
        th = sha256_hex(token)
        peek = self.store.assertion(th)
        response = None
        if peek is not None and peek.get("method") == ss.PASSKEY:
            response = self._passkey_response(peek, passkey_responses or [])
            row = peek if response is None else self.store.consume_assertion(th, now=now, idempotency_key=idempotency_key)
        else:
            row = self.store.consume_assertion(th, now=now, idempotency_key=idempotency_key)
        if row is None or (row is peek and peek.get("used_at") is not None
                           and peek.get("used_with_key") != idempotency_key):
            raise Unauthorized("this witness assertion is unknown or already used; the witness must sign again",
                               type_="witness-assertion-invalid", field="Witness-Assertion")
        if row["expires_at"] <= now:
            raise Unauthorized("this witness assertion has expired (2 minutes); the witness must sign again",
                               type_="witness-assertion-expired", field="Witness-Assertion")
        if row["registrant"] != actor.principal.registrant or row["actor_session_hash"] != actor.token_hash:
            raise Unauthorized("this witness assertion was given on another login", type_="witness-assertion-invalid",
                               field="Witness-Assertion")
        if not hmac.compare_digest(row["body_sha256"], sha256_hex(body)):
            raise Unauthorized("this witness assertion was signed for a different body", type_="witness-body-mismatch",
                               field="Witness-Assertion")
        member = self.store.staff(row["registrant"], row["witness_staff_id"])
        if member is None or member.staff_id == actor.principal.staff_id:
            raise Unauthorized("the witness must be a second enrolled person", type_="witness-assertion-invalid",
                               field="Witness-Assertion")
        if row.get("method") == ss.PASSKEY:
            signer: Any = ss.PasskeySigner(row["nonce"], response)
            if response is not None:
                self._preverify(signer, member)
            auth_method = AuthMethod.PASSWORD  # replaced by "passkey" in the signature itself
        else:
            signer = self._signer(member.registrant, member.staff_id, row.get("signing_key"), token)
            auth_method = AuthMethod(row["auth_method"])
        return Witness(Principal(member.registrant, member.staff_id, member.printed_name, auth_method, signer=signer),
                       member.roles)

    def _preverify(self, signer: ss.PasskeySigner, member: StaffMember) -> None:
        """The passkey's signature is verified here, before the command takes the registrant's
        lock; under the lock only its binding to the statement is left (a hash)."""
        from ledger.storage.authority import authority_at

        with self.store.ledger.reading() as conn:
            authority = authority_at(conn, member.registrant)
        cred = authority.credentials.get(signer.credential_id or "")
        if cred is None or cred.staff_id != member.staff_id or not cred.active:
            return  # the command refuses it, naming the credential, under the lock
        try:
            signer.preverify(cred, authority.relying_party)
        except ss.SignatureInvalid as exc:
            raise InvalidInput(f"{member.printed_name}'s signature: {exc.reason}", type_="signature-invalid",
                               field="Passkey-Signature") from None

    def _passkey_response(self, row: dict, responses: list[dict]) -> dict | None:
        """The authenticator answer (from ``Passkey-Signature``) made with one of this witness's passkeys."""
        if not responses:
            return None
        from ledger.services.credentials import credentials_of

        mine = {c["credential_id"] for c in credentials_of(self.store.ledger, row["registrant"], row["witness_staff_id"])
                if c["method"] == ss.PASSKEY}
        return next((r for r in responses if isinstance(r, dict) and isinstance(r.get("id"), str) and r["id"] in mine),
                    None)


def require_role(session: Session, registrant: str, allowed: frozenset[str], *, password_change_ok: bool = False) -> Principal:
    """The session's principal if it belongs to ``registrant`` and holds one of ``allowed``."""
    if session.principal.registrant != registrant:
        raise AccessDenied(f"this login is for registrant {session.principal.registrant}, not {registrant}",
                           type_="wrong-registrant")
    if session.must_change_password and not password_change_ok:
        raise AccessDenied("change your password first (POST .../me/password)", type_="password-change-required")
    if allowed and not session.roles & allowed:
        raise AccessDenied(f"needs one of the roles {', '.join(sorted(allowed))}", type_="role-required")
    return session.principal
