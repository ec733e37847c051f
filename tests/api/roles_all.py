"""Every role, for a login that may call every endpoint (the schemathesis run)."""

from csledger.api.roles import ALL_ROLES

ALL = tuple(ALL_ROLES)
