"""The pages over FastAPI's TestClient (no browser): sessions, CSRF, roles, receiving with
scans, reports and status. The browser tests (test_browser.py) drive the same pages end to end."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pyotp
import pytest

from api.web.settings import WebSettings
from tests.api.conftest import PASSWORD, build_api
from tests.conftest import BACKENDS, DEA, KETAMINE_50

UI = f"/ui/{DEA}/"
pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def gtin_for(ndc10: str) -> str:
    base = "003" + ndc10
    s = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(base)))
    return base + str((10 - s % 10) % 10)


def scan(ndc10: str, lot: str, expiry_yymmdd: str, serial: str) -> str:
    return f"01{gtin_for(ndc10)}17{expiry_yymmdd}10{lot}|21{serial}"


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(web, username: str, password: str = PASSWORD):
    c = web.client
    page = c.get(UI + "login")
    assert page.status_code == 200
    data = {"csrf_token": csrf_of(page.text), "username": username, "password": password}
    code = web.totp(username)
    if code:
        data["totp"] = code
    r = c.post(UI + "login", data=data, follow_redirects=False)
    return r


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_it(web):
    r = login(web, "nora")
    assert r.status_code == 303 and r.headers["location"] == UI
    cookie = r.headers["set-cookie"]
    assert "csl_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert f"Path={UI}" in cookie
    home = web.client.get(UI)
    assert home.status_code == 200 and "Nora Nurse" in home.text
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    out = web.client.post(UI + "logout", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False)
    assert out.status_code == 303
    web.client.cookies.clear()
    assert web.client.get(UI, follow_redirects=False).headers["location"].startswith(UI + "login")


def test_wrong_password_is_shown_next_to_the_field_and_username_kept(web):
    r = login(web, "nora", "not the password at all")
    assert r.status_code == 401
    assert 'id="f-password-error"' in r.text and 'value="nora"' in r.text


def test_manager_needs_totp(web):
    page = web.client.get(UI + "login")
    r = web.client.post(UI + "login", data={"csrf_token": csrf_of(page.text), "username": "morgan",
                                            "password": PASSWORD})
    assert r.status_code == 401 and 'id="f-totp-error"' in r.text and "TOTP" in r.text
    assert login(web, "morgan").status_code == 303


def test_login_without_csrf_token_is_refused(web):
    web.client.get(UI + "login")
    r = web.client.post(UI + "login", data={"username": "nora", "password": PASSWORD})
    assert r.status_code == 403 and "security token" in r.text


def test_forms_without_or_with_a_wrong_csrf_token_are_refused(web):
    login(web, "nora")
    base = {"action": "record", "supplier_id": web.clinic.supplier_id, "invoice_number": "X-1",
            "occurred_at": "2026-01-01T10:00", "line_count": "1"}
    r = web.client.post(UI + "receipts/new", data=base)
    assert r.status_code == 403 and "security token" in r.text
    r = web.client.post(UI + "receipts/new", data={**base, "csrf_token": "0" * 64})
    assert r.status_code == 403
    home = web.client.get(UI)
    r = web.client.post(UI + "receipts/new", data={**base, "csrf_token": csrf_of(home.text)},
                        headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.text


def test_roles_decide_which_pages_open(web):
    login(web, "ari")  # auditor
    home = web.client.get(UI)
    assert "Receive stock" not in home.text and "Reports" in home.text
    r = web.client.get(UI + "receipts/new")
    assert r.status_code == 403 and "needs one of the roles" in r.text


def test_receive_with_scans_then_the_entry_shows_its_sequence_number(web):
    login(web, "nora")
    page = web.client.get(UI + "receipts/new")
    token = csrf_of(page.text)
    form_key = re.search(r'name="form_key" value="([^"]+)"', page.text).group(1)
    ndc10 = "6745700110"  # the 10-digit (5-3-2) NDC of 67457-0001-10, as a GTIN carries it
    data = {"csrf_token": token, "form_key": form_key, "line_count": "1", "supplier_id": web.clinic.supplier_id,
            "invoice_number": "GMS-77", "occurred_at": "", "notes": ""}
    lines = {}
    for serial in ("A1", "A2"):
        r = web.client.post(UI + "receipts/new", data={**data, **lines, "action": "scan",
                                                        "scan": scan(ndc10, "KA99", "280630", serial)})
        assert r.status_code == 200, r.text
        lines = {k: v for k, v in re.findall(r'name="(lines-\d+-\w+)"[^>]*value="([^"]*)"', r.text)}
        lines["lines-0-ndc"] = KETAMINE_50
    assert lines["lines-0-containers"] == "2" and lines["lines-0-lot"] == "KA99"
    assert lines["lines-0-expiry"] == "2028-06-30" and lines["lines-0-serials"] == "A1 A2"
    # a carton scanned twice is refused, and nothing typed is lost
    r = web.client.post(UI + "receipts/new", data={**data, **lines, "action": "scan",
                                                    "scan": scan(ndc10, "KA99", "280630", "A2")})
    assert r.status_code == 422 and "already scanned" in r.text and 'value="GMS-77"' in r.text
    # no time given: the error is next to the field, the rest is kept
    r = web.client.post(UI + "receipts/new", data={**data, **lines, "action": "record"})
    assert r.status_code == 422 and 'id="f-occurred_at-error"' in r.text and 'value="KA99"' in r.text
    from zoneinfo import ZoneInfo

    data["occurred_at"] = web.clock().astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")
    r = web.client.post(UI + "receipts/new", data={**data, **lines, "action": "record"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    entry = web.client.get(r.headers["location"])
    assert entry.status_code == 200 and "Recorded as entry" in entry.text and "stock received" in entry.text
    seq = int(re.search(r"Recorded as entry <strong>#(\d+)", entry.text).group(1))
    # sending the same form again records nothing more
    again = web.client.post(UI + "receipts/new", data={**data, **lines, "action": "record"}, follow_redirects=False)
    assert again.headers["location"].endswith(f"entries/{seq}?saved=1")
    # a service error (duplicate invoice on a new form) comes back next to its field
    data["form_key"] = "another-form"
    dup = web.client.post(UI + "receipts/new", data={**data, **lines, "action": "record"})
    assert dup.status_code == 409 and 'id="f-invoice_number-error"' in dup.text


def test_reports_download_and_errors(web, monkeypatch, tmp_path):
    login(web, "casey")
    # Without a report key the page says reports are not signed, and who fixes it how.
    bare = web.client.get(UI + "reports")
    assert "Reports are not signed yet" in bare.text and "csledger keys report-key" in bare.text
    from tests.reports.report_keys import certify

    certify(web.ledger, web.clinic.admin, tmp_path / "keys")
    page = web.client.get(UI + "reports")
    assert page.status_code == 200 and "receiving" in page.text
    assert "Reports are not signed yet" not in page.text
    r = web.client.post(UI + "reports", data={"csrf_token": csrf_of(page.text), "kind": "receiving",
                                               "start": "2026-02-01", "end": "2026-01-01", "paper": "letter"})
    assert r.status_code in (404, 409, 422) and 'class="error' in r.text


def test_status_page_and_verify_now(web):
    login(web, "nora")
    page = web.client.get(UI + "status")
    assert page.status_code == 200 and "entries" in page.text
    r = web.client.post(UI + "status", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 200 and "Verified:" in r.text


def test_idle_session_goes_back_to_login(web):
    login(web, "nora")
    web.clock.advance(minutes=web.auth.settings.session_idle_minutes + 1)
    r = web.client.get(UI, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == UI + "login?m=expired"


def test_totp_helper_is_real(web):
    assert pyotp.TOTP(web.totp_secrets[(DEA, "morgan")]).now()


def raise_test_alert(ledger, subject: str, evidence: int = 3) -> str:
    from ledger.domain.alerts import Candidate
    from ledger.services import alerts as alert_service

    ids = alert_service.raise_alerts(ledger, DEA, [Candidate(
        alert_key=f"web-test:{evidence}", rule="late_entry", severity="medium", subjects=(subject,),
        summary=f"entry {evidence} was recorded 30.00 h after the event", parameters={"late_entry_hours": "24"},
        evidence_seqs=(evidence,), figures={"hours_late": "30.00"})])
    return ids[0]


def test_alerts_show_evidence_and_a_manager_resolves(web):
    alert_id = raise_test_alert(web.ledger, web.clinic.nurse.staff_id)
    login(web, "nora")
    assert web.client.get(UI + "alerts").status_code == 403  # a nurse does not close alerts
    web.client.cookies.clear()
    login(web, "morgan")
    page = web.client.get(UI + "alerts")
    assert page.status_code == 200 and alert_id in page.text and "Entry #3" in page.text
    assert "Nora Nurse" in page.text and "hours late" in page.text
    token = csrf_of(page.text)
    # too short an explanation: the service's error is shown next to the field, the text kept
    r = web.client.post(UI + "alerts", data={"csrf_token": token, "alert_id": alert_id, "action": "resolve",
                                              "category": "documentation_error", "explanation": "typo"})
    assert r.status_code == 422 and f'id="f-{alert_id}-explanation-error"' in r.text and ">typo</textarea>" in r.text
    r = web.client.post(UI + "alerts", data={"csrf_token": token, "alert_id": alert_id, "action": "resolve",
                                              "category": "documentation_error",
                                              "explanation": "Entry typed late after a network outage; checked."},
                        follow_redirects=False)
    assert r.status_code == 303
    done = web.client.get(r.headers["location"])
    assert "recorded as closed" in done.text and alert_id not in done.text.split("recorded as closed")[1]
    assert "Resolved in entry" in web.client.get(UI + "alerts?show=all").text


def test_stock_page_lists_vials_with_whether_they_can_be_used(web):
    login(web, "nora")
    r = web.client.get(UI + "stock")
    assert r.status_code == 200, r.text
    assert "Stock on hand" in r.text


def _stock_up(web):
    from datetime import UTC, datetime, timedelta

    from ledger import services
    from ledger.domain.commands import InventoryItemInput, TakeInventory

    services.take_inventory(web.ledger, web.clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", datetime.now(UTC) - timedelta(hours=1), items=(
            InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=True, containers=3),)), witness=web.clinic.nurse)


def test_blind_count_never_shows_the_book_and_a_manager_resolves_the_discrepancy(web):
    _stock_up(web)
    login(web, "nora")
    start = web.client.get(UI + "counts/new")
    r = web.client.post(UI + "counts/new", data={"csrf_token": csrf_of(start.text), "form_key": "c1"},
                        follow_redirects=False)
    assert r.status_code == 303, r.text
    session_url = r.headers["location"]
    page = web.client.get(session_url)
    assert page.status_code == 200 and "Sealed vials" in page.text
    # blind: the book's figures (3 sealed vials, 30.00 mL) appear nowhere in what the page loads
    assert "30.00" not in page.text and "expected" not in page.text.lower()
    form = {"csrf_token": csrf_of(page.text), "form_key": "count-1", "line_count": "2",
            "lines-0-ndc": KETAMINE_50, "lines-0-sealed_containers": "2", "lines-0-open_containers": "0",
            "lines-0-open_ml": "", "lines-1-ndc": "52584-0037-10", "lines-1-sealed_containers": "0",
            "lines-1-open_containers": "0", "lines-1-open_ml": "",
            "occurred_at": web.clock().astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago"))
            .strftime("%Y-%m-%dT%H:%M"), "counter2_username": "nora", "counter2_password": PASSWORD}
    # the second counter must be another person: the error is next to their username, the counts kept
    r = web.client.post(session_url, data=form)
    assert r.status_code == 422 and 'id="f-counter2_username-error"' in r.text
    assert 'name="lines-0-sealed_containers" type="text" value="2"' in r.text
    r = web.client.post(session_url, data={**form, "counter2_username": "ned"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    entry = web.client.get(r.headers["location"])
    assert "Recorded as entry" in entry.text and "stock counted" in entry.text
    web.client.cookies.clear()
    login(web, "morgan")
    page = web.client.get(UI + "discrepancies")
    did = re.search(r'name="discrepancy_id" value="([^"]+)"', page.text).group(1)
    assert "-10.00 mL" in page.text
    r = web.client.post(UI + "discrepancies", data={"csrf_token": csrf_of(page.text), "discrepancy_id": did,
                                                     "category": "theft_or_loss", "explanation": "",
                                                     "form_key": "d1"})
    assert r.status_code == 422 and f'id="f-{did}-explanation-error"' in r.text
    # issue 15: a breakage is only the one recorded when it happened; a second person signs
    resolution = {"csrf_token": csrf_of(page.text), "discrepancy_id": did, "category": "breakage", "form_key": "d2",
                  "explanation": "Vial dropped during the count; glass found."}
    r = web.client.post(UI + "discrepancies", data=resolution)
    assert r.status_code == 422 and f'id="f-{did}-breakage_seq-error"' in r.text
    resolution.update(category="theft_or_loss", explanation="Vial not found after a search.")
    r = web.client.post(UI + "discrepancies", data=resolution)
    assert r.status_code == 422 and f'id="f-{did}-second_username-error"' in r.text
    r = web.client.post(UI + "discrepancies", data={**resolution, "second_username": "ned",
                                                     "second_password": PASSWORD})
    assert r.status_code == 409 and f'id="f-{did}-second_username-error"' in r.text  # Ned counted
    r = web.client.post(UI + "discrepancies", data={**resolution, "form_key": "d3", "second_username": "pia",
                                                     "second_password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert "resolved" in web.client.get(r.headers["location"]).text


def _patient(web) -> str:
    import base64
    import secrets

    from ledger import services
    from ledger.domain.commands import AddressInput, RegisterPatient
    from ledger.storage.patient_keys import PatientKeys

    keys = PatientKeys.from_base64(base64.b64encode(secrets.token_bytes(32)).decode())
    web.client.app.state.patient_keys = keys
    res = services.register_patient(web.ledger, web.clinic.nurse, RegisterPatient(
        "Jordan Example", AddressInput("1 Elm St", "Austin", "TX", "78701")), keys=keys)
    return res["patient_id"]


def test_infusion_with_its_witness_on_the_same_screen(web):
    from datetime import UTC, timedelta
    from zoneinfo import ZoneInfo

    _stock_up(web)
    pid = _patient(web)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    assert page.status_code == 200 and "Vials drawn from" in page.text
    vial_id = re.search(r'name="vials-0-id" value="([^"]+)"', page.text).group(1)
    tz = ZoneInfo("America/Chicago")
    # The end as the form reads "HH:MM" back (fold=0: the first pass of a repeated hour), the
    # start 45 minutes before it in elapsed time: wall-clock arithmetic on the spring-forward
    # morning (03:20 - 45 min = 02:35, which does not exist and reads back as 03:35) put the
    # start after the end, and the record was refused.
    end = web.clock().astimezone(tz).replace(second=0, microsecond=0, fold=0)
    start = (end.astimezone(UTC) - timedelta(minutes=45)).astimezone(tz)
    form = {"csrf_token": csrf_of(page.text), "form_key": "inf-1", "patient_id": pid,
            "prescriber_dea_number": "AB1234563", "weight_kg": "72.50", "ordered_mg_per_kg": "0.50",
            "vials-0-id": vial_id, "vials-0-use": "1", "vials-0-ml": "1.00", "ml_given": "0.73", "waste_ml": "0.27",
            "waste_method": "sink, witnessed", "started_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ended_at": end.strftime("%Y-%m-%dT%H:%M"),
            "witness_username": "ned", "witness_password": "wrong password here"}
    # patient lookup is a POST; the name shows on the page, never in the URL
    r = web.client.post(UI + "infusions/new", data={**form, "action": "lookup"})
    assert r.status_code == 200 and "Jordan Example" in r.text
    # a wrong witness password: the error is next to it, and everything typed is kept
    r = web.client.post(UI + "infusions/new", data={**form, "action": "record"})
    assert r.status_code == 422 and 'id="f-witness_password-error"' in r.text
    assert 'value="72.50"' in r.text and 'value="0.27"' in r.text and "checked" in r.text
    # the nurse cannot witness herself
    r = web.client.post(UI + "infusions/new", data={**form, "action": "record", "witness_username": "nora",
                                                     "witness_password": PASSWORD})
    assert r.status_code == 422 and 'id="f-witness_username-error"' in r.text
    # more given than drawn: the service's error is next to the field
    r = web.client.post(UI + "infusions/new", data={**form, "action": "record", "ml_given": "5.00",
                                                     "witness_password": PASSWORD})
    assert r.status_code == 422 and 'id="f-ml_given-error"' in r.text
    r = web.client.post(UI + "infusions/new", data={**form, "action": "record", "witness_password": PASSWORD,
                                                     "form_key": "inf-2"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    entry = web.client.get(r.headers["location"])
    assert "Recorded as entry" in entry.text and "dose administered" in entry.text and "36.25" in entry.text
    assert "Jordan Example" not in entry.text  # entries hold the patient id, not the name


def test_infusion_form_submits_with_hundreds_of_vials_on_hand(web):
    """The browser sends every vial row (its id and an empty mL box), not only the ticked one: a
    clinic holding 300 usable vials must still be able to record an infusion (the form parser's
    field limit once stopped it at about 190 vials with "the form could not be read")."""
    from datetime import UTC, datetime, timedelta

    from ledger import services
    from ledger.domain.commands import InventoryItemInput, TakeInventory

    services.take_inventory(web.ledger, web.clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", datetime.now(UTC) - timedelta(hours=1), items=(
            InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=True, containers=300),)), witness=web.clinic.nurse)
    pid = _patient(web)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    rows = re.findall(r'name="(vials-\d+-id)" value="([^"]+)"', page.text)
    assert len(rows) == 300
    # As the browser sends it: every input of the form, in page order, the first vial ticked.
    fields = [(name, "") for name in re.findall(r'<(?:input|select|textarea)[^>]*\bname="([^"]+)"', page.text)
              if not name.endswith("-use") and not name.startswith("vials-")]
    form = dict(fields)
    form.update({"csrf_token": csrf_of(page.text), "form_key": "inf-many", "patient_id": pid,
                 "prescriber_dea_number": "AB1234563", "weight_kg": "72.50", "ordered_mg_per_kg": "0.50",
                 "ml_given": "0.73", "waste_ml": "0.27", "waste_method": "sink, witnessed",
                 "witness_username": "ned", "witness_password": PASSWORD, "action": "record"})
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("America/Chicago")
    # The end as the form reads "HH:MM" back (fold=0), the start 45 minutes before that: in the
    # repeated hour after fall-back "01:20" (CST) reads back as 01:20 CDT, an hour earlier, and
    # a start counted from the true instant came out after the end (refused).
    end = datetime.now(UTC).astimezone(tz).replace(second=0, microsecond=0, fold=0)
    form["ended_at"] = end.strftime("%Y-%m-%dT%H:%M")
    form["started_at"] = (end.astimezone(UTC) - timedelta(minutes=45)).astimezone(tz).strftime("%Y-%m-%dT%H:%M")
    body = list(form.items())
    for i, (name, vial_id) in enumerate(rows):
        body += [(name, vial_id), (f"vials-{i}-ml", "1.00" if i == 0 else "")]
    body.append(("vials-0-use", "1"))
    assert len(body) > 600
    r = web.client.post(UI + "infusions/new", content=urlencode(body),
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code == 303, re.findall(r'<p class="error"[^>]*>([^<]+)', r.text) or r.text[:500]
    assert "dose administered" in web.client.get(r.headers["location"]).text


@pytest.mark.parametrize("now, started, ended", [
    ("2027-03-14T08:20:30+00:00", "2027-03-14T01:40", "2027-03-14T03:20"),  # 02:00 CST became 03:00 CDT
    ("2027-11-07T07:20:30+00:00", "2027-11-07T00:40", "2027-11-07T01:20"),  # the second 01:20 (CST)
    ("2027-11-07T06:20:30+00:00", "2027-11-07T00:40", "2027-11-07T01:20"),  # the first 01:20 (CDT)
])
def test_infusion_form_suggests_times_it_accepts_on_dst_changes(web, now, started, ended):
    """The suggested start is 40 minutes before the suggested end as the form reads both back,
    on the mornings the clocks change too (once 02:40, a time that does not exist, read back
    after the end)."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from api.web.core import parse_local_time
    from api.web.forms import Errors

    web.clock.offset = datetime.fromisoformat(now) - datetime.now(UTC)  # the pages' clock only
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    assert page.status_code == 200
    values = dict(re.findall(r'name="(started_at|ended_at)"[^>]*value="([^"]+)"', page.text))
    assert (values["started_at"], values["ended_at"]) == (started, ended)
    tz = ZoneInfo("America/Chicago")
    read = {k: parse_local_time(v, tz, field=k, errors=Errors()).astimezone(UTC) for k, v in values.items()}
    assert read["ended_at"] - read["started_at"] == timedelta(minutes=40)  # in UTC: same-zone subtraction is wall time


def test_destruction_needs_two_witnesses_signing_on_the_same_screen(web):
    from zoneinfo import ZoneInfo

    _stock_up(web)
    login(web, "nora")
    page = web.client.get(UI + "destructions/new")
    assert page.status_code == 200
    vial = re.search(r'name="vial_ids" value="([^"]+)"', page.text).group(1)
    now = web.clock().astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")
    form = {"csrf_token": csrf_of(page.text), "form_key": "destroy-1", "vial_ids": vial, "method": "Rx Destroyer",
            "place": "Austin clinic", "reason": "damaged vial", "occurred_at": now,
            "witness1_username": "ned", "witness1_password": PASSWORD, "witness2_username": "ned",
            "witness2_password": PASSWORD}
    r = web.client.post(UI + "destructions/new", data=form)
    assert r.status_code in (409, 422) and "different" in r.text and 'value="Rx Destroyer"' in r.text
    r = web.client.post(UI + "destructions/new", data={**form, "witness2_username": "pia", "form_key": "destroy-2"},
                        follow_redirects=False)
    assert r.status_code == 303, r.text
    entry = web.client.get(r.headers["location"])
    assert "stock destroyed" in entry.text and "Ned Nurse" in entry.text and "Pia Pharmacist" in entry.text


def test_transfer_and_loss_pages_record_through_the_services(web):
    from zoneinfo import ZoneInfo

    _stock_up(web)
    now = web.clock().astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")
    login(web, "pia")
    page = web.client.get(UI + "transfers/new")
    vial = re.search(r'name="vial_ids" value="([^"]+)"', page.text).group(1)
    form = {"csrf_token": csrf_of(page.text), "form_key": "t1", "vial_ids": vial, "receiver_dea_number": "FB7654329",
            "receiver_name": "Dr. Other", "street": "1 Main St", "city": "Austin", "state": "TX",
            "postal_code": "787", "invoice_number": "T-1", "occurred_at": now,
            "receiver_registration_expires_on": "2031-06-30", "receiver_schedules": "3N 4 5"}
    # stock leaving the registrant: a second person signs on this screen (issue 15)
    r = web.client.post(UI + "transfers/new", data=form)
    assert r.status_code == 422 and 'id="f-witness_username-error"' in r.text and 'value="Dr. Other"' in r.text
    form.update(witness_username="ned", witness_password=PASSWORD)
    r = web.client.post(UI + "transfers/new", data=form)
    assert r.status_code == 422 and 'id="f-postal_code-error"' in r.text and 'value="Dr. Other"' in r.text
    r = web.client.post(UI + "transfers/new", data={**form, "postal_code": "78701"})
    # nothing dispensed this year yet: any transfer is past 5%, refused next to the vials
    assert r.status_code == 409 and "5%" in r.text and 'id="f-vial_ids"' in r.text
    web.client.cookies.clear()
    login(web, "morgan")
    page = web.client.get(UI + "losses/new")
    vial = re.search(r'name="vial_ids" value="([^"]+)"', page.text).group(1)
    loss = {"csrf_token": csrf_of(page.text), "form_key": "l1", "vial_ids": vial, "discovered_at": now,
            "loss_type": "employee_pilferage", "police_notified": "yes", "police_department": "Austin PD",
            "losses_past_24_months": "0", "purchase_value_usd": "12.50",
            # issue 20: the rest of Form 106
            "narrative": "vial missing from the safe at opening", "corrective_measures": "safe code changed",
            "contact_name": "Morgan Manager", "contact_phone": "512-555-0142"}
    # issue 15: a vial off the book needs a second person, who signs on the same screen
    r = web.client.post(UI + "losses/new", data=loss)
    assert r.status_code == 422 and 'id="f-witness_username-error"' in r.text
    r = web.client.post(UI + "losses/new", data={**loss, "form_key": "l2", "witness_username": "pia",
                                                  "witness_password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, r.text
    entry = web.client.get(r.headers["location"])
    assert "theft or loss reported" in entry.text and "notice due at" in entry.text
