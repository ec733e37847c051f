"""Issue 20 on the pages: the loss page takes the rest of Form 106 (narrative, corrective
measures, the explanation of "other", the contact) and does not offer a loss in transit; the
follow-up page records the notice sent to DEA and the Form 106 filed for an open report, each with
a plain confirmation; a receipt short of its invoice says whose loss in transit it is."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from api.web.settings import WebSettings
from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from tests.api.conftest import PASSWORD, build_api
from tests.conftest import BACKENDS, KETAMINE_50
from tests.web.test_pages_http import UI, _stock_up, csrf_of, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _now(web) -> str:
    return web.clock().astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")


def _report(web) -> int:
    """A theft reported on the loss page by the manager, the pharmacist second; its entry seq."""
    page = web.client.get(UI + "losses/new")
    vial = re.search(r'name="vial_ids" value="([^"]+)"', page.text).group(1)
    r = web.client.post(UI + "losses/new", data={
        "csrf_token": csrf_of(page.text), "form_key": "loss-1", "vial_ids": vial, "discovered_at": _now(web),
        "loss_type": "night_break_in", "police_notified": "no", "losses_past_24_months": "0",
        "purchase_value_usd": "12.50", "narrative": "safe found open at 07:30, one vial gone",
        "corrective_measures": "safe code changed, alarm contact added", "contact_name": "Morgan Manager",
        "contact_phone": "(512) 555-0142", "witness_username": "pia", "witness_password": PASSWORD},
        follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(re.search(r"/entries/(\d+)", r.headers["location"]).group(1))


def test_loss_page_takes_the_whole_form(web):
    _stock_up(web)
    login(web, "morgan")
    page = web.client.get(UI + "losses/new")
    for name in ("narrative", "corrective_measures", "other_explanation", "contact_name", "contact_phone"):
        assert f'name="{name}"' in page.text, name
    assert 'value="Morgan Manager"' in page.text  # the contact starts as the reporter
    assert 'value="lost_in_transit"' not in page.text and "21 CFR 1301.74(c)" in page.text
    vial = re.search(r'name="vial_ids" value="([^"]+)"', page.text).group(1)
    form = {"csrf_token": csrf_of(page.text), "form_key": "l1", "vial_ids": vial, "discovered_at": _now(web),
            "loss_type": "other", "police_notified": "no", "losses_past_24_months": "0", "purchase_value_usd": "1.00",
            "narrative": "vial not found at opening", "corrective_measures": "two-person safe access",
            "contact_name": "Morgan Manager", "contact_phone": "512-555-0142"}
    r = web.client.post(UI + "losses/new", data=form)
    assert r.status_code == 422 and 'id="f-other_explanation-error"' in r.text
    r = web.client.post(UI + "losses/new", data={**form, "loss_type": "night_break_in", "narrative": ""})
    assert r.status_code == 422 and 'id="f-narrative-error"' in r.text
    r = web.client.post(UI + "losses/new", data={**form, "loss_type": "night_break_in", "contact_phone": "call me"})
    assert r.status_code == 422 and 'id="f-contact_phone-error"' in r.text
    r = web.client.post(UI + "losses/new", data={**form, "loss_type": "lost_in_transit"})
    assert r.status_code == 422 and "1301.74(c)" in r.text


def test_follow_up_page_records_notice_and_filing_with_a_plain_confirmation(web):
    _stock_up(web)
    login(web, "morgan")
    seq = _report(web)
    page = web.client.get(UI + "losses/follow-up")
    assert page.status_code == 200 and f"#{seq}" in page.text and "not sent, due" in page.text
    csrf = csrf_of(page.text)
    notice = {"csrf_token": csrf, "action": "notice", "notice_key": "n1", "notice_report": str(seq),
              "sent_at": _now(web), "method": "email", "recipient": "DEA Houston Division, Austin Resident Office"}
    r = web.client.post(UI + "losses/follow-up", data={**notice, "method": ""})
    assert r.status_code == 422 and 'id="f-method-error"' in r.text
    r = web.client.post(UI + "losses/follow-up", data=notice, follow_redirects=False)
    assert r.status_code == 303, r.text
    done = web.client.get(r.headers["location"])
    assert (f"the notice of theft or loss report #{seq} was sent" in done.text
            and "by e-mail to DEA Houston Division, Austin Resident Office, on time." in done.text)
    # the report is no longer offered for a notice; sent anyway, it is refused beside the choice
    assert f'<option value="{seq}"' in done.text  # still offered for the filing
    r = web.client.post(UI + "losses/follow-up", data={**notice, "notice_key": "n2"})
    assert r.status_code == 409 and "already recorded" in r.text and 'id="error-summary"' in r.text
    filing = {"csrf_token": csrf, "action": "filing", "filing_key": "f1", "filing_report": str(seq),
              "filed_at": _now(web), "confirmation_number": "106-2026-0042187"}
    r = web.client.post(UI + "losses/follow-up", data={**filing, "filed_at": ""})
    assert r.status_code == 422 and 'id="f-filed_at-error"' in r.text
    r = web.client.post(UI + "losses/follow-up", data=filing, follow_redirects=False)
    assert r.status_code == 303, r.text
    done = web.client.get(r.headers["location"])
    assert f"Form 106 for theft or loss report #{seq} was filed" in done.text
    assert "DEA confirmation 106-2026-0042187, on time." in done.text
    assert "No theft or loss report is waiting" in done.text


def test_follow_up_page_is_for_those_who_report_losses(web):
    login(web, "nora")
    assert web.client.get(UI + "losses/follow-up").status_code == 403


def test_a_receipt_short_of_its_invoice_says_whose_loss_it_is(web):
    res = services.receive_stock(web.ledger, web.clinic.nurse, ReceiveStock(
        web.clinic.supplier_id, "INV-SHORT-7", datetime.now(UTC) - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, 2, "KA2601", "2028-03-31", invoiced_containers=3),)))
    login(web, "nora")
    page = web.client.get(UI + f"entries/{res['entries'][0]['seq']}")
    assert ("1 container short on invoice INV-SHORT-7 from Gulf Medical Supply: the supplier reports a loss in "
            "transit (21 CFR 1301.74(c)); keep their notice") in page.text
