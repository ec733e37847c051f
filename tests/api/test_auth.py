"""Logins as staff meet them: passwords, TOTP, sign-in throttle, idle timeout, logout, revocation."""

from __future__ import annotations

import sqlalchemy as sa

from api.http.auth import default_hasher
from tests.api.conftest import PASSWORD, second_clinic
from tests.conftest import DEA2

PROBLEM = "https://csledger.local/problems/"


def ptype(r) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return r.json()["type"].removeprefix(PROBLEM)


def test_login_gives_a_bearer_token_and_whoami(api):
    r = api.login("nora")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["roles"] == ["nurse"] and body["auth_method"] == "password"
    me = api.client.get(api.url("/me"), headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["staff_id"] == api.clinic.nurse.staff_id


def test_token_and_password_are_stored_only_hashed(api):
    token = api.token("nora")
    with api.ledger.reading() as c:
        sessions = [dict(r) for r in c.exec_driver_sql("SELECT * FROM api_sessions").mappings()]
        creds = [dict(r) for r in c.exec_driver_sql("SELECT * FROM staff_credentials").mappings()]
    assert all(token not in str(s) for s in sessions)
    assert all(c["password_hash"].startswith("$argon2id$") and PASSWORD not in str(c) for c in creds)


def test_default_hasher_is_recommended_argon2id():
    h = default_hasher().hash("a long enough password")
    assert h.startswith("$argon2id$v=19$m=65536,t=3")


def test_wrong_password_and_unknown_user_look_the_same(api):
    a = api.login("nora", "not the password at all")
    b = api.login("nobody", "not the password at all")
    assert a.status_code == b.status_code == 401
    assert ptype(a) == ptype(b) == "login-failed" and a.json()["detail"] == b.json()["detail"]
    assert a.headers["www-authenticate"] == "Bearer"


def test_throttle_after_repeated_failures_then_one_attempt_per_delay(api):
    """5 failures throttle the login: the right password is refused (429, unchecked) until the
    30-second delay has passed; each further failure doubles the delay; a success resets it."""
    for _ in range(5):
        assert api.login("nora", "wrong password here").status_code == 401
    throttled = api.login("nora")
    assert throttled.status_code == 429 and ptype(throttled) == "sign-in-throttled"
    assert 1 <= int(throttled.headers["retry-after"]) <= 30
    assert throttled.json()["errors"][0]["field"] == "username" and "30 seconds" in throttled.json()["detail"]
    api.clock.advance(seconds=31)
    assert api.login("nora", "wrong password again").status_code == 401  # one attempt checked ...
    again = api.login("nora")
    assert again.status_code == 429 and 30 < int(again.headers["retry-after"]) <= 60  # ... and the delay doubled
    api.clock.advance(seconds=61)
    assert api.login("nora").status_code == 201
    cred = api.auth.store.credential(api.dea, api.clinic.nurse.staff_id)
    assert cred["failed_logins"] == 0 and cred["locked_until"] is None


def test_manager_and_administrator_need_totp(api):
    for user in ("morgan", "avery"):
        no = api.login(user, totp=None)
        no = api.client.post(api.url("/sessions"), json={"username": user, "password": PASSWORD})
        assert no.status_code == 401 and ptype(no) == "totp-required"
        bad = api.client.post(api.url("/sessions"), json={"username": user, "password": PASSWORD, "totp": "000000"})
        assert bad.status_code == 401 and ptype(bad) == "login-failed"
        ok = api.login(user)
        assert ok.status_code == 201 and ok.json()["auth_method"] == "password+totp"


def test_malformed_totp_is_422(api):
    r = api.client.post(api.url("/sessions"), json={"username": "morgan", "password": PASSWORD, "totp": "12ab"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "totp"


def test_missing_and_bogus_tokens_are_401(api):
    assert ptype(api.client.get(api.url("/products"))) == "unauthorized"
    r = api.client.get(api.url("/products"), headers={"Authorization": "Bearer csl_forged"})
    assert r.status_code == 401 and ptype(r) == "token-invalid"
    r = api.client.get(api.url("/products"), headers={"Authorization": "Basic bm9yYTp4"})
    assert r.status_code == 401


def test_logout_revokes_the_token(api):
    h = api.headers("nora")
    assert api.client.delete(api.url("/sessions/current"), headers=h).status_code == 204
    r = api.client.get(api.url("/products"), headers=h)
    assert r.status_code == 401 and ptype(r) == "token-revoked"


def test_idle_timeout_and_absolute_expiry(api):
    h = api.headers("nora")
    api.clock.advance(minutes=10)
    assert api.client.get(api.url("/products"), headers=h).status_code == 200
    api.clock.advance(minutes=10)  # 10 minutes since last use: still within 15
    assert api.client.get(api.url("/products"), headers=h).status_code == 200
    api.clock.advance(minutes=16)
    r = api.client.get(api.url("/products"), headers=h)
    assert r.status_code == 401 and ptype(r) == "token-expired"
    h2 = api.headers("pia")
    for _ in range(40):  # busy all day: the 8-hour limit still ends the session
        api.clock.advance(minutes=14)
        if api.client.get(api.url("/products"), headers=h2).status_code == 401:
            break
    else:
        raise AssertionError("session never expired")
    assert api.clock.offset.total_seconds() / 60 - 36 <= 480 + 14


def test_token_of_one_registrant_is_refused_at_another(api):
    second_clinic(api)
    r = api.client.get(api.url("/products", DEA2), headers=api.headers("nora"))
    assert r.status_code == 403 and ptype(r) == "wrong-registrant"
    assert api.client.get(api.url("/products", DEA2), headers=api.headers("nora", DEA2)).status_code == 200


def test_revoked_role_takes_effect_at_once(api):
    h = api.headers("pia")
    assert api.client.get(api.url("/vials"), headers=h).status_code == 200
    r = api.client.post(api.url(f"/staff/{api.clinic.pharmacist.staff_id}/role-revocations"),
                        json={"role": "pharmacist", "reason": "moved to another clinic"},
                        headers=api.headers("avery", **api.key()))
    assert r.status_code == 201, r.text
    r = api.client.get(api.url("/vials"), headers=h)
    assert r.status_code == 403 and ptype(r) == "role-required"


def test_admin_resets_a_password_and_the_owner_must_change_it(api):
    old = api.headers("nora")
    sid = api.clinic.nurse.staff_id
    r = api.client.post(api.url(f"/staff/{sid}/password"), json={"password": "temporary harbor 42"},
                        headers=api.headers("avery"))
    assert r.status_code == 200 and r.json()["password_change_required"] is True and r.json()["totp_secret"] is None
    assert api.client.get(api.url("/products"), headers=old).status_code == 401  # sessions ended
    r = api.login("nora", "temporary harbor 42")
    assert r.status_code == 201 and r.json()["password_change_required"] is True
    h = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = api.client.get(api.url("/products"), headers=h)
    assert r.status_code == 403 and ptype(r) == "password-change-required"
    r = api.client.post(api.url("/me/password"), headers=h,
                        json={"current_password": "temporary harbor 42", "new_password": "short"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "new_password"
    r = api.client.post(api.url("/me/password"), headers=h,
                        json={"current_password": "temporary harbor 42", "new_password": "seven silver kites fly"})
    assert r.status_code == 204
    assert api.login("nora", "seven silver kites fly").status_code == 201


def test_admin_reset_of_a_manager_gives_a_totp_secret_once(api):
    sid = api.auth.store.staff_by_username(api.dea, "morgan").staff_id
    r = api.client.post(api.url(f"/staff/{sid}/password"), json={"password": "temporary harbor 42",
                                                                   "enroll_totp": True}, headers=api.headers("avery"))
    body = r.json()
    assert r.status_code == 200 and len(body["totp_secret"]) >= 16 and body["totp_uri"].startswith("otpauth://totp/")


def test_only_administrators_reset_passwords(api):
    r = api.client.post(api.url(f"/staff/{api.clinic.nurse.staff_id}/password"), json={"password": "temporary harbor 42"},
                        headers=api.headers("morgan"))
    assert r.status_code == 403


def test_password_rules(api):
    sid = api.clinic.nurse.staff_id
    for bad, why in [("short", "at least 12"), ("nora-is-here-123", "username"), ("aaaaaaaaaaaaaa", "5 different"),
                     ("password1234", "commonly used"), ("x" * 129, "")]:
        r = api.client.post(api.url(f"/staff/{sid}/password"), json={"password": bad}, headers=api.headers("avery"))
        assert r.status_code == 422, (bad, r.text)
        assert why in r.json()["detail"]


def test_admin_revokes_every_session_of_a_staff_member(api):
    h = api.headers("nora")
    r = api.client.delete(api.url(f"/staff/{api.clinic.nurse.staff_id}/sessions"), headers=api.headers("avery"))
    assert r.status_code == 200 and r.json()["revoked"] == 1
    assert api.client.get(api.url("/products"), headers=h).status_code == 401


def test_patient_access_log_is_append_only(api):
    from ledger.integrity.canonical import format_time

    api.auth.store.log_patient_access(api.dea, "S4", ["P1"], "read_identity", format_time(api.clock()))
    with api.ledger.engine.connect() as c:
        for stmt in ("UPDATE patient_access_log SET patient_id = 'P2'", "DELETE FROM patient_access_log"):
            try:
                with c.begin():
                    c.execute(sa.text(stmt))
            except sa.exc.DBAPIError as exc:  # either backend's trigger error, raised by the driver
                assert "append-only" in str(exc)
            else:
                raise AssertionError(f"{stmt} was allowed")
    r = api.client.get(api.url("/patient-access-log"), headers=api.headers("casey"))
    assert r.status_code == 200 and r.json()["items"][0]["patient_id"] == "P1"
