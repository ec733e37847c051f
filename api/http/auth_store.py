"""Persistence of login state: credentials, bearer sessions, witness assertions and the patient
access log. These are not ledger entries (secrets are mutable and never hashed into the chain),
so each change here is its own small transaction; nothing here touches the entries.

Who a login is and which roles it holds are read from the chain itself (the ``staff_enrolled`` /
``role_granted`` / ``role_revoked`` entries, ``ledger.storage.authority``), never from the
``staff`` / ``staff_roles`` projections: those are plain rows a database writer could edit.

TOTP secrets are stored sealed (``TotpKey``: AES-GCM under a key kept outside the database).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.domain.errors import LedgerError, NotFound
from ledger.storage.authority import Authority, authority_at
from ledger.storage.patient_keys import generate_key_file
from ledger.storage.store import Ledger
from ledger.storage.tables import (
    ApiSession,
    PatientAccessRecord,
    StaffCredential,
    WitnessAssertionRecord,
)

cred_t = StaffCredential.__table__
session_t = ApiSession.__table__
assert_t = WitnessAssertionRecord.__table__
access_t = PatientAccessRecord.__table__


@dataclass(frozen=True)
class StaffMember:
    registrant: str
    staff_id: str
    printed_name: str
    username: str
    roles: frozenset[str]


class AuthStore:
    """Queries and small transactions over the login-state tables of one ledger database."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.engine = ledger.engine

    # --- staff and roles: from the role entries of the chain (read-only) -----------------------

    @staticmethod
    def _member(authority: Authority, staff_id: str | None = None, *, username: str | None = None) -> StaffMember | None:
        rec = authority.member(staff_id) if staff_id is not None else authority.by_username(username or "")
        if rec is None:
            return None
        return StaffMember(authority.registrant, rec.staff_id, rec.printed_name, rec.username,
                           authority.roles(rec.staff_id))

    def staff_by_username(self, registrant: str, username: str) -> StaffMember | None:
        with self.ledger.reading() as conn:
            return self._member(authority_at(conn, registrant), username=username)

    def staff(self, registrant: str, staff_id: str) -> StaffMember | None:
        with self.ledger.reading() as conn:
            return self._member(authority_at(conn, registrant), staff_id)

    # --- credentials ----------------------------------------------------------------------------

    def credential(self, registrant: str, staff_id: str) -> dict[str, Any] | None:
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(cred_t).where(
                cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id)).mappings().first()
            return dict(row) if row is not None else None

    def has_credentials(self, registrant: str) -> set[str]:
        with self.ledger.reading() as conn:
            return set(conn.execute(sa.select(cred_t.c.staff_id).where(cred_t.c.registrant == registrant)).scalars())

    def set_credential(self, registrant: str, staff_id: str, *, password_hash: str, must_change: bool,
                       totp_secret: str | None, keep_totp: bool, now: str) -> None:
        """Insert or replace the credential, clear the sign-in throttle and revoke every open session."""
        with self.engine.begin() as conn:
            prior = conn.execute(sa.select(cred_t.c.totp_secret).where(  # kept sealed as it is
                cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id)).first()
            secret = (prior.totp_secret if prior is not None else None) if keep_totp else totp_secret
            values = {"password_hash": password_hash, "password_set_at": now, "must_change_password": must_change,
                      "totp_secret": secret, "failed_logins": 0, "locked_until": None, "updated_at": now}
            if prior is None:
                conn.execute(cred_t.insert().values(registrant=registrant, staff_id=staff_id, **values))
            else:
                conn.execute(cred_t.update().where(cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id)
                             .values(**values))
            self._revoke_all(conn, registrant, staff_id, now, "credential changed")

    def set_signing_key(self, registrant: str, staff_id: str, record: dict[str, Any] | None, now: str) -> None:
        """Store (or drop, with None) the login's password key record (issue 17). The login must
        exist: the record is wrapped under its password."""
        with self.engine.begin() as conn:
            done = conn.execute(cred_t.update().where(cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id)
                                .values(signing_key=None if record is None else json.dumps(record, sort_keys=True),
                                        updated_at=now)).rowcount
            if done != 1:
                raise NotFound(f"staff member {staff_id} has no login at {registrant}", field="staff_id")

    @staticmethod
    def signing_record(cred: dict[str, Any] | None) -> dict[str, Any] | None:
        """The password key record of a credential row, or None."""
        raw = (cred or {}).get("signing_key")
        return json.loads(raw) if raw else None

    def seal_plaintext_totp(self, seal: Callable[[str, str, str], str]) -> int:
        """Seal every TOTP secret still stored in plaintext (written before secrets were sealed),
        each by a conditional UPDATE (a concurrent reset wins); returns how many were sealed."""
        done = 0
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(cred_t.c.registrant, cred_t.c.staff_id, cred_t.c.totp_secret)
                                .where(cred_t.c.totp_secret.is_not(None))).all()
            for reg, sid, stored in rows:
                if TotpKey.is_sealed(stored):
                    continue
                try:
                    sealed = seal(reg, sid, stored)
                except (ValueError, TotpKeyError):  # not a base32 secret at all: left, refused at sign-in
                    continue
                done += conn.execute(cred_t.update().where(
                    cred_t.c.registrant == reg, cred_t.c.staff_id == sid, cred_t.c.totp_secret == stored,
                ).values(totp_secret=sealed)).rowcount
        return done

    def rehash(self, registrant: str, staff_id: str, password_hash: str, now: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(cred_t.update().where(cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id)
                         .values(password_hash=password_hash, updated_at=now))

    def claim_attempt(self, registrant: str, staff_id: str, *, now: str, threshold: int,
                      untils: Sequence[str]) -> tuple[int, str | None] | None:
        """Count one sign-in attempt as failed *before* its password is checked (a success then
        resets the count), in one conditional UPDATE. None, with nothing changed, while the login
        is throttled (``locked_until`` after ``now``) or has no credential: the caller refuses the
        attempt unchecked. Otherwise the new count and ``locked_until``.

        The attempt that brings the count to ``threshold + k`` sets ``locked_until`` to
        ``untils[k]`` (the last one for every later ``k``) in the same statement, so no other
        attempt gets past the WHERE until then: PostgreSQL re-evaluates the WHERE of an UPDATE
        that waited for the row's lock (READ COMMITTED), SQLite runs one writer at a time.
        A read followed by a separate count (as before) let 104 guesses through in one burst."""
        count = cred_t.c.failed_logins + 1
        as_text = cred_t.c.locked_until.type
        whens = [(count < threshold, sa.null())]
        whens += [(count == threshold + k, sa.cast(sa.literal(u), as_text)) for k, u in enumerate(untils[:-1])]
        lock = sa.case(*whens, else_=sa.cast(sa.literal(untils[-1]), as_text))
        stmt = (cred_t.update()
                .where(cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id,
                       sa.or_(cred_t.c.locked_until.is_(None), cred_t.c.locked_until <= now))
                .values(failed_logins=count, locked_until=lock, updated_at=now)
                .returning(cred_t.c.failed_logins, cred_t.c.locked_until))
        with self.engine.begin() as conn:
            row = conn.execute(stmt).first()
        return (row.failed_logins, row.locked_until) if row is not None else None

    def clear_throttle(self, registrant: str, staff_id: str, now: str) -> tuple[int, str | None] | None:
        """Reset the failure count and the throttle; the prior (count, locked_until), or None
        when there was nothing to clear (no credential, no failures)."""
        where = (cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id)
        with self.engine.begin() as conn:
            prior = conn.execute(sa.select(cred_t.c.failed_logins, cred_t.c.locked_until).where(*where)).first()
            if prior is None or (prior.failed_logins == 0 and prior.locked_until is None):
                return None
            conn.execute(cred_t.update().where(*where).values(failed_logins=0, locked_until=None, updated_at=now))
            return prior.failed_logins, prior.locked_until

    def record_success(self, registrant: str, staff_id: str, now: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(cred_t.update().where(
                cred_t.c.registrant == registrant, cred_t.c.staff_id == staff_id,
                sa.or_(cred_t.c.failed_logins != 0, cred_t.c.locked_until.is_not(None)),
            ).values(failed_logins=0, locked_until=None, updated_at=now))

    # --- sessions -------------------------------------------------------------------------------

    def create_session(self, *, token_hash: str, registrant: str, staff_id: str, auth_method: str,
                       now: str, expires_at: str, signing_key: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(session_t.insert().values(
                token_hash=token_hash, registrant=registrant, staff_id=staff_id, auth_method=auth_method,
                created_at=now, last_used_at=now, expires_at=expires_at, signing_key=signing_key))

    def set_session_signing_key(self, token_hash: str, sealed: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(session_t.update().where(session_t.c.token_hash == token_hash).values(signing_key=sealed))

    def session(self, token_hash: str) -> dict[str, Any] | None:
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(session_t).where(session_t.c.token_hash == token_hash)).mappings().first()
            return dict(row) if row is not None else None

    def session_context(self, token_hash: str) -> tuple[dict[str, Any], StaffMember | None, bool] | None:
        """A session with its staff member (and roles, from the role entries at the chain head)
        and whether a password change is pending, read in one transaction (the per-request
        authentication path)."""
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(session_t).where(session_t.c.token_hash == token_hash)).mappings().first()
            if row is None:
                return None
            member = self._member(authority_at(conn, row["registrant"]), row["staff_id"])
            must_change = conn.execute(sa.select(cred_t.c.must_change_password).where(
                cred_t.c.registrant == row["registrant"], cred_t.c.staff_id == row["staff_id"])).scalar()
            return dict(row), member, bool(must_change)

    def touch(self, token_hash: str, now: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(session_t.update().where(session_t.c.token_hash == token_hash).values(last_used_at=now))

    def revoke(self, token_hash: str, now: str, reason: str) -> None:
        with self.engine.begin() as conn:
            # The sealed signing key goes with the session: a token leaked later opens nothing.
            conn.execute(session_t.update().where(session_t.c.token_hash == token_hash,
                                                  session_t.c.revoked_at.is_(None))
                         .values(revoked_at=now, revoked_reason=reason, signing_key=None))

    def revoke_all(self, registrant: str, staff_id: str, now: str, reason: str) -> int:
        with self.engine.begin() as conn:
            return self._revoke_all(conn, registrant, staff_id, now, reason)

    @staticmethod
    def _revoke_all(conn, registrant: str, staff_id: str, now: str, reason: str) -> int:
        return conn.execute(session_t.update().where(
            session_t.c.registrant == registrant, session_t.c.staff_id == staff_id,
            session_t.c.revoked_at.is_(None)).values(revoked_at=now, revoked_reason=reason, signing_key=None)).rowcount

    # --- witness assertions ---------------------------------------------------------------------

    def create_assertion(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(assert_t.insert().values(**values))

    def assertion(self, token_hash: str) -> dict[str, Any] | None:
        """An assertion row as it is, without using it up."""
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(assert_t).where(assert_t.c.token_hash == token_hash)).mappings().first()
            return dict(row) if row is not None else None

    def consume_assertion(self, token_hash: str, *, now: str, idempotency_key: str | None) -> dict[str, Any] | None:
        """Mark the assertion used (at most once) and return it; a retry of the same request
        (same idempotency key) gets it again. None if unknown or already used otherwise."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(assert_t).where(assert_t.c.token_hash == token_hash)).mappings().first()
            if row is None:
                return None
            row = dict(row)
            if row["used_at"] is None:
                done = conn.execute(assert_t.update().where(assert_t.c.token_hash == token_hash,
                                                            assert_t.c.used_at.is_(None))
                                    .values(used_at=now, used_with_key=idempotency_key)).rowcount
                if done != 1:
                    return None
                row["first_use"] = True
                return row
            if idempotency_key is not None and row["used_with_key"] == idempotency_key:
                row["first_use"] = False
                return row
            return None

    # --- patient access log (append-only) -------------------------------------------------------

    def log_patient_access(self, registrant: str, staff_id: str, patient_ids: list[str], action: str, now: str) -> None:
        if not patient_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(access_t.insert(), [
                {"registrant": registrant, "staff_id": staff_id, "patient_id": p, "action": action, "accessed_at": now}
                for p in patient_ids])

    def patient_access(self, registrant: str, *, after_id: int, limit: int, patient_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(access_t).where(access_t.c.registrant == registrant, access_t.c.id > after_id)
        if patient_id is not None:
            q = q.where(access_t.c.patient_id == patient_id)
        with self.ledger.reading() as conn:
            return [dict(r) for r in conn.execute(q.order_by(access_t.c.id).limit(limit)).mappings()]


# --- TOTP secrets at rest ---------------------------------------------------------------------------

_BASE32_TEXT = re.compile(r"[A-Z2-7]+=*")
#: Longest stored text (the column is VARCHAR(64)): nonce 12 + a 20-byte secret + tag 16 = 48 bytes,
#: 64 characters of unpadded base64url.
SEALED_TOTP_MAX = 64


class TotpKeyError(LedgerError):
    """The TOTP key is missing or malformed, or a stored secret does not open under it."""

    status = 500
    type = "totp-key"


class TotpKey:
    """AES-GCM over the TOTP secrets, with a key that never touches the database.

    The key is 32 random bytes (base64) from ``CSLEDGER_TOTP_KEY`` or a 0600 key file (default
    ``<key_dir>/totp.key``, created at first use, like the log signing keys beside it); the
    AES key is derived from it with HKDF. Each sealed secret is bound by the associated data to
    (registrant, staff id), so a database writer can neither read a secret nor move one to
    another login. A stored plaintext secret (base32, written before secrets were sealed) is
    told apart by its alphabet: a sealed one is unpadded base64url and always holds a character
    base32 does not use."""

    def __init__(self, master: bytes):
        if len(master) != 32:
            raise TotpKeyError("the TOTP key must be 32 bytes (base64 of 32 random bytes)", field="totp_key")
        self._aead = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                 info=b"csledger/totp/aes-gcm").derive(master))

    def __repr__(self) -> str:
        return "TotpKey(<secret>)"

    @classmethod
    def from_base64(cls, text: str) -> TotpKey:
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except (ValueError, TypeError):
            raise TotpKeyError("the TOTP key is not valid base64", field="totp_key") from None

    @classmethod
    def load(cls, settings: Any) -> tuple[TotpKey, bool]:
        """From ``CSLEDGER_TOTP_KEY`` when set, else the key file (``totp_key_file``, default
        ``<key_dir>/totp.key``), written (0600) if missing; and whether this call created it."""
        if getattr(settings, "totp_key", ""):
            return cls.from_base64(settings.totp_key), False
        path = Path(getattr(settings, "totp_key_file", None) or Path(settings.key_dir) / "totp.key")
        created = False
        for _ in range(50):
            if not path.exists():
                try:
                    generate_key_file(path)
                    created = True
                except FileExistsError:
                    pass  # another process wrote it first: read theirs
            try:
                text = path.read_bytes().decode("ascii").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise TotpKeyError(f"cannot read the TOTP key file {path} ({type(exc).__name__})",
                                   field="totp_key_file") from None
            if text:
                return cls.from_base64(text), created
            time.sleep(0.01)  # being written by another process this very moment
        raise TotpKeyError(f"the TOTP key file {path} is empty", field="totp_key_file")

    @staticmethod
    def is_sealed(stored: str) -> bool:
        return _BASE32_TEXT.fullmatch(stored) is None

    @staticmethod
    def _aad(registrant: str, staff_id: str) -> bytes:
        return f"csledger/totp/{registrant}/{staff_id}".encode()

    def seal(self, registrant: str, staff_id: str, secret: str) -> str:
        """The text stored for ``secret`` (base32) of this login."""
        raw = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
        while True:
            nonce = secrets.token_bytes(12)
            out = base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, raw, self._aad(registrant, staff_id)))
            text = out.decode().rstrip("=")
            if len(text) > SEALED_TOTP_MAX:
                raise TotpKeyError("a TOTP secret longer than 20 bytes cannot be stored", field="totp_secret")
            if self.is_sealed(text):  # all-base32 text has odds 2**-64; a new nonce then
                return text

    def open(self, registrant: str, staff_id: str, stored: str) -> str:
        """The base32 secret sealed in ``stored`` for this login; TotpKeyError if it does not open."""
        try:
            blob = base64.urlsafe_b64decode(stored + "=" * (-len(stored) % 4))
            raw = self._aead.decrypt(blob[:12], blob[12:], self._aad(registrant, staff_id))
        except (ValueError, InvalidTag):
            raise TotpKeyError(f"the TOTP secret of staff member {staff_id} does not open under the TOTP key "
                               "(another key, or a row altered or moved)", field="totp") from None
        return base64.b32encode(raw).decode().rstrip("=")
