"""Issue 17 over HTTP: every person signs with their own key or passkey.

The clinic of ``tests/api/conftest.py`` adopts staff signatures here: Avery (administrator) makes
the registrant's root password key, then everyone makes theirs with Avery's approval on the same
screen. From then on every entry carries each signer's statement and proof, which these tests
check with the same pure rules the verifiers use (``credential_chain``).
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import sqlalchemy as sa

from ledger.integrity import canonical as canon
from ledger.integrity.credential_chain import check_entry
from ledger.storage.authority import authority_at
from tests.api.conftest import PASSWORD, Api, build_api, entry_count
from tests.api.test_clinical import infusion, setup_floor, witnessed
from tests.conftest import BACKENDS
from tests.support.soft_authenticator import SoftAuthenticator

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
ORIGIN = "http://localhost:8000"
USERS = ("nora", "ned", "pia", "dana", "casey", "ari", "morgan")


def enrol_key(api: Api, user: str, approver: str | None = None):
    """``user`` makes their password key, ``approver`` confirming on their screen."""
    body = {"password": PASSWORD}
    if approver is None:
        return api.client.post(api.url("/me/signing-key"), json=body, headers=api.headers(user))
    r, _ = witnessed(api, user, "/me/signing-key", body, approver)
    return r


def signed_api(ledger) -> Api:
    api = build_api(ledger)
    r = enrol_key(api, "avery")
    assert r.status_code == 201, r.text
    assert r.json()["root"] is True
    for user in USERS:
        r = enrol_key(api, user, "avery")
        assert r.status_code == 201, (user, r.text)
    api.tokens.clear()  # sessions opened before a key existed hold none: sign in again
    return api


@pytest.fixture
def sapi(ledger) -> Api:
    return signed_api(ledger)


def entries(api: Api) -> list[dict]:
    with api.ledger.engine.connect() as c:
        return [canon.decode(bytes(b)) for b in
                c.execute(sa.text("SELECT canonical FROM entries WHERE registrant = :r ORDER BY seq"),
                          {"r": api.dea}).scalars()]


def check_all_after_root(api: Api) -> int:
    """Check every entry after the root with the credentials enrolled before it; returns how many."""
    es = entries(api)
    root = next(e["seq"] for e in es if e["kind"] == "staff_credential_enrolled")
    with api.ledger.engine.connect() as c:
        n = 0
        for e in es[root + 1:]:
            if e["kind"] == "staff_credential_enrolled":
                continue  # checked by the authority (chain of trust), see test below
            before = authority_at(c, api.dea, (e["seq"] - 1, e["prev"]))
            check_entry(e, before.credentials, before.relying_party)
            n += 1
    return n


def test_root_then_approved_keys_every_entry_staff_signed(sapi):
    vials, patient = setup_floor(sapi)
    r, _ = witnessed(sapi, "nora", "/administrations", infusion(patient, vials[0]), "ned")
    assert r.status_code == 201, r.text
    assert check_all_after_root(sapi) >= 3
    last = entries(sapi)[-1]
    assert last["kind"] == "dose_wasted"
    by_meaning = {s["meaning"]: s for s in last["signatures"]}
    assert by_meaning["witnessed"]["auth_method"] == "password_key"
    assert by_meaning["witnessed"]["statement"]["kind"] == "administer_dose"
    assert by_meaning["witnessed"]["statement"]["command"] == by_meaning["performed"]["statement"]["command"]
    assert by_meaning["witnessed"]["statement"]["nonce"] != by_meaning["performed"]["statement"]["nonce"]


def test_a_login_without_a_key_can_no_longer_sign(sapi):
    """A staff member whose key was never made (enrolled after the root, no key yet) is refused
    with 403 naming it, and nothing is recorded."""
    before = entry_count(sapi)
    sapi.client.app.state.auth.store.set_signing_key(sapi.dea, sapi.auth.store.staff_by_username(sapi.dea, "nora").staff_id,
                                                     None, "2026-01-01T00:00:00.000000Z")
    sapi.tokens.clear()
    r = sapi.client.post(sapi.url("/patients"), json={"name": "Jordan Example", "address": {
        "street": "12 Elm St", "city": "Austin", "state": "TX", "postal_code": "78702"}}, headers=sapi.headers("nora"))
    assert r.status_code == 403, r.text
    assert r.json()["type"].endswith("signature-required")
    assert entry_count(sapi) == before


def test_a_new_key_needs_a_second_manager_once_there_is_one(sapi):
    """Nora rotating her key: Morgan (a manager with a key) exists, so Nora alone is refused."""
    r = enrol_key(sapi, "nora")
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("approver-required")
    r = enrol_key(sapi, "nora", "morgan")
    assert r.status_code == 201, r.text
    # the old key is replaced: revoked by the same entry
    listed = sapi.client.get(sapi.url(f"/staff/{r.json()['staff_id']}/credentials"), headers=sapi.headers("nora")).json()
    assert sorted(c["revoked_seq"] is None for c in listed) == [False, True]


def test_password_change_rewraps_the_same_key(sapi):
    nora = sapi.auth.store.staff_by_username(sapi.dea, "nora")
    before = sapi.auth.store.signing_record(sapi.auth.store.credential(sapi.dea, nora.staff_id))
    r = sapi.client.post(sapi.url("/me/password"), json={"current_password": PASSWORD,
                                                         "new_password": "seven green river stones"},
                         headers=sapi.headers("nora"))
    assert r.status_code == 204, r.text
    after = sapi.auth.store.signing_record(sapi.auth.store.credential(sapi.dea, nora.staff_id))
    assert after["credential_id"] == before["credential_id"] and after["wrapped"] != before["wrapped"]
    assert after["public_key"] == before["public_key"]


def test_admin_password_reset_drops_the_key(sapi):
    """Whoever sets a temporary password must not get the owner's key: the key is dropped and its
    credential revoked (signed by the administrator)."""
    nora = sapi.auth.store.staff_by_username(sapi.dea, "nora")
    r = sapi.client.post(sapi.url(f"/staff/{nora.staff_id}/password"), json={"password": "temporary harbor 77"},
                         headers=sapi.headers("avery"))
    assert r.status_code == 200, r.text
    assert sapi.auth.store.signing_record(sapi.auth.store.credential(sapi.dea, nora.staff_id)) is None
    listed = sapi.client.get(sapi.url(f"/staff/{nora.staff_id}/credentials"), headers=sapi.headers("avery")).json()
    assert [c["revoked_seq"] is not None for c in listed] == [True]


def test_my_signatures_lists_what_i_signed(sapi):
    vials, patient = setup_floor(sapi)
    r, _ = witnessed(sapi, "nora", "/administrations", infusion(patient, vials[0]), "ned")
    assert r.status_code == 201
    page = sapi.client.get(sapi.url("/me/signatures?limit=1"), headers=sapi.headers("ned")).json()
    first = page["items"][0]
    assert (first["kind"], first["meaning"], first["auth_method"]) == ("dose_wasted", "witnessed", "password_key")
    assert first["statement"]["command"]["type"] == "AdministerDose"
    assert page["next_cursor"] is not None
    older = sapi.client.get(sapi.url(f"/me/signatures?cursor={page['next_cursor']}"), headers=sapi.headers("ned")).json()
    assert [i["kind"] for i in older["items"]] == ["staff_credential_enrolled"]
    assert "Jordan" not in json.dumps(page)  # statements carry no patient names


def b64json(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def enrol_passkey(api: Api, user: str, approver: str, device: SoftAuthenticator) -> dict:
    h = api.headers(user)
    opts = api.client.post(api.url("/me/passkeys/registration-options"), headers=h)
    assert opts.status_code == 200, opts.text
    reg = api.client.post(api.url("/me/passkeys/registrations"), headers=h,
                          json={"response": device.register(opts.json()["public_key"])})
    assert reg.status_code == 200, reg.text
    proof = device.assert_(reg.json()["public_key"])
    r, _ = witnessed(api, user, "/me/passkeys", {"credential_id": reg.json()["credential_id"], "assertion": proof},
                     approver)
    assert r.status_code == 201, r.text
    return r.json()


def passkey_witness_headers(api: Api, body: bytes, key: str) -> dict[str, str]:
    """Nora's headers for ``body``, with Ned named as a witness who confirms by passkey."""
    a = api.client.post(api.url("/witness-assertions"), headers=api.headers("nora"), json={
        "username": "ned", "method": "passkey", "body_sha256": hashlib.sha256(body).hexdigest()})
    assert a.status_code == 201, a.text
    return api.headers("nora", **{"Content-Type": "application/json", "Witness-Assertion": a.json()["assertion"],
                                  "Idempotency-Key": key})


def test_witness_confirms_with_a_passkey(sapi):
    device = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    enrol_passkey(sapi, "ned", "avery", device)
    vials, patient = setup_floor(sapi)
    body = json.dumps(infusion(patient, vials[0])).encode()
    headers = passkey_witness_headers(sapi, body, "pk-1")
    before = entry_count(sapi)
    first = sapi.client.post(sapi.url("/administrations"), content=body, headers=headers)
    assert first.status_code == 428, first.text
    assert entry_count(sapi) == before
    need = first.json()["signature_needed"]
    assert need["statement"]["meaning"] == "witnessed" and need["statement"]["kind"] == "administer_dose"
    answer = device.assert_(need["public_key"])
    second = sapi.client.post(sapi.url("/administrations"), content=body,
                              headers={**headers, "Passkey-Signature": b64json(answer)})
    assert second.status_code == 201, second.text
    last = entries(sapi)[-1]
    w = next(s for s in last["signatures"] if s["meaning"] == "witnessed")
    assert w["auth_method"] == "passkey" and set(w["proof"]) == {"credential_id", "authenticator_data",
                                                                 "client_data_json", "signature"}
    assert check_all_after_root(sapi) >= 3


def test_passkey_answer_for_another_statement_is_refused(sapi):
    device = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    enrol_passkey(sapi, "ned", "avery", device)
    vials, patient = setup_floor(sapi)
    body = json.dumps(infusion(patient, vials[0])).encode()
    headers = passkey_witness_headers(sapi, body, "pk-2")
    first = sapi.client.post(sapi.url("/administrations"), content=body, headers=headers)
    opts = dict(first.json()["signature_needed"]["public_key"])
    opts["challenge"] = base64.urlsafe_b64encode(b"x" * 32).rstrip(b"=").decode()
    before = entry_count(sapi)
    bad = sapi.client.post(sapi.url("/administrations"), content=body,
                           headers={**headers, "Passkey-Signature": b64json(device.assert_(opts))})
    assert bad.status_code == 422, bad.text
    assert bad.json()["type"].endswith("signature-invalid")
    assert entry_count(sapi) == before


def test_policy_can_require_passkeys_for_witnessing(sapi):
    """With ``passkey_required_for: ["witnessing"]`` a witness's password key is refused (403,
    nothing recorded) and a passkey confirmation is accepted. Every second person is covered, an
    approver too (so Ned's passkey is enrolled, with Avery's password approval, before)."""
    device = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    enrol_passkey(sapi, "ned", "avery", device)
    r = sapi.client.post(sapi.url("/policies"), headers=sapi.headers("morgan", **sapi.key()), json={
        "passkey_required_for": ["witnessing"], "reason": "witnesses confirm with passkeys"})
    assert r.status_code == 201, r.text
    vials, patient = setup_floor(sapi)
    before = entry_count(sapi)
    refused, _ = witnessed(sapi, "nora", "/administrations", infusion(patient, vials[0]), "ned")
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("passkey-required")
    assert entry_count(sapi) == before
    body = json.dumps(infusion(patient, vials[0])).encode()
    headers = passkey_witness_headers(sapi, body, "pk-3")
    need = sapi.client.post(sapi.url("/administrations"), content=body, headers=headers).json()["signature_needed"]
    ok = sapi.client.post(sapi.url("/administrations"), content=body,
                          headers={**headers, "Passkey-Signature": b64json(device.assert_(need["public_key"]))})
    assert ok.status_code == 201, ok.text


BAD_BODIES = {
    "/me/signing-key": [({}, "password"), ({"password": 12}, "password"), ({"password": "x" * 129}, "password"),
                        ({"password": PASSWORD, "extra": 1}, "extra"), ({"password": PASSWORD, "totp": "12"}, "totp")],
    "/me/passkeys/registrations": [({}, "response"), ({"response": "AQID"}, "response"),
                                   ({"response": {}}, "response")],
    "/me/passkeys": [({}, "credential_id"), ({"credential_id": "", "assertion": {}}, "credential_id"),
                     ({"credential_id": "AQID", "assertion": []}, "assertion"),
                     ({"credential_id": "AQID", "assertion": {}}, "credential_id")],
    "/staff/S3/credentials/pk-0/revocation": [({}, "reason"), ({"reason": ""}, "reason"),
                                              ({"reason": "x" * 201}, "reason")],
}


def test_bad_input_on_the_signing_routes(sapi):
    """The routes ``tests/robustness/test_bad_input_http.py`` leaves out (``NOT_SWEPT``): each
    bad body is a 422 naming the field, and nothing is recorded."""
    sapi.client.post(sapi.url("/me/passkeys/registration-options"), headers=sapi.headers("nora"))
    for path, cases in BAD_BODIES.items():
        for body, field in cases:
            before = entry_count(sapi)
            r = sapi.client.post(sapi.url(path), json=body, headers=sapi.headers("nora"))
            assert r.status_code == 422, (path, body, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert any(field in (e.get("field") or "") for e in r.json()["errors"]), (path, body, r.text)
            assert entry_count(sapi) == before
    # a Passkey-Signature header that is not base64url JSON names the header
    vials, patient = setup_floor(sapi)
    for bad in ("%%%", "AQID", base64.urlsafe_b64encode(b"[1,2]").decode()):
        before = entry_count(sapi)
        body = json.dumps(infusion(patient, vials[0])).encode()
        a = sapi.client.post(sapi.url("/witness-assertions"), headers=sapi.headers("nora"), json={
            "username": "ned", "password": PASSWORD, "body_sha256": hashlib.sha256(body).hexdigest()})
        r = sapi.client.post(sapi.url("/administrations"), content=body, headers=sapi.headers(
            "nora", **{"Content-Type": "application/json", "Witness-Assertion": a.json()["assertion"],
                       "Passkey-Signature": bad}))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Passkey-Signature", (bad, r.text)
        assert entry_count(sapi) == before
    # a passkey witness with a password, or a password witness without one
    r = sapi.client.post(sapi.url("/witness-assertions"), headers=sapi.headers("nora"), json={
        "username": "ned", "method": "passkey", "password": PASSWORD, "body_sha256": "a" * 64})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "password"
    r = sapi.client.post(sapi.url("/witness-assertions"), headers=sapi.headers("nora"), json={
        "username": "ned", "body_sha256": "a" * 64})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "password"


def test_signing_key_password_guesses_are_throttled(sapi):
    """A stolen session must not guess the owner's password through POST /me/signing-key."""
    sapi.auth.settings.lockout_after_failures = 3
    for _ in range(3):
        r = sapi.client.post(sapi.url("/me/signing-key"), json={"password": "wrong guess 12345"},
                             headers=sapi.headers("nora"))
        assert r.status_code == 401, r.text
    r = sapi.client.post(sapi.url("/me/signing-key"), json={"password": PASSWORD}, headers=sapi.headers("nora"))
    assert r.status_code == 429, r.text


def test_an_ended_session_keeps_no_sealed_key(sapi):
    """Logging out (or any revocation) drops the session's sealed signing key: a bearer token
    leaked later, with a copy of the database taken later, opens nothing."""
    token = sapi.token("nora")
    th = hashlib.sha256(token.encode()).hexdigest()
    with sapi.ledger.engine.connect() as c:
        assert c.execute(sa.text("SELECT signing_key FROM api_sessions WHERE token_hash = :t"), {"t": th}).scalar()
    r = sapi.client.delete(sapi.url("/sessions/current"), headers=sapi.headers("nora"))
    assert r.status_code == 204
    with sapi.ledger.engine.connect() as c:
        assert c.execute(sa.text("SELECT signing_key FROM api_sessions WHERE token_hash = :t"), {"t": th}).scalar() is None


def test_a_bad_passkey_signature_is_refused_before_the_lock(sapi):
    """The authenticator's signature is checked when the witness assertion is redeemed, before the
    command takes the registrant's lock: a tampered one is a 422 naming Passkey-Signature."""
    device = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    enrol_passkey(sapi, "ned", "avery", device)
    vials, patient = setup_floor(sapi)
    body = json.dumps(infusion(patient, vials[0])).encode()
    headers = passkey_witness_headers(sapi, body, "pk-9")
    need = sapi.client.post(sapi.url("/administrations"), content=body, headers=headers).json()["signature_needed"]
    answer = device.assert_(need["public_key"])
    sig = bytearray(base64.urlsafe_b64decode(answer["response"]["signature"] + "=="))
    sig[-1] ^= 1
    answer["response"]["signature"] = base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
    before = entry_count(sapi)
    r = sapi.client.post(sapi.url("/administrations"), content=body, headers={**headers, "Passkey-Signature": b64json(answer)})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Passkey-Signature", r.text
    assert entry_count(sapi) == before
