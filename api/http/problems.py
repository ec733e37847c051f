"""HTTP-only errors, in the core's error family so one handler renders every problem.

Each has a stable ``type`` (the RFC 9457 problem type is ``PROBLEM_BASE + type``) and a status.
A problem type's ``title`` never varies between occurrences (RFC 9457 section 3.1.3): it comes
from ``problem_title(type)`` alone, and the ``detail`` carries the specifics.
"""

from __future__ import annotations

from ledger.domain.errors import InvalidInput, LedgerError

#: The one title of each problem type. A type not listed here is titled from its name
#: ("rollback-detected" -> "Rollback detected"); list a type when that reads badly.
PROBLEM_TITLES: dict[str, str] = {
    "csrf-rejected": "CSRF check failed",
    "totp-key": "TOTP key unavailable",
    "totp-not-enrolled": "TOTP not enrolled",
    "totp-required": "TOTP code required",
    "idempotency-key-reused": "Idempotency-Key reused",
    "invalid-input": "Invalid input",
    "ledger-error": "Ledger error",
    "http-404": "Not found",
}


def problem_title(type_: str) -> str:
    """The title of problem type ``type_``: the same for every occurrence of the type."""
    return PROBLEM_TITLES.get(type_) or type_.replace("-", " ").capitalize()


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


class SignInThrottled(LedgerError):
    """Too many failed sign-ins: this attempt was refused without checking any password (429).

    ``retry_after`` (whole seconds) goes out as the ``Retry-After`` header, ``until`` (UTC) in
    the problem body; ``field`` names the username (or the current password) that is throttled."""

    status = 429
    type = "sign-in-throttled"

    def __init__(self, reason: str, *, retry_after: int, until: str, field: str | None = "username"):
        super().__init__(reason, field=field)
        self.retry_after = retry_after
        self.until = until
        self.headers = {"Retry-After": str(retry_after)}


class PayloadTooLarge(LedgerError):
    status = 413
    type = "payload-too-large"


class BadCursor(InvalidInput):
    type = "invalid-cursor"
