"""Issue 17 on the pages (TestClient, software authenticator): "My signing key" makes the root and
approved password keys and enrols a passkey in three form posts; a witness confirms an infusion's
waste with their passkey on the nurse's screen (two posts of the same form); "My signatures" shows
what each person signed. The browser version: test_browser_passkeys.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from api.web.settings import WebSettings
from ledger.integrity import canonical as canon
from tests.api.conftest import PASSWORD, build_api
from tests.conftest import BACKENDS, DEA, entry_count
from tests.support.soft_authenticator import SoftAuthenticator
from tests.web.test_pages_http import _patient, _stock_up, csrf_of, login

UI = f"/ui/{DEA}/"
ORIGIN = "http://localhost:8000"  # in the default Settings.webauthn_origins, fixed by the root
pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def sign_in(web, user: str) -> None:
    web.client.cookies.clear()
    r = login(web, user)
    assert r.status_code == 303, r.text[:300]


def key_form(web, **fields):
    page = web.client.get(UI + "me/signing-key")
    assert page.status_code == 200, page.text[:300]
    data = {"csrf_token": csrf_of(page.text), "form_key": "k-" + fields.get("password", "")[:3], **fields}
    return web.client.post(UI + "me/signing-key", data=data, follow_redirects=False)


def approver(web, user: str = "avery") -> dict[str, str]:
    return {"approver_username": user, "approver_password": PASSWORD, "approver_totp": web.totp(user) or ""}


def make_keys(web, *users: str) -> None:
    """Avery makes the root on the page (no approver), then each of ``users`` theirs, approved by Avery."""
    sign_in(web, "avery")
    assert 'id="root-note"' in web.client.get(UI + "me/signing-key").text
    r = key_form(web, password=PASSWORD)
    assert r.status_code == 303, r.text[:500]
    for user in users:
        sign_in(web, user)
        r = key_form(web, password=PASSWORD, **approver(web))
        assert r.status_code == 303, (user, r.text[:500])


def entries(web) -> list[dict]:
    with web.ledger.engine.connect() as c:
        return [canon.decode(bytes(b)) for b in c.execute(sa.text(
            "SELECT canonical FROM entries WHERE registrant = :r ORDER BY seq"), {"r": DEA}).scalars()]


def data_options(html: str, box_id: str) -> dict:
    m = re.search(rf'id="{box_id}"[^>]*data-options="([^"]+)"', html)
    assert m, f"no {box_id} on the page"
    return json.loads(unescape(m.group(1)))


def enrol_passkey(web, user: str, device: SoftAuthenticator) -> None:
    """The three posts of "Add a passkey", the authenticator answering between them."""
    sign_in(web, user)
    page = web.client.get(UI + "me/signing-key")
    csrf = csrf_of(page.text)
    r = web.client.post(UI + "me/passkeys", data={"csrf_token": csrf, "step": "start"})
    assert r.status_code == 200 and 'data-webauthn="create"' in r.text, r.text[:500]
    reg = device.register(data_options(r.text, "passkey-register"))
    r = web.client.post(UI + "me/passkeys", data={"csrf_token": csrf, "step": "register",
                                                  "registration": json.dumps(reg)})
    assert r.status_code == 200 and 'data-webauthn="get"' in r.text, r.text[:500]
    cid = re.search(r'name="credential_id" value="([^"]+)"', r.text).group(1)
    proof = device.assert_(data_options(r.text, "passkey-enrol"))
    # without the approver (Avery and others hold keys): refused next to the approver, and the
    # enrolment can be finished on the same page
    r = web.client.post(UI + "me/passkeys", data={"csrf_token": csrf, "step": "enrol", "credential_id": cid,
                                                  "assertion": json.dumps(proof)})
    assert r.status_code == 422 and 'id="f-approver_username-error"' in r.text, r.text[:800]
    proof = device.assert_(data_options(r.text, "passkey-enrol"))
    r = web.client.post(UI + "me/passkeys", data={"csrf_token": csrf, "step": "enrol", "credential_id": cid,
                                                  "assertion": json.dumps(proof), **approver(web)},
                        follow_redirects=False)
    assert r.status_code == 303, r.text[:800]
    shown = web.client.get(r.headers["location"]).text
    assert "Enrolled as entry" in shown and "passkey" in shown


def infusion_form(web, pid: str, **witness) -> dict[str, str]:
    page = web.client.get(UI + "infusions/new")
    vial_id = re.search(r'name="vials-0-id" value="([^"]+)"', page.text).group(1)
    tz = ZoneInfo("America/Chicago")
    end = web.clock().astimezone(tz).replace(second=0, microsecond=0, fold=0)
    start = (end.astimezone(UTC) - timedelta(minutes=45)).astimezone(tz)
    return {"csrf_token": csrf_of(page.text), "form_key": "inf-pk-1", "patient_id": pid,
            "prescriber_dea_number": "AB1234563", "weight_kg": "72.50", "ordered_mg_per_kg": "0.50",
            "vials-0-id": vial_id, "vials-0-use": "1", "vials-0-ml": "1.00", "ml_given": "0.73", "waste_ml": "0.27",
            "waste_method": "sink, witnessed", "started_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ended_at": end.strftime("%Y-%m-%dT%H:%M"), "action": "record", **witness}


def test_root_then_approved_keys_then_my_signatures(web, monkeypatch):
    sign_in(web, "avery")
    page = web.client.get(UI + "me/signing-key")
    assert 'id="root-note"' in page.text and "approver_username" not in page.text
    assert "My signatures" in page.text and "My signing key" in page.text  # in the navigation
    r = key_form(web, password="not my password at all")
    assert r.status_code == 401 and 'id="f-password-error"' in r.text
    r = key_form(web, password=PASSWORD)
    assert r.status_code == 303
    done = web.client.get(r.headers["location"]).text
    assert "root credential" in done and "password key (root)" in done
    # Nora: an approver is needed now; without one the refusal is next to the approver's username
    sign_in(web, "nora")
    page = web.client.get(UI + "me/signing-key")
    assert 'name="approver_username"' in page.text and "root-note" not in page.text
    r = key_form(web, password=PASSWORD)
    assert r.status_code == 422 and 'id="f-approver_username-error"' in r.text, r.text[:500]
    r = key_form(web, password=PASSWORD, approver_username="nora", approver_password=PASSWORD)
    assert r.status_code in (401, 403, 409, 422) and 'f-approver_username-error' in r.text  # not herself
    r = key_form(web, password=PASSWORD, **approver(web))
    assert r.status_code == 303, r.text[:500]
    # Avery's signatures: the root (performed) and Nora's key (approved), newest first
    sign_in(web, "avery")
    mine = web.client.get(UI + "me/signatures")
    assert mine.status_code == 200 and "check that what was recorded is what you confirmed" in mine.text
    rows = re.findall(r'<tr id="sig-(\d+)">', mine.text)
    assert len(rows) >= 2 and rows == sorted(rows, key=int, reverse=True)
    assert "Signing credential enrolled" in mine.text and "approved" in mine.text and "password key" in mine.text
    assert "Enrol a signing credential" in mine.text  # the statement's command, readable
    # paged: one per page here, the older ones behind a link
    from api.web import routes_me

    monkeypatch.setattr(routes_me, "PAGE_SIZE", 1)
    first = web.client.get(UI + "me/signatures").text
    assert re.findall(r'<tr id="sig-(\d+)">', first) == rows[:1]
    older = re.search(r'href="(/ui/[^"]+/me/signatures\?before=\d+)">Older signatures', first).group(1)
    assert re.findall(r'<tr id="sig-(\d+)">', web.client.get(older).text) == rows[1:2]


def test_witness_confirms_an_infusion_with_a_passkey(web):
    _stock_up(web)  # before the root: from it on, the service principals here hold no signing key
    pid = _patient(web)
    make_keys(web, "nora", "ned")
    device = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    enrol_passkey(web, "ned", device)
    sign_in(web, "nora")
    form = infusion_form(web, pid, witness_method="passkey", witness_username="ned")
    before = entry_count(web.ledger)
    # first post: nothing recorded; the page asks Ned's passkey, with everything typed kept
    r = web.client.post(UI + "infusions/new", data=form)
    assert r.status_code == 200, r.text[:800]
    assert entry_count(web.ledger) == before
    assert 'data-webauthn="get"' in r.text and "Ned Nurse" in r.text and "Record an infusion" in r.text
    assert 'value="72.50"' in r.text and "checked" in r.text
    # what Ned confirms carries the patient's id, never their name (issue 21: the form beside it
    # shows the picked patient's name to the nurse)
    prompt = r.text.split('id="witness-passkey"', 1)[1].split("</div>", 1)[0]
    assert "Jordan" not in prompt and "Record an infusion" in prompt
    token = re.search(r'name="witness_assertion" value="([^"]+)"', r.text).group(1)
    options = data_options(r.text, "witness-passkey")
    # an answer over another challenge: refused next to Ned's username, nothing recorded
    bad = device.assert_({**options, "challenge": "A" * 43})
    r2 = web.client.post(UI + "infusions/new", data={**form, "witness_assertion": token,
                                                     "witness_passkey": json.dumps(bad)})
    assert r2.status_code == 422 and 'id="f-witness_username-error"' in r2.text, r2.text[:800]
    assert entry_count(web.ledger) == before
    # again from the start: the second post carries Ned's answer, and the infusion is recorded
    r = web.client.post(UI + "infusions/new", data={**form, "form_key": "inf-pk-2"})
    token = re.search(r'name="witness_assertion" value="([^"]+)"', r.text).group(1)
    answer = device.assert_(data_options(r.text, "witness-passkey"))
    r = web.client.post(UI + "infusions/new", data={**form, "form_key": "inf-pk-2", "witness_assertion": token,
                                                    "witness_passkey": json.dumps(answer)}, follow_redirects=False)
    assert r.status_code == 303, r.text[:800]
    waste = entries(web)[-1]
    assert waste["kind"] == "dose_wasted"
    w = next(s for s in waste["signatures"] if s["meaning"] == "witnessed")
    assert w["auth_method"] == "passkey" and w["printed_name"] == "Ned Nurse"
    # Ned sees what he signed
    sign_in(web, "ned")
    mine = web.client.get(UI + "me/signatures").text
    first = mine[mine.index('<tr id="sig-'):]
    assert "Waste" in first[:2000] and "passkey" in first[:2000] and "witnessed" in first[:2000]
    assert "Jordan" not in mine


def test_passkey_choice_for_a_witness_without_one_is_refused_next_to_them(web):
    _stock_up(web)
    pid = _patient(web)
    make_keys(web, "nora", "ned")
    sign_in(web, "nora")
    form = infusion_form(web, pid, witness_method="passkey", witness_username="ned")
    r = web.client.post(UI + "infusions/new", data=form)
    assert r.status_code == 422 and 'id="f-witness_username-error"' in r.text and "no passkey" in r.text
    assert 'id="f-witness_method" name="witness_method" value="passkey" data-passkey-toggle="witness" checked' in r.text


def test_destruction_with_a_password_witness_and_a_passkey_witness(web):
    """Pia signs with her password, Ned with his passkey: the page asks Ned's key, keeping Pia's
    signature (her assertion, redeemed again by the same form key), so she does not type again."""
    _stock_up(web)
    make_keys(web, "nora", "ned", "pia")
    device = SoftAuthenticator(rp_id="localhost", origin=ORIGIN)
    enrol_passkey(web, "ned", device)
    sign_in(web, "nora")
    page = web.client.get(UI + "destructions/new")
    vial = re.search(r'name="vial_ids" value="([^"]+)"', page.text).group(1)
    now = web.clock().astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")
    form = {"csrf_token": csrf_of(page.text), "form_key": "destroy-pk", "vial_ids": vial, "method": "Rx Destroyer",
            "place": "Austin clinic", "reason": "damaged vial", "occurred_at": now,
            "witness1_username": "pia", "witness1_password": PASSWORD,
            "witness2_username": "ned", "witness2_method": "passkey"}
    before = entry_count(web.ledger)
    r = web.client.post(UI + "destructions/new", data=form)
    assert r.status_code == 200 and 'id="witness2-passkey"' in r.text, r.text[:800]
    assert entry_count(web.ledger) == before
    assert "no need to type it again" in r.text
    kept = {k: re.search(rf'name="{k}" value="([^"]+)"', r.text).group(1)
            for k in ("witness1_assertion", "witness2_assertion")}
    answer = device.assert_(data_options(r.text, "witness2-passkey"))
    again = {k: v for k, v in form.items() if k != "witness1_password"}
    r = web.client.post(UI + "destructions/new", data={**again, **kept, "witness2_passkey": json.dumps(answer)},
                        follow_redirects=False)
    assert r.status_code == 303, r.text[:800]
    destroyed = entries(web)[-1]
    by_name = {s["printed_name"]: s for s in destroyed["signatures"] if s["meaning"] == "witnessed"}
    assert by_name["Pia Pharmacist"]["auth_method"] == "password_key"
    assert by_name["Ned Nurse"]["auth_method"] == "passkey"
