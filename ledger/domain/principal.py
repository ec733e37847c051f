"""Who is acting. Services take a ``Principal`` built by authentication, never a typed name.

The HTTP layer builds principals from a verified login; the command line builds one only for
``init`` (the registrant's first administrator, self-enrolled) and ``demo`` (its seeded staff).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Role(enum.StrEnum):
    NURSE = "nurse"
    PHARMACIST = "pharmacist"
    PRESCRIBER = "prescriber"
    MANAGER = "manager"
    COMPLIANCE_OFFICER = "compliance_officer"
    AUDITOR = "auditor"
    ADMINISTRATOR = "administrator"


class AuthMethod(enum.StrEnum):
    PASSWORD = "password"
    PASSWORD_TOTP = "password+totp"
    BEARER_TOKEN = "bearer_token"
    #: The operator at the server's console running ``csledger init`` (bootstraps the first admin).
    CONSOLE_BOOTSTRAP = "console_bootstrap"
    #: Seeded staff of ``csledger demo``; never used outside the demo data set.
    DEMO_SEED = "demo_seed"


class Meaning(enum.StrEnum):
    """What a signature on an entry means (21 CFR 11.50: a signed record shows its meaning)."""

    PERFORMED = "performed"
    WITNESSED = "witnessed"
    APPROVED = "approved"
    COUNTED = "counted"
    RECEIVED = "received"


@dataclass(frozen=True)
class Principal:
    """An authenticated staff member acting at one registrant.

    ``staff_id`` and ``printed_name`` come from the staff projection at authentication time;
    the service checks again, inside the append transaction, that the staff member is enrolled
    and holds the role the command needs.
    """

    registrant: str
    staff_id: str
    printed_name: str
    auth_method: AuthMethod
    #: What signs as this person (issue 17): a ``PasswordKeySigner`` opened by their sign-in, or a
    #: passkey signer carrying their authenticator's assertion; None when nothing can sign for them
    #: (then, once the registrant has staff credentials, they can sign nothing).
    signer: Any = field(default=None, compare=False, repr=False)
