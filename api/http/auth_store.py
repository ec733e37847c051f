"""Persistence of login state: credentials, bearer sessions, witness assertions and the patient
access log. These are not ledger entries (secrets are mutable and never hashed into the chain),
so each change here is its own small transaction; nothing here touches the entries.

The staff and role projections are read here too (they are the ledger's, built from
``staff_enrolled`` / ``role_granted`` / ``role_revoked`` entries), so routes never query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ledger.storage.store import Ledger
from ledger.storage.tables import (
    ApiSession,
    PatientAccessRecord,
    Staff,
    StaffCredential,
    StaffRole,
    WitnessAssertionRecord,
)

cred_t = StaffCredential.__table__
session_t = ApiSession.__table__
assert_t = WitnessAssertionRecord.__table__
access_t = PatientAccessRecord.__table__
staff_t = Staff.__table__
roles_t = StaffRole.__table__


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

    # --- staff (ledger projections, read-only) ------------------------------------------------

    def _member(self, conn, row) -> StaffMember:
        roles = conn.execute(sa.select(roles_t.c.role).where(
            roles_t.c.registrant == row.registrant, roles_t.c.staff_id == row.staff_id)).scalars().all()
        return StaffMember(row.registrant, row.staff_id, row.printed_name, row.username, frozenset(roles))

    def staff_by_username(self, registrant: str, username: str) -> StaffMember | None:
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(staff_t).where(
                staff_t.c.registrant == registrant, staff_t.c.username == username)).first()
            return self._member(conn, row) if row is not None else None

    def staff(self, registrant: str, staff_id: str) -> StaffMember | None:
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(staff_t).where(
                staff_t.c.registrant == registrant, staff_t.c.staff_id == staff_id)).first()
            return self._member(conn, row) if row is not None else None

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
            prior = conn.execute(sa.select(cred_t.c.totp_secret).where(
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
                       now: str, expires_at: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(session_t.insert().values(
                token_hash=token_hash, registrant=registrant, staff_id=staff_id, auth_method=auth_method,
                created_at=now, last_used_at=now, expires_at=expires_at))

    def session(self, token_hash: str) -> dict[str, Any] | None:
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(session_t).where(session_t.c.token_hash == token_hash)).mappings().first()
            return dict(row) if row is not None else None

    def session_context(self, token_hash: str) -> tuple[dict[str, Any], StaffMember | None, bool] | None:
        """A session with its staff member (and roles) and whether a password change is pending,
        read in one transaction (the per-request authentication path)."""
        with self.ledger.reading() as conn:
            row = conn.execute(sa.select(session_t).where(session_t.c.token_hash == token_hash)).mappings().first()
            if row is None:
                return None
            srow = conn.execute(sa.select(staff_t).where(
                staff_t.c.registrant == row["registrant"], staff_t.c.staff_id == row["staff_id"])).first()
            member = self._member(conn, srow) if srow is not None else None
            must_change = conn.execute(sa.select(cred_t.c.must_change_password).where(
                cred_t.c.registrant == row["registrant"], cred_t.c.staff_id == row["staff_id"])).scalar()
            return dict(row), member, bool(must_change)

    def touch(self, token_hash: str, now: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(session_t.update().where(session_t.c.token_hash == token_hash).values(last_used_at=now))

    def revoke(self, token_hash: str, now: str, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(session_t.update().where(session_t.c.token_hash == token_hash,
                                                  session_t.c.revoked_at.is_(None))
                         .values(revoked_at=now, revoked_reason=reason))

    def revoke_all(self, registrant: str, staff_id: str, now: str, reason: str) -> int:
        with self.engine.begin() as conn:
            return self._revoke_all(conn, registrant, staff_id, now, reason)

    @staticmethod
    def _revoke_all(conn, registrant: str, staff_id: str, now: str, reason: str) -> int:
        return conn.execute(session_t.update().where(
            session_t.c.registrant == registrant, session_t.c.staff_id == staff_id,
            session_t.c.revoked_at.is_(None)).values(revoked_at=now, revoked_reason=reason)).rowcount

    # --- witness assertions ---------------------------------------------------------------------

    def create_assertion(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(assert_t.insert().values(**values))

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
