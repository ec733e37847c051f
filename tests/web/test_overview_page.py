"""Issue 21: "Nothing to look at." The overview page draws, on the server, stock per product over
time as steps, weekly use and waste share, open discrepancies by age and the deadlines coming
up; each chart is an SVG (``role="img"``, an ``aria-label``, scaling with ``width="100%"`` and a
``viewBox``) followed by a table with the same numbers. These tests read the page as a manager
does and check its figures against the stock page and the doses recorded."""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape

import pytest

from api.web.settings import WebSettings
from ledger import services
from ledger.domain.commands import (
    AddressInput,
    AdministerDose,
    CountLineInput,
    DrawInput,
    ReceivedLineInput,
    ReceiveStock,
    RegisterPatient,
    StartCount,
    SubmitCount,
)
from ledger.storage.patient_keys import PatientKeys
from tests.api.conftest import build_api
from tests.conftest import BACKENDS, DEA, KETAMINE_50
from tests.web.test_pages_http import UI, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
LATE = "recorded from the paper log after downtime"  # the entries here happened days ago


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _receive(web, containers: int = 3, ago: timedelta = timedelta(days=3)) -> list[str]:
    return services.receive_stock(web.ledger, web.clinic.nurse, ReceiveStock(
        web.clinic.supplier_id, f"GMS-{secrets.token_hex(3)}", datetime.now(UTC) - ago,
        (ReceivedLineInput(KETAMINE_50, containers, "KA1", "2029-01-31"),), late_reason=LATE))["vial_ids"]


def _dose(web, vial_id: str, given: str, at: datetime) -> None:
    keys = getattr(web.client.app.state, "patient_keys", None)
    if not isinstance(keys, PatientKeys):  # one key per registry: the first dose sets it
        keys = PatientKeys.from_base64(base64.b64encode(secrets.token_bytes(32)).decode())
        web.client.app.state.patient_keys = keys
    patient = services.register_patient(web.ledger, web.clinic.nurse, RegisterPatient(
        "Jordan Example", AddressInput("1 Elm St", "Austin", "TX", "78701")), keys=keys)["patient_id"]
    services.administer_dose(web.ledger, web.clinic.nurse, AdministerDose(
        patient_id=patient, prescriber_dea_number=DEA, weight_kg="70.00", ordered_mg_per_kg="0.50",
        draws=(DrawInput(vial_id, given),), ml_given=given, started_at=at, ended_at=at + timedelta(minutes=40), late_reason=LATE))


def _table(html: str, table_id: str) -> str:
    m = re.search(rf'<table[^>]*id="{re.escape(table_id)}".*?</table>', html, re.S)
    assert m, f"no table {table_id}"
    return m.group(0)


def _cells(html: str, cls: str) -> list[Decimal]:
    return [Decimal(v) for v in re.findall(rf'class="num {cls}">([-0-9.]+)<', html)]


def _segments_are_steps(d: str) -> list[tuple[Decimal, Decimal]]:
    """The points of an ``M x y L x y ...`` path; fails unless each segment is horizontal or vertical."""
    assert re.fullmatch(r"M [-0-9.]+ [-0-9.]+( L [-0-9.]+ [-0-9.]+)*", d), d
    nums = [Decimal(n) for n in re.findall(r"[-0-9.]+", d)]
    pts = list(zip(nums[::2], nums[1::2], strict=True))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        assert (x0 == x1) != (y0 == y1), f"segment {(x0, y0)} -> {(x1, y1)} is not a step"
    return pts


def test_the_overview_draws_stock_as_steps_and_use_as_the_doses_recorded(web):
    vials = _receive(web)
    now = datetime.now(UTC)
    _dose(web, vials[0], "3.50", now - timedelta(days=2))
    _dose(web, vials[1], "1.25", now - timedelta(hours=5))
    login(web, "morgan")
    page = web.client.get(UI + "overview")
    assert page.status_code == 200, page.text
    html = page.text
    assert f'href="/ui/{DEA}/overview" aria-current="page"' in html
    assert html.count('role="img"') == 3  # one product's steps, weekly use, discrepancy ages
    for svg in re.findall(r"<svg[^>]*>", html):
        assert 'width="100%"' in svg and 'viewBox="0 0 ' in svg and "aria-label=" in svg and "style" not in svg
    # the step chart's path: only horizontal and vertical segments
    chart = re.search(r'<div class="chart-box" id="stock-[^"]+">.*?</div>', html, re.S).group(0)
    pts = _segments_are_steps(re.search(r'<path d="([^"]+)"', chart).group(1))
    assert len(pts) >= 5  # opening, the receipt and two doses, each a step, held to now
    # its table's last balance is what the stock page says is on hand
    balances = _cells(_table(html, "stock-table-" + KETAMINE_50.replace("-", "")), "balance")
    stock = web.client.get(UI + "stock").text
    on_hand = Decimal(re.search(r'<td data-label="mL" class="num">([0-9.]+)</td>', stock).group(1))
    assert balances[-1] == on_hand == Decimal("30.00") - Decimal("4.75")
    assert balances[0] == Decimal("0.00")
    # weekly administered mL: the doses recorded, whichever weeks they fell in
    assert sum(_cells(_table(html, "use-table"), "administered")) == Decimal("4.75")
    assert "Overdue" not in html and "No deadlines in the next 45 days." in html


def test_a_discrepancy_opened_by_a_count_is_in_its_age_bucket(web, db_url):
    _receive(web, containers=2, ago=timedelta(days=12))
    clinic = web.clinic
    session = services.start_count(web.ledger, clinic.nurse, StartCount())["session_id"]
    services.submit_count(web.ledger, clinic.nurse, SubmitCount(session, (
        CountLineInput(KETAMINE_50, 1), CountLineInput("52584-0037-10", 0)),
        datetime.now(UTC) - timedelta(days=4), late_reason=LATE), second_counter=clinic.pharmacist)
    login(web, "morgan")
    html = web.client.get(UI + "overview").text
    ages = _table(html, "ages-table")
    counts = {label: int(n) for label, n in re.findall(
        r'<th scope="row" data-label="Age">([^<]+)</th><td data-label="Open" class="num count">(\d+)</td>', ages)}
    assert counts == {"0–1 day": 0, "2–7 days": 1, "8–30 days": 0, "over 30 days": 0}, ages
    label = unescape(re.search(r'<svg class="chart bars" role="img" aria-label="(Open discrepancies[^"]+)"', html).group(1))
    assert "2–7 days 1" in label
    # a count moves no stock: the book keeps what was received until the discrepancy is resolved
    assert _cells(_table(html, "stock-table-" + KETAMINE_50.replace("-", "")), "balance")[-1] == Decimal("20.00")


def test_a_nurse_may_not_open_the_overview(web):
    login(web, "nora")
    r = web.client.get(UI + "overview")
    assert r.status_code == 403 and 'role="img"' not in r.text


def test_deadlines_of_a_loss_report_are_listed_soonest_first_the_passed_one_overdue(web):
    from ledger.domain.commands import LostVialInput, ReportTheftOrLoss
    from ledger.services.alerts import attach_alert_rules

    attach_alert_rules(web.ledger)  # the report raises its theft/loss alert, with the same deadlines
    vials = _receive(web, containers=2, ago=timedelta(days=6))
    morgan = web.clinic.staff_admins[-1]
    seq = services.report_theft_or_loss(web.ledger, morgan, ReportTheftOrLoss(
        datetime.now(UTC) - timedelta(days=5), "night_break_in", True, 0, "48.00",
        lost=(LostVialInput(vials[0]),), police_department="Austin Police Department",
        narrative="Back door forced overnight; one vial taken from the safe.",
        corrective_measures="Door replaced; safe code changed.", contact_name="Morgan Manager",
        contact_phone="+1 (512) 555-0142"), witness=web.clinic.pharmacist)["entries"][0]["seq"]
    login(web, "morgan")
    table = _table(web.client.get(UI + "overview").text, "deadlines-table")
    rows = re.findall(r"<tr( class=\"overdue\")?><th scope=\"row\"[^>]*>([^<]+)(.*?)</tr>", table, re.S)
    mine = [(bool(cls), rest) for cls, _when, rest in rows if f"Theft or loss report #{seq}" in rest]
    assert [("Written notice" in rest, overdue) for overdue, rest in mine] == [(True, True), (False, False)], table
    assert "DEA Form 106" in mine[1][1] and mine[0][1].count("Overdue") == 1
    # the alert's copies of those two deadlines are not listed again (one row per deadline)
    alerts = [rest for _cls, _when, rest in rows if "Alert " in rest]
    assert not [r for r in alerts if "dea notice" in r or "form 106" in r], table
