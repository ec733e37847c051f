"""Witness assertions: the witness authenticates on the recorder's device; the assertion is
single-use, bound to the SHA-256 of one body and to the recorder's session, valid 2 minutes.

Until the witnessed clinical commands land, a probe route (added here, test only) stands in for
them: it declares the same dependencies a witnessed command route declares.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import pytest

from api.http.deps import IdempotencyKey, WitnessDep, actor
from ledger.domain.principal import Principal
from tests.api.conftest import PASSWORD, build_api
from tests.api.test_auth import ptype

BODY = json.dumps({"vial_id": "V10-1", "ml": "0.40"}).encode()


@pytest.fixture
def api(ledger):
    api = build_api(ledger)

    @api.client.app.post("/v1/registrants/{dea}/witness-probe", status_code=201, include_in_schema=False)
    def probe(body: dict, who: Annotated[Principal, actor("receive_stock")], witness: WitnessDep,
              idempotency_key: IdempotencyKey = None) -> dict:
        return {"actor": who.staff_id, "witness": witness.principal.staff_id,
                "witness_name": witness.principal.printed_name, "auth_method": witness.principal.auth_method.value}

    return api


def assertion(api, actor="nora", witness="ned", body=BODY, **extra):
    r = api.client.post(api.url("/witness-assertions"), headers=api.headers(actor), json={
        "username": witness, "password": PASSWORD, "body_sha256": hashlib.sha256(body).hexdigest(), **extra})
    return r


def send(api, token, body=BODY, actor="nora", **headers):
    return api.client.post(api.url("/witness-probe"), content=body, headers=api.headers(
        actor, **{"Content-Type": "application/json", **({"Witness-Assertion": token} if token else {}), **headers}))


def test_witness_signs_once_for_this_body(api):
    r = assertion(api)
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["witness_staff_id"] == api.clinic.nurse2.staff_id and a["witness_printed_name"] == "Ned Nurse"
    ok = send(api, a["assertion"])
    assert ok.status_code == 201, ok.text
    assert ok.json() == {"actor": api.clinic.nurse.staff_id, "witness": api.clinic.nurse2.staff_id,
                         "witness_name": "Ned Nurse", "auth_method": "password"}


def test_replayed_assertion_is_401(api):
    token = assertion(api).json()["assertion"]
    assert send(api, token).status_code == 201
    again = send(api, token)
    assert again.status_code == 401 and ptype(again) == "witness-assertion-invalid"


def test_retry_of_the_same_request_with_its_idempotency_key_may_reuse_it(api):
    token = assertion(api).json()["assertion"]
    assert send(api, token, **{"Idempotency-Key": "waste-1"}).status_code == 201
    assert send(api, token, **{"Idempotency-Key": "waste-1"}).status_code == 201
    assert send(api, token, **{"Idempotency-Key": "waste-2"}).status_code == 401


def test_expired_assertion_is_401(api):
    token = assertion(api).json()["assertion"]
    api.clock.advance(seconds=121)
    r = send(api, token)
    assert r.status_code == 401 and ptype(r) == "witness-assertion-expired"


def test_assertion_for_another_body_is_401(api):
    token = assertion(api).json()["assertion"]
    r = send(api, token, body=json.dumps({"vial_id": "V10-1", "ml": "4.00"}).encode())
    assert r.status_code == 401 and ptype(r) == "witness-body-mismatch"


def test_the_actor_cannot_witness_themself(api):
    r = assertion(api, actor="nora", witness="nora")
    assert r.status_code == 401 and ptype(r) == "witness-is-actor"


def test_assertion_given_on_another_login_is_401(api):
    token = assertion(api, actor="nora").json()["assertion"]
    r = send(api, token, actor="pia")  # pia's device did not see ned sign
    assert r.status_code == 401


def test_missing_or_forged_assertion_is_401(api):
    assert ptype(send(api, None)) == "witness-required"
    assert ptype(send(api, "csw_forged")) == "witness-assertion-invalid"
    assert ptype(send(api, "something else")) == "witness-assertion-invalid"


def test_wrong_witness_password_is_401_and_counts_toward_lockout(api):
    r = api.client.post(api.url("/witness-assertions"), headers=api.headers("nora"), json={
        "username": "ned", "password": "not ned's password", "body_sha256": "0" * 64})
    assert r.status_code == 401 and ptype(r) == "login-failed"
    cred = api.auth.store.credential(api.dea, api.clinic.nurse2.staff_id)
    assert cred["failed_logins"] == 1


def test_manager_witness_needs_totp(api):
    r = api.client.post(api.url("/witness-assertions"), headers=api.headers("nora"), json={
        "username": "morgan", "password": PASSWORD, "body_sha256": "0" * 64})
    assert r.status_code == 401 and ptype(r) == "totp-required"
    r = assertion(api, witness="morgan", totp=api.totp("morgan"))
    assert r.status_code == 201
    assert send(api, r.json()["assertion"]).json()["auth_method"] == "password+totp"


def test_assertion_is_stored_hashed(api):
    token = assertion(api).json()["assertion"]
    with api.ledger.reading() as c:
        rows = c.exec_driver_sql("SELECT * FROM witness_assertions").fetchall()
    assert rows and token not in str(rows)
