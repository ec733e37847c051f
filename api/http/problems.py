"""HTTP-only errors, in the core's error family so one handler renders every problem.

Each has a stable ``type`` (the RFC 9457 problem type is ``PROBLEM_BASE + type``) and a status.
"""

from __future__ import annotations

from ledger.domain.errors import InvalidInput, LedgerError


class Unauthorized(LedgerError):
    """No valid authentication: missing, wrong, expired or revoked credentials (401)."""

    status = 401
    type = "unauthorized"

    def __init__(self, reason: str, *, type_: str | None = None, field: str | None = None):
        super().__init__(reason, field=field)
        if type_ is not None:
            self.type = type_


class AccessDenied(LedgerError):
    """Authenticated, but this login may not do this here (403)."""

    status = 403
    type = "forbidden"

    def __init__(self, reason: str, *, type_: str | None = None, field: str | None = None):
        super().__init__(reason, field=field)
        if type_ is not None:
            self.type = type_


class PayloadTooLarge(LedgerError):
    status = 413
    type = "payload-too-large"


class BadCursor(InvalidInput):
    type = "invalid-cursor"
