"""Issue 21: the "Staff and roles" pages (``/ui/<DEA>/staff``): enrol, grant and revoke a role
with a second manager or administrator approving on the same form, set a temporary password
(administrators), sign out everywhere, clear the sign-in throttle, revoke a signing credential.

Each records what the API's route records (the same service, the same command), says so in plain
words with the entry's number, shows every mistake at once beside its field and the services'
separation-of-duties refusals beside the field they name, records nothing on a refusal, and
records a form sent twice once. On SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest

from api.web.settings import WebSettings
from tests.api.conftest import PASSWORD, build_api
from tests.conftest import BACKENDS, entry_count
from tests.web.test_pages_http import UI, csrf_of, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
AT = r"at \d\d:\d\d"  # the clinic's local clock time, today


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _sid(web, username: str) -> str:
    return web.auth.store.staff_by_username(web.dea, username).staff_id


def _last(web, kind: str) -> dict:
    from api.http import queries as api_queries
    from ledger.integrity.canonical import decode
    from ledger.storage.store import entries_t

    with web.ledger.reading() as c:
        seq = c.execute(entries_t.select().with_only_columns(entries_t.c.seq).where(
            entries_t.c.registrant == web.dea, entries_t.c.kind == kind).order_by(entries_t.c.seq.desc())).scalar()
    assert seq is not None, kind
    return decode(api_queries.entry(web.ledger, web.dea, seq)["canonical"].encode())


def _approver(web, prefix: str, username: str = "morgan", password: str = PASSWORD) -> dict:
    return {f"{prefix}_username": username, f"{prefix}_password": password, f"{prefix}_totp": web.totp(username) or ""}


def _member_form(web, staff_id: str) -> tuple[str, dict]:
    page = web.client.get(UI + f"staff/{staff_id}")
    assert page.status_code == 200, page.text
    keys = dict(re.findall(r'name="(\w+_key)" value="([^"]+)"', page.text))
    return page.text, {"csrf_token": csrf_of(page.text), **keys}


def _said(html: str) -> str:
    m = re.search(r'<div class="saved" role="status" id="saved">(.*?)</div>', html, re.S)
    assert m, html[:3000]
    return re.sub(r"<[^>]+>", "", m.group(1)).replace("\n", " ")


def _errors(html: str) -> set[str]:
    return set(re.findall(r'id="f-([\w-]+?)-error"', html)) | set(re.findall(r'<p class="error" id="f-(\w+_form)"', html))


def test_the_list_shows_each_staff_member_roles_and_state_and_enrols_with_an_approver(web):
    login(web, "avery")
    page = web.client.get(UI + "staff")
    assert page.status_code == 200
    assert "Nora Nurse" in page.text and f'href="/ui/{web.dea}/staff/{_sid(web, "nora")}"' in page.text
    assert "Morgan Manager" in page.text and ">manager<" in page.text
    assert 'name="roles" value="pharmacist"' in page.text and 'type="password"' in page.text
    before = entry_count(web.ledger)
    form = {"csrf_token": csrf_of(page.text), "form_key": re.search(r'name="form_key" value="([^"]+)"', page.text)[1],
            "printed_name": "Rita Nurse", "username": "rita", "roles": ["nurse", "pharmacist"],
            **_approver(web, "approver")}
    r = web.client.post(UI + "staff", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    sid = _sid(web, "rita")
    assert r.headers["location"].startswith(f"/ui/{web.dea}/staff/{sid}?saved=")
    # exactly what the API's enroll_staff records: the enrolment and one grant per role, signed
    # by the administrator who sent it and approved by the manager who typed their credentials
    enrolled, granted = _last(web, "staff_enrolled"), _last(web, "role_granted")
    assert (enrolled["staff_id"], enrolled["printed_name"], enrolled["username"]) == (sid, "Rita Nurse", "rita")
    assert [(s["printed_name"], s["meaning"]) for s in enrolled["signatures"]] == [
        ("Avery Admin", "performed"), ("Morgan Manager", "approved")]
    assert granted["staff_id"] == sid and granted["role"] == "pharmacist"
    assert entry_count(web.ledger) == before + 3
    done = web.client.get(r.headers["location"])
    said = _said(done.text)
    assert re.search(rf"Rita Nurse is enrolled \(staff id {sid}, login rita\) with the roles nurse and pharmacist, "
                     rf"by Avery Admin {AT}, approved by Morgan Manager\.", said), said
    assert f'href="/ui/{web.dea}/entries/{enrolled["seq"]}"' in done.text
    assert "no password yet" in done.text
    # sent again (a double tap, a reload of the POST): the same enrolment, recorded once
    again = web.client.post(UI + "staff", data={**form, **_approver(web, "approver")}, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == r.headers["location"]
    assert entry_count(web.ledger) == before + 3


def test_every_mistake_of_the_enrolment_at_once_and_nothing_recorded(web):
    login(web, "avery")
    page = web.client.get(UI + "staff")
    before = entry_count(web.ledger)
    r = web.client.post(UI + "staff", data={
        "csrf_token": csrf_of(page.text), "form_key": "web-enrol-mistakes", "printed_name": "", "username": "",
        "roles": ["nurse", "surgeon"], **_approver(web, "approver")})
    assert r.status_code == 422
    assert {"printed_name", "username", "roles"} <= _errors(r.text), _errors(r.text)
    assert "3 things to fix" in r.text
    assert PASSWORD not in r.text  # the approver's password is never sent back
    assert 'value="morgan"' in r.text and 'value="nurse" checked' in r.text  # the rest is kept
    # a name in two scripts: the service's own check, beside the name, with the others
    r = web.client.post(UI + "staff", data={
        "csrf_token": csrf_of(page.text), "form_key": "web-enrol-mistakes-2", "printed_name": "Nоra Nurse",  # Cyrillic о
        "username": "", "roles": ["nurse"]})
    assert r.status_code == 422 and {"printed_name", "username"} <= _errors(r.text)
    assert "mixes the scripts" in r.text
    assert entry_count(web.ledger) == before


def test_separation_of_duties_refusals_show_beside_the_field_they_name(web):
    login(web, "avery")
    page = web.client.get(UI + "staff")
    csrf = csrf_of(page.text)
    base = {"csrf_token": csrf, "printed_name": "Rita Nurse", "username": "rita", "roles": ["nurse"]}
    before = entry_count(web.ledger)
    # no approver while another manager exists: the service names the approver
    r = web.client.post(UI + "staff", data={**base, "form_key": "web-sod-1"})
    assert r.status_code == 422 and "approver_username" in _errors(r.text)
    assert "needs a second manager or administrator to approve" in r.text and "Morgan Manager" in r.text
    # the one acting cannot approve themself
    r = web.client.post(UI + "staff", data={**base, "form_key": "web-sod-2", **_approver(web, "approver", "avery")})
    assert r.status_code in (403, 409, 422) and "approver_username" in _errors(r.text), r.text[:2000]
    # a username already taken: the service's Conflict beside the username
    r = web.client.post(UI + "staff", data={**base, "username": "nora", "form_key": "web-sod-3",
                                            **_approver(web, "approver")})
    assert r.status_code == 409 and "username" in _errors(r.text) and "is taken" in r.text
    assert entry_count(web.ledger) == before
    # a grant: not to oneself, and not by the grantee as approver
    avery, nora = _sid(web, "avery"), _sid(web, "nora")
    _html, keys = _member_form(web, avery)
    r = web.client.post(UI + f"staff/{avery}", data={**keys, "action": "grant", "grant_role": "nurse",
                                                    **_approver(web, "grant_approver")})
    assert r.status_code == 403 and "grant_form" in _errors(r.text) and "no one grants a role to themself" in r.text
    morgan = _sid(web, "morgan")
    _html, keys = _member_form(web, morgan)
    r = web.client.post(UI + f"staff/{morgan}", data={**keys, "action": "grant", "grant_role": "pharmacist",
                                                     **_approver(web, "grant_approver")})
    assert "grant_approver_username" in _errors(r.text), r.text[:2000]
    assert entry_count(web.ledger) == before
    # a manager may not grant the administrator role: beside the role
    login(web, "morgan")
    _html, keys = _member_form(web, nora)
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "grant", "grant_role": "administrator",
                                                   **_approver(web, "grant_approver", "avery")})
    assert r.status_code == 403 and "grant_role" in _errors(r.text)
    assert "only an administrator may grant or revoke the administrator role" in r.text
    assert entry_count(web.ledger) == before


def test_grant_and_revoke_a_role_with_plain_confirmations(web):
    login(web, "avery")
    nora = _sid(web, "nora")
    html, keys = _member_form(web, nora)
    assert '<option value="pharmacist"' in html
    before = entry_count(web.ledger)
    form = {**keys, "action": "grant", "grant_role": "pharmacist", **_approver(web, "grant_approver")}
    r = web.client.post(UI + f"staff/{nora}", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    granted = _last(web, "role_granted")
    assert (granted["staff_id"], granted["role"]) == (nora, "pharmacist")
    assert [(s["printed_name"], s["meaning"]) for s in granted["signatures"]] == [
        ("Avery Admin", "performed"), ("Morgan Manager", "approved")]
    said = _said(web.client.get(r.headers["location"]).text)
    assert re.search(rf"Nora Nurse now holds the role pharmacist, granted by Avery Admin {AT}, approved by "
                     rf"Morgan Manager\. Entry #{granted['seq']}\.", said), said
    # the same form again records nothing more
    r2 = web.client.post(UI + f"staff/{nora}", data={**form, **_approver(web, "grant_approver")},
                         follow_redirects=False)
    assert r2.status_code == 303 and entry_count(web.ledger) == before + 1
    # revoke: both mistakes at once, then the revocation (no approver for a nurse's role)
    html, keys = _member_form(web, nora)
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "revoke", "revoke_role": "",
                                                   "revoke_reason": ""})
    assert r.status_code == 422 and {"revoke_role", "revoke_reason"} <= _errors(r.text)
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "revoke", "revoke_role": "pharmacist",
                                                   "revoke_reason": "covering shifts ended"}, follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    revoked = _last(web, "role_revoked")
    assert (revoked["staff_id"], revoked["role"], revoked["reason"]) == (nora, "pharmacist", "covering shifts ended")
    said = _said(web.client.get(r.headers["location"]).text)
    assert re.search(rf"Nora Nurse no longer holds the role pharmacist: revoked by Avery Admin {AT}\. Reason: "
                     r"covering shifts ended\.", said), said
    assert entry_count(web.ledger) == before + 2
    # a manager's role is revoked with a second manager or administrator approving, never the
    # person losing it: the refusal beside the approver
    morgan = _sid(web, "morgan")
    _html, keys = _member_form(web, morgan)
    r = web.client.post(UI + f"staff/{morgan}", data={**keys, "action": "revoke", "revoke_role": "manager",
                                                     "revoke_reason": "test", **_approver(web, "revoke_approver")})
    assert r.status_code == 409 and "revoke_approver_username" in _errors(r.text), r.text[:2000]
    assert "may not be the person who receives the role" in r.text
    assert entry_count(web.ledger) == before + 2


def test_a_temporary_password_is_the_administrators_and_the_manager_is_refused(web):
    nora = _sid(web, "nora")
    hash_before = web.auth.store.credential(web.dea, nora)["password_hash"]
    login(web, "morgan")
    html, keys = _member_form(web, nora)
    assert 'id="password-form"' not in html  # not offered to a manager
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "password",
                                                   "temp_password": "a brand new start 42"})
    assert r.status_code == 403 and 'id="error-summary"' in r.text and "administrator" in r.text
    assert web.auth.store.credential(web.dea, nora)["password_hash"] == hash_before
    login(web, "avery")
    html, keys = _member_form(web, nora)
    assert 'id="password-form"' in html
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "password", "temp_password": ""})
    assert r.status_code == 422 and "temp_password" in _errors(r.text)
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "password", "temp_password": "nora"})
    assert r.status_code == 422 and "temp_password" in _errors(r.text)  # the password rules, beside it
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "password",
                                                   "temp_password": "a brand new start 42"})
    assert r.status_code == 200, r.text[:2000]
    assert re.search(rf"A temporary password for Nora Nurse was set by Avery Admin {AT}: they must change it",
                     _said(r.text))
    assert "a brand new start 42" not in r.text
    cred = web.auth.store.credential(web.dea, nora)
    assert cred["password_hash"] != hash_before and cred["must_change_password"]
    # the API route's alert, raised by the page too: until Nora changes it, Avery knows it
    alerts = web.client.get(web.url("/alerts"), headers=web.headers("morgan")).json()
    assert [a for a in alerts["items"] if a["rule"] == "staff_password_set"]
    # the same form again: nothing is done again
    hash_after = cred["password_hash"]
    again = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "password",
                                                       "temp_password": "another one entirely 7"})
    assert again.status_code == 200 and "already sent: nothing was done again" in again.text
    assert web.auth.store.credential(web.dea, nora)["password_hash"] == hash_after
    # a new authenticator secret (a lost phone): shown once, on the answer to the form only
    morgan = _sid(web, "morgan")
    _html, keys = _member_form(web, morgan)
    r = web.client.post(UI + f"staff/{morgan}", data={**keys, "action": "password", "enroll_totp": "yes",
                                                     "temp_password": "a brand new start 42"})
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', r.text)
    assert r.status_code == 200 and secret, r.text[:2000]
    assert secret[1] not in web.client.get(UI + f"staff/{morgan}").text
    # one's own: the Change password page
    avery = _sid(web, "avery")
    _html, keys = _member_form(web, avery)
    r = web.client.post(UI + f"staff/{avery}", data={**keys, "action": "password",
                                                    "temp_password": "a brand new start 42"})
    assert r.status_code == 403 and "temp_password" in _errors(r.text) and "Change password page" in r.text


def test_sign_out_everywhere_and_clear_the_sign_in_throttle(web):
    nora = _sid(web, "nora")
    token = web.token("nora")
    assert web.client.get(web.url("/me"), headers={"Authorization": f"Bearer {token}"}).status_code == 200
    for _ in range(5):  # Settings.lockout_after_failures
        web.login("nora", "not her password at all")
    assert web.login("nora").status_code == 429
    login(web, "avery")
    html, keys = _member_form(web, nora)
    assert "sign-in throttled until" in html and "1 open now" in html
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "sessions"})
    assert r.status_code == 200
    assert re.search(rf"Nora Nurse is signed out everywhere, by Avery Admin {AT}: 1 open session ended\.", _said(r.text))
    assert web.client.get(web.url("/me"), headers={"Authorization": f"Bearer {token}"}).status_code == 401
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "throttle"})
    assert r.status_code == 200
    assert re.search(rf"The sign-in throttle of Nora Nurse is cleared, by Avery Admin {AT}: 5 failed sign-ins "
                     "forgotten", _said(r.text)), _said(r.text)
    assert web.login("nora").status_code == 201
    # nothing left to clear; and no one clears their own (beside that form's button)
    html, keys = _member_form(web, nora)
    r = web.client.post(UI + f"staff/{nora}", data={**keys, "action": "throttle"})
    assert "had no failed sign-ins to clear" in _said(r.text)
    avery = _sid(web, "avery")
    _html, keys = _member_form(web, avery)
    r = web.client.post(UI + f"staff/{avery}", data={**keys, "action": "throttle"})
    assert r.status_code == 403 and "throttle_form" in _errors(r.text) and "a second person clears" in r.text


def test_revoke_a_signing_credential(web):
    # Avery makes the root key, Morgan a key Avery approves (the "My signing key" page)
    login(web, "avery")
    page = web.client.get(UI + "me/signing-key")
    r = web.client.post(UI + "me/signing-key", data={"csrf_token": csrf_of(page.text), "password": PASSWORD,
                                                     "form_key": "web-root"}, follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    login(web, "morgan")
    page = web.client.get(UI + "me/signing-key")
    r = web.client.post(UI + "me/signing-key", data={"csrf_token": csrf_of(page.text), "password": PASSWORD,
                                                     "form_key": "web-morgan", **_approver(web, "approver", "avery")},
                        follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    morgan = _sid(web, "morgan")
    login(web, "avery")
    html, keys = _member_form(web, morgan)
    cid = re.search(r'name="credential_id" value="([^"]+)"', html)[1]
    before = entry_count(web.ledger)
    r = web.client.post(UI + f"staff/{morgan}", data={**keys, "action": "credential", "credential_id": "",
                                                     "credential_reason": ""})
    assert r.status_code == 422 and {"credential_id", "credential_reason"} <= _errors(r.text)
    form = {**keys, "action": "credential", "credential_id": cid, "credential_reason": "security key lost"}
    r = web.client.post(UI + f"staff/{morgan}", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    e = _last(web, "staff_credential_revoked")
    assert (e["staff_id"], e["credential_id"], e["reason"]) == (morgan, cid, "security key lost")
    assert [s["printed_name"] for s in e["signatures"]] == ["Avery Admin"]
    said = _said(web.client.get(r.headers["location"]).text)
    assert re.search(rf"The password key …\w{{8}} of Morgan Manager is revoked, by Avery Admin {AT}\. Reason: "
                     rf"security key lost\. It signs nothing recorded after this entry\. Entry #{e['seq']}\.", said), said
    assert web.client.post(UI + f"staff/{morgan}", data=form, follow_redirects=False).status_code == 303
    assert entry_count(web.ledger) == before + 1  # sent twice, recorded once
    _html, keys = _member_form(web, morgan)  # a new form: the service refuses it, nothing recorded
    r = web.client.post(UI + f"staff/{morgan}", data={**keys, "action": "credential", "credential_id": cid,
                                                     "credential_reason": "again"})
    assert r.status_code == 409 and "already revoked" in r.text
    assert entry_count(web.ledger) == before + 1


def test_the_pages_are_for_managers_and_administrators(web):
    nora = _sid(web, "nora")
    for user in ("nora", "casey", "ari"):
        login(web, user)
        assert web.client.get(UI + "staff").status_code == 403
        assert web.client.get(UI + f"staff/{nora}").status_code == 403
    login(web, "morgan")
    assert web.client.get(UI + "staff/S999999").status_code == 404
    tasks = web.client.get(UI + "tasks").text
    assert f'href="/ui/{web.dea}/staff"' in tasks


def test_signing_oneself_out_everywhere_ends_this_session_too(web):
    login(web, "avery")
    avery = _sid(web, "avery")
    _html, keys = _member_form(web, avery)
    r = web.client.post(UI + f"staff/{avery}", data={**keys, "action": "sessions"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == UI + "login?m=ended"
    after = web.client.get(UI + "staff", follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"].startswith(UI + "login")
