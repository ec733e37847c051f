"""Issue 16: authority comes from the role entries of the chain, and TOTP secrets are sealed.

Before: requests read roles from the ``staff_roles`` projection, a plain table. Someone with write
access to the database (no key, no trigger dropped) ran ``INSERT INTO staff_roles (..., 'manager')``
while the server ran, and a nurse's live session set policy and granted a role (201). Now the
HTTP layer (who may call a route) and the services (the signature check inside the command's
transaction) both read the ``staff_enrolled`` / ``role_granted`` / ``role_revoked`` entries
(``ledger.storage.authority``): a row added to or deleted from ``staff_roles`` changes nothing,
a real revocation entry takes effect with the next request.

TOTP secrets were stored in plaintext in ``staff_credentials``; now they are AES-GCM sealed under
a key kept outside the database, bound to the login they belong to.
"""

from __future__ import annotations

import hashlib
import json

import pyotp
import pytest
import sqlalchemy as sa

from api.http.auth import Authenticator, fast_test_hasher
from api.http.auth_store import AuthStore, TotpKey
from ledger import services
from ledger.domain import entries as ev
from ledger.domain.commands import RevokeRole
from ledger.domain.errors import InvalidInput
from ledger.domain.principal import Meaning
from ledger.settings import Settings
from ledger.storage.store import Ledger, make_engine
from tests.api.conftest import PASSWORD, PATIENT_KEY
from tests.conftest import BACKENDS, DEA

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

POLICY = {"beyond_use_days": 28, "reason": "set by whoever holds the role"}


@pytest.fixture
def writer(db_url):
    """A second connection to the database, as anyone with write access to it has: no key, no
    trigger dropped, the server running meanwhile."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def sql(writer, text: str, **params) -> int:
    with writer.begin() as c:
        return c.execute(sa.text(text), params).rowcount


def entry_count(api) -> int:
    with api.ledger.engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM entries")).scalar_one()


def ptype(r) -> str:
    return r.json()["type"].rsplit("/", 1)[-1]


def field(r) -> str | None:
    return (r.json().get("errors") or [{}])[0].get("field")


def approved(api, actor: str, path: str, body: dict, approver: str):
    """POST ``body`` as ``actor`` with ``approver``'s assertion signed on the actor's device."""
    content = json.dumps(body).encode()
    r = api.client.post(api.url("/witness-assertions"), headers=api.headers(actor), json={
        "username": approver, "password": PASSWORD, "body_sha256": hashlib.sha256(content).hexdigest(),
        **({"totp": api.totp(approver)} if api.totp(approver) else {})})
    assert r.status_code == 201, r.text
    return api.client.post(api.url(path), content=content, headers=api.headers(
        actor, **{"Content-Type": "application/json", "Witness-Assertion": r.json()["assertion"]}))


def staff_id(api, username: str) -> str:
    return api.auth.store.staff_by_username(DEA, username).staff_id


def test_a_manager_role_inserted_with_sql_gives_a_nurse_no_authority(api, writer):
    nurse = api.headers("nora")  # a live session, opened before the row is written
    ned = staff_id(api, "ned")
    assert sql(writer, "INSERT INTO staff_roles (registrant, staff_id, role, granted_seq) VALUES (:r, :s, 'manager', 0)",
               r=DEA, s=api.clinic.nurse.staff_id) == 1
    before = entry_count(api)

    policy = api.client.post(api.url("/policies"), json=POLICY, headers=nurse)
    assert policy.status_code == 403 and ptype(policy) == "role-required", policy.text
    grant = api.client.post(api.url(f"/staff/{ned}/roles"), json={"role": "pharmacist"}, headers=nurse)
    assert grant.status_code == 403 and ptype(grant) == "role-required", grant.text
    assert api.client.get(api.url("/me"), headers=nurse).json()["roles"] == ["nurse"]
    fresh = api.login("nora")
    assert fresh.status_code == 201 and fresh.json()["roles"] == ["nurse"]
    # Past the route, the service checks again in its transaction: the nurse as the "second
    # manager" approving a grant is refused there, naming the approver.
    as_approver = approved(api, "morgan", f"/staff/{ned}/roles", {"role": "pharmacist"}, "nora")
    assert as_approver.status_code == 403 and field(as_approver) == "approver", as_approver.text
    assert entry_count(api) == before


def test_deleting_a_real_role_row_takes_no_authority_away(api, writer):
    manager = api.headers("morgan")
    assert sql(writer, "DELETE FROM staff_roles WHERE registrant = :r AND staff_id = :s AND role = 'manager'",
               r=DEA, s=staff_id(api, "morgan")) == 1
    before = entry_count(api)
    assert api.client.get(api.url("/me"), headers=manager).json()["roles"] == ["manager"]
    r = api.client.post(api.url("/policies"), json=POLICY, headers=manager)
    assert r.status_code == 201, r.text
    assert entry_count(api) == before + 1


def test_a_revocation_entry_takes_effect_at_once(api, db_url):
    manager = api.headers("morgan")
    assert api.client.post(api.url("/policies"), json=POLICY, headers=manager).status_code == 201
    morgan = staff_id(api, "morgan")
    # Recorded by another process on the same database (its own Ledger and engine): no hook in
    # this server learns of it, only the chain head moves.
    other = Ledger(make_engine(db_url))
    try:
        services.revoke_role(other, api.clinic.admin, RevokeRole(morgan, "manager", "moved to another clinic"))
    finally:
        other.dispose()
    before = entry_count(api)
    r = api.client.post(api.url("/policies"), json=POLICY, headers=manager)
    assert r.status_code == 403 and ptype(r) == "role-required", r.text
    assert api.client.get(api.url("/me"), headers=manager).json()["roles"] == []
    assert entry_count(api) == before


def test_a_grant_entry_takes_effect_at_once(api):
    nurse = api.headers("nora")
    assert api.client.post(api.url("/policies"), json=POLICY, headers=nurse).status_code == 403
    r = approved(api, "morgan", f"/staff/{api.clinic.nurse.staff_id}/roles", {"role": "manager"}, "avery")
    assert r.status_code == 201, r.text
    assert sorted(api.client.get(api.url("/me"), headers=nurse).json()["roles"]) == ["manager", "nurse"]
    assert api.client.post(api.url("/policies"), json=POLICY, headers=nurse).status_code == 201


def credentials(writer) -> dict[str, str | None]:
    with writer.connect() as c:
        return {s: t for s, t in c.execute(sa.text(
            "SELECT staff_id, totp_secret FROM staff_credentials WHERE registrant = :r"), {"r": DEA})}


def test_totp_secrets_are_sealed_at_rest_and_totp_login_still_works(api, writer):
    morgan, avery = staff_id(api, "morgan"), staff_id(api, "avery")
    stored = credentials(writer)
    for sid, user in ((morgan, "morgan"), (avery, "avery")):
        plain = api.totp_secrets[(DEA, user)]
        assert stored[sid] is not None and plain not in stored[sid] and plain.lower() not in stored[sid].lower()
        assert TotpKey.is_sealed(stored[sid]) and len(stored[sid]) <= 64
    ok = api.login("morgan")
    assert ok.status_code == 201 and ok.json()["auth_method"] == "password+totp", ok.text

    # A sealed secret moved to another login does not open there.
    sql(writer, "UPDATE staff_credentials SET totp_secret = :t WHERE registrant = :r AND staff_id = :s",
        t=stored[avery], r=DEA, s=morgan)
    moved = api.client.post(api.url("/sessions"), json={
        "username": "morgan", "password": PASSWORD, "totp": pyotp.TOTP(api.totp_secrets[(DEA, "avery")]).at(api.clock())})
    assert moved.status_code == 401, moved.text
    # A secret of the writer's choosing, written in plaintext, is not accepted either.
    chosen = pyotp.random_base32()
    sql(writer, "UPDATE staff_credentials SET totp_secret = :t WHERE registrant = :r AND staff_id = :s",
        t=chosen, r=DEA, s=morgan)
    forged = api.client.post(api.url("/sessions"), json={
        "username": "morgan", "password": PASSWORD, "totp": pyotp.TOTP(chosen).at(api.clock())})
    assert forged.status_code == 401 and ptype(forged) == "totp-not-enrolled", forged.text


def test_plaintext_secrets_from_before_are_sealed_when_the_key_is_created(api, writer, tmp_path):
    """A database from before secrets were sealed: the process that creates the TOTP key file
    seals every plaintext secret in place; logins keep working with the same authenticator app."""
    morgan = staff_id(api, "morgan")
    legacy = pyotp.random_base32()
    sql(writer, "UPDATE staff_credentials SET totp_secret = :t WHERE registrant = :r AND staff_id = :s",
        t=legacy, r=DEA, s=morgan)
    settings = Settings(patient_key=PATIENT_KEY, key_dir=tmp_path / "keys")
    restarted = Authenticator(AuthStore(api.ledger), settings, clock=api.clock, hasher=fast_test_hasher())
    member, method = restarted.check_credentials(DEA, "morgan", PASSWORD, pyotp.TOTP(legacy).at(api.clock()))
    assert member.staff_id == morgan and method.value == "password+totp"
    sealed = credentials(writer)[morgan]
    assert sealed != legacy and TotpKey.is_sealed(sealed)
    assert (tmp_path / "keys" / "totp.key").stat().st_mode & 0o777 == 0o600
    assert restarted.totp_key.open(DEA, morgan, sealed) == legacy



def test_a_grant_rolled_back_with_its_command_grants_nothing(api):
    """The cache is keyed by the chain head: a role entry that a command appended, and saw inside
    its own transaction, is gone with the rollback, even once the next real entry takes its seq."""
    nurse_session = api.headers("nora")
    nora = api.clinic.nurse

    def build(ctx):
        ctx.append(ev.RoleGranted(staff_id=nora.staff_id, role="manager"),
                   signatures=[ctx.signature(api.clinic.admin, Meaning.PERFORMED)], occurred_at=ctx.now)
        assert "manager" in ctx.authority().roles(nora.staff_id)  # seen inside the transaction
        ctx.signature(nora, Meaning.PERFORMED, roles=frozenset({"manager"}))
        raise InvalidInput("changed my mind", field="role")

    before = entry_count(api)
    with pytest.raises(InvalidInput):
        api.ledger.execute(DEA, "grant_role", {"try": 1}, build, principal_id=api.clinic.admin.staff_id)
    assert entry_count(api) == before
    refused = api.client.post(api.url("/policies"), json=POLICY, headers=nurse_session)
    assert refused.status_code == 403 and ptype(refused) == "role-required", refused.text
    # The next real entry lands at the seq the rolled-back grant had.
    assert api.client.post(api.url("/policies"), json=POLICY, headers=api.headers("morgan")).status_code == 201
    assert api.client.post(api.url("/policies"), json=POLICY, headers=nurse_session).status_code == 403
    assert api.client.get(api.url("/me"), headers=nurse_session).json()["roles"] == ["nurse"]
