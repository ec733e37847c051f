"""One exception family for the core. Each error names the offending field and the reason.

The HTTP layer maps ``status`` to the response code and ``type`` to the RFC 9457 problem type,
so a business conflict is a 409, bad input a 422, a missing thing a 404, a missing role a 403.
"""

from __future__ import annotations


class LedgerError(Exception):
    status = 400
    type = "ledger-error"

    def __init__(self, reason: str, *, field: str | None = None, type_: str | None = None):
        self.reason = reason
        self.field = field
        if type_ is not None:
            self.type = type_
        super().__init__(f"{field}: {reason}" if field else reason)


class InvalidInput(LedgerError):
    """The command itself is malformed: a bad quantity, identifier or date."""

    status = 422
    type = "invalid-input"


class NotFound(LedgerError):
    """The command names a registrant, product, supplier, staff member or vial that does not exist."""

    status = 404
    type = "not-found"


class Conflict(LedgerError):
    """The command is well formed but contradicts what is recorded (duplicate invoice, ...)."""

    status = 409
    type = "conflict"


class IdempotencyConflict(Conflict):
    """The idempotency key was already used for a different request."""

    type = "idempotency-key-reused"


class Forbidden(LedgerError):
    """The authenticated principal lacks the role the command needs at this registrant."""

    status = 403
    type = "forbidden"


class IntegrityFailure(LedgerError):
    """Verification found stored data that does not match what was recorded."""

    status = 500
    type = "integrity-failure"

    def __init__(self, reason: str, *, registrant: str | None = None, seq: int | None = None):
        self.registrant = registrant
        self.seq = seq
        if registrant is None:
            where = ""
        else:  # always name the registrant: a database holds many
            where = f"{registrant} seq {seq}: " if seq is not None else f"{registrant}: "
        super().__init__(where + reason)


class SignatureNeeded(LedgerError):
    """A signer confirms with a passkey: nothing was recorded; the answer carries the statement
    and the WebAuthn options for their authenticator, and the same request is sent again with
    the assertion (``Passkey-Signature``)."""

    status = 428
    type = "passkey-signature-needed"

    def __init__(self, reason: str, *, challenge: dict, field: str | None = None):
        super().__init__(reason, field=field)
        self.challenge = challenge
