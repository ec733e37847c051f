"""Fixtures for the HTTP API: a clinic with a login for every role, behind FastAPI's TestClient.

Passwords are hashed with argon2id at tiny parameters here (``fast_test_hasher``) so the many
logins stay quick; one test checks that the application's default is pwdlib's recommended argon2id.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from datetime import timedelta

import pyotp
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.http.app import create_app
from api.http.auth import fast_test_hasher
from ledger.settings import Settings
from ledger.storage.store import Ledger, utcnow
from tests.conftest import DEA, DEA2, Clinic

PASSWORD = "four quiet harbor lamps"
PATIENT_KEY = base64.b64encode(bytes(range(32))).decode()  # a fixed test key for the patient registry
TOTP_KEY = base64.b64encode(bytes(range(32, 64))).decode()  # a fixed test key sealing TOTP secrets
ROLE_USERS = {  # one login per role, holding only that role
    "nurse": "nora", "pharmacist": "pia", "prescriber": "dana", "manager": "morgan",
    "compliance_officer": "casey", "auditor": "ari", "administrator": "avery",
}


class Clock:
    """The API's clock: real time plus an offset the tests can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self):
        return utcnow() + self.offset

    def advance(self, **kw) -> None:
        self.offset += timedelta(**kw)


@dataclass
class Api:
    client: TestClient
    clinic: Clinic
    clock: Clock
    dea: str = DEA
    totp_secrets: dict[tuple[str, str], str] = field(default_factory=dict)
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def auth(self):
        return self.client.app.state.auth

    @property
    def ledger(self) -> Ledger:
        return self.clinic.ledger

    def url(self, path: str, dea: str | None = None) -> str:
        return f"/v1/registrants/{dea or self.dea}{path}"

    def set_password(self, username: str, password: str = PASSWORD, dea: str | None = None, *, must_change=False):
        dea = dea or self.dea
        member = self.auth.store.staff_by_username(dea, username)
        secret = self.auth.set_password(member, password, must_change=must_change)
        if secret:
            self.totp_secrets[(dea, username)] = secret
        return member

    def totp(self, username: str, dea: str | None = None) -> str | None:
        secret = self.totp_secrets.get((dea or self.dea, username))
        return pyotp.TOTP(secret).at(self.clock()) if secret else None

    def login(self, username: str, password: str = PASSWORD, dea: str | None = None, **extra):
        body = {"username": username, "password": password, **extra}
        code = self.totp(username, dea)
        if code and "totp" not in body:
            body["totp"] = code
        return self.client.post(self.url("/sessions", dea), json=body)

    def token(self, username: str, dea: str | None = None, *, fresh: bool = False) -> str:
        key = (dea or self.dea, username)
        if fresh or key not in self.tokens:
            r = self.login(username, dea=dea)
            assert r.status_code == 201, r.text
            self.tokens[key] = r.json()["access_token"]
        return self.tokens[key]

    def headers(self, username: str, dea: str | None = None, **extra) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username, dea)}", **extra}

    def key(self) -> dict[str, str]:
        return {"Idempotency-Key": f"k-{next(self.counter)}"}


def entry_count(api: Api) -> int:
    """Entries in the ledger (every registrant): a refused command leaves it unchanged."""
    with api.ledger.engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM entries")).scalar_one()


def build_api(ledger: Ledger, settings: Settings | None = None) -> Api:
    clinic = Clinic(ledger)
    # Avery, the only administrator so far, enrols everyone alone; the manager last, so no
    # enrolment here is "approved" by someone Avery enrolled alone (issue 15: from then on,
    # enrolments and role grants need Morgan's approval, see Clinic.enroll).
    clinic.enroll("Dr. Dana Prescriber", "dana", "prescriber")
    clinic.enroll("Casey Compliance", "casey", "compliance_officer")
    clinic.enroll("Morgan Manager", "morgan", "manager")
    clock = Clock()
    settings = settings or Settings(patient_key=PATIENT_KEY, totp_key=TOTP_KEY)
    app = create_app(ledger, settings, clock=clock, password_hasher=fast_test_hasher())
    api = Api(TestClient(app, raise_server_exceptions=False), clinic, clock)
    for user in [*ROLE_USERS.values(), "ned"]:
        api.set_password(user)
    return api


@pytest.fixture
def api(ledger) -> Api:
    return build_api(ledger)


def second_clinic(api: Api) -> Clinic:
    """Another registrant in the same database, with its own administrator and nurse logins."""
    other = Clinic(api.ledger, dea=DEA2)
    api.set_password("avery", dea=DEA2)
    api.set_password("nora", dea=DEA2)
    return other
