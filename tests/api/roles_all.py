"""Every role, for a login that may call every endpoint (the schemathesis run)."""

from api.http.roles import ALL_ROLES

ALL = tuple(ALL_ROLES)
