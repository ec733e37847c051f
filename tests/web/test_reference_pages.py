"""Issue 21, set-up pages: products, suppliers, prescribers and the policy, each listed and recorded
on a page with the API's service and command, every mistake of a form shown at once beside its
field, a plain confirmation in local time with the entry linked, one entry for a double submit,
nothing recorded on a refusal."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from api.http import queries as api_queries
from api.web.routes_reference import POLICY_TERMS
from api.web.settings import WebSettings
from ledger import services
from ledger.domain.commands import SetPolicy
from ledger.domain.errors import InvalidInput
from tests.api.conftest import build_api
from tests.conftest import BACKENDS, DEA, KETAMINE_50, entry_count
from tests.web.test_pages_http import UI, csrf_of, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

NEW_PRESCRIBER = "AP2345672"
NEW_SUPPLIER = "PD2345672"


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _entry(web, seq: int) -> dict:
    return json.loads(api_queries.entry(web.ledger, DEA, seq)["canonical"])


def _staff_id(web, username: str) -> str:
    return web.auth.store.staff_by_username(DEA, username).staff_id


def _saved_seq(r) -> int:
    assert r.status_code == 303, r.text[:2000]
    return int(re.search(r"\?saved=(\d+)$", r.headers["location"]).group(1))


def _errors(html: str) -> set[str]:
    return set(re.findall(r'id="f-([\w-]+)-error"', html))


def _summary(html: str) -> str:
    """The page's error summary, for a failing assertion's message."""
    m = re.search(r'<div class="error-summary".*?</div>', html, re.S)
    return m.group(0) if m else "(no error summary)"


# --- products ---------------------------------------------------------------------------------------

PRODUCT = {"ndc": "12345-6789-01", "name": "Ketamine HCl injection 100 mg/mL", "drug_code": "7285", "schedule": "III",
           "dosage_form": "injection", "strength_mg_per_ml": "100.00", "container_ml": "5", "unit_kind": "",
           "units_per_package": "", "unit_ndc": ""}


def test_products_page_lists_and_adds_a_product_as_the_api_would(web):
    login(web, "pia")
    page = web.client.get(UI + "products")
    assert page.status_code == 200 and KETAMINE_50 in page.text and "50.00 mg/mL" in page.text
    assert "10.00 mL vial, 10 in a package" in page.text
    # a pharmacist may open only the entries they signed: the list names the others' numbers unlinked
    assert "/entries/" not in page.text.split("Products added", 1)[1].split("</table>", 1)[0]
    before = entry_count(web.ledger)
    r = web.client.post(UI + "products", data={**PRODUCT, "csrf_token": csrf_of(page.text), "form_key": "p-1"},
                        follow_redirects=False)
    seq = _saved_seq(r)
    assert entry_count(web.ledger) == before + 1
    e = _entry(web, seq)
    assert e["kind"] == "product_added"
    assert e["product"] == {"ndc": "12345-6789-01", "ndc_key": "12345678901", "name": PRODUCT["name"],
                            "drug_code": "7285", "schedule": "III", "form": "injection", "strength_mg_per_ml": "100.00",
                            "container_ml": "5.00", "unit_kind": "vial", "unit_ndc": None, "units_per_package": 1}
    assert [(s["staff_id"], s["meaning"]) for s in e["signatures"]] == [(_staff_id(web, "pia"), "performed")]
    done = web.client.get(r.headers["location"])
    assert "Product added at " in done.text and "by Pia Pharmacist: Ketamine HCl injection 100 mg/mL, NDC " \
        "12345-6789-01, 100.00 mg/mL, 5.00 mL vial" in done.text
    assert f'href="/ui/{DEA}/entries/{seq}">Entry #{seq}</a>' in done.text
    assert "is not in csledger&#39;s NDC reference" in done.text  # the service's warning, shown


def test_products_form_shows_every_mistake_at_once_and_keeps_what_was_typed(web):
    login(web, "pia")
    page = web.client.get(UI + "products")
    before = entry_count(web.ledger)
    r = web.client.post(UI + "products", data={
        **PRODUCT, "csrf_token": csrf_of(page.text), "form_key": "p-2", "ndc": "12-34", "name": "",
        "strength_mg_per_ml": "0.1e1", "container_ml": "", "units_per_package": "ten", "schedule": "II"})
    assert r.status_code == 422
    assert {"ndc", "name", "strength_mg_per_ml", "container_ml", "units_per_package", "schedule"} <= _errors(r.text)
    assert 'value="12-34"' in r.text and 'value="Ketamine' not in r.text and "6 things to fix" in r.text
    assert entry_count(web.ledger) == before
    # the service's own refusal, beside the field it names: this NDC is already added
    r = web.client.post(UI + "products", data={**PRODUCT, "csrf_token": csrf_of(page.text), "form_key": "p-3",
                                               "ndc": KETAMINE_50, "name": "Ketamine HCl injection 50 mg/mL",
                                               "strength_mg_per_ml": "50.00", "container_ml": "10.00"})
    assert r.status_code in (409, 422) and "ndc" in _errors(r.text) and entry_count(web.ledger) == before
    # the NDC reference's refusal (Ketalar 100 mg/mL is an injection) lands on the dosage form's box
    r = web.client.post(UI + "products", data={
        **PRODUCT, "csrf_token": csrf_of(page.text), "form_key": "p-4", "ndc": "42023-115-10", "name": "Ketalar",
        "dosage_form": "tablet", "strength_mg_per_ml": "100.00", "container_ml": "5.00"}, follow_redirects=False)
    assert r.status_code == 422 and _errors(r.text) == {"dosage_form"}, _summary(r.text)
    assert 'value="tablet"' in r.text
    assert entry_count(web.ledger) == before


def test_products_double_submit_records_once(web):
    login(web, "pia")
    page = web.client.get(UI + "products")
    data = {**PRODUCT, "csrf_token": csrf_of(page.text), "form_key": "p-twice"}
    before = entry_count(web.ledger)
    first = _saved_seq(web.client.post(UI + "products", data=data, follow_redirects=False))
    second = _saved_seq(web.client.post(UI + "products", data=data, follow_redirects=False))
    assert first == second and entry_count(web.ledger) == before + 1


def test_a_nurse_is_refused_the_set_up_pages_and_nothing_is_recorded(web):
    login(web, "nora")
    home = web.client.get(UI)
    before = entry_count(web.ledger)
    for path, data in (("products", PRODUCT), ("suppliers", {"action": "add"}), ("prescribers", {}),
                       ("policies", {})):
        assert web.client.get(UI + path).status_code == 403, path
        r = web.client.post(UI + path, data={**data, "csrf_token": csrf_of(home.text), "form_key": "x"})
        assert r.status_code == 403 and "needs one of the roles" in r.text, path
    assert entry_count(web.ledger) == before


# --- suppliers --------------------------------------------------------------------------------------

SUPPLIER = {"action": "add", "name": "Lone Star Pharma Distribution", "address-street": "9 Mill St",
            "address-city": "Dallas", "address-state": "TX", "address-postal_code": "75201", "dea_number": NEW_SUPPLIER,
            "registration_expires_on": "2030-01-31", "schedules": ["3", "3N", "4"], "authorized_trading_partner": "yes"}


def test_suppliers_page_adds_a_supplier_and_records_its_registration(web):
    login(web, "pia")
    page = web.client.get(UI + "suppliers")
    assert page.status_code == 200 and "Gulf Medical Supply" in page.text and "PB1234563" in page.text
    r = web.client.post(UI + "suppliers", data={**SUPPLIER, "csrf_token": csrf_of(page.text), "form_key": "s-1"},
                        follow_redirects=False)
    seq = _saved_seq(r)
    e = _entry(web, seq)
    assert e["kind"] == "supplier_added" and e["name"] == SUPPLIER["name"] and e["dea_number"] == NEW_SUPPLIER
    assert e["address"] == {"street": "9 Mill St", "city": "Dallas", "state": "TX", "postal_code": "75201"}
    assert e["registration"] == {"expires_on": "2030-01-31", "schedules": ["3", "3N", "4"]}
    assert e["authorized_trading_partner"] is True
    done = web.client.get(r.headers["location"])
    assert ("by Pia Pharmacist: Lone Star Pharma Distribution, Dallas, TX, DEA PD2345672, DEA registration to "
            "2030-01-31 for schedules III, III N, IV; authorized trading partner under DSCSA: yes.") in done.text
    assert f"Entry #{seq}</a>" in done.text
    sid = e["supplier_id"]
    # the renewal, the supplier picked from the list
    assert f'name="supplier_id" value="{sid}"' in done.text
    before = entry_count(web.ledger)
    r = web.client.post(UI + "suppliers", data={
        "action": "registration", "csrf_token": csrf_of(done.text), "form_key": "r-1", "supplier_id": sid,
        "reg-registration_expires_on": "2033-01-31", "reg-schedules": ["3N"], "reg-authorized_trading_partner": "no"},
        follow_redirects=False)
    reg = _saved_seq(r)
    assert entry_count(web.ledger) == before + 1
    e = _entry(web, reg)
    assert e["kind"] == "supplier_registration_recorded" and e["supplier_id"] == sid
    assert e["registration"] == {"expires_on": "2033-01-31", "schedules": ["3N"]} and e["authorized_trading_partner"] is False
    done = web.client.get(r.headers["location"])
    assert ("for Lone Star Pharma Distribution: DEA registration to 2033-01-31 for schedules III N; authorized trading "
            f"partner under DSCSA: no. It supersedes what entry #{seq} recorded") in done.text


def test_suppliers_forms_show_every_mistake_and_refuse_a_supplier_not_on_the_list(web):
    login(web, "morgan")
    page = web.client.get(UI + "suppliers")
    assert re.search(rf'href="/ui/{DEA}/entries/\d+">#\d+</a>', page.text)  # a manager opens any entry
    before = entry_count(web.ledger)
    r = web.client.post(UI + "suppliers", data={
        **SUPPLIER, "csrf_token": csrf_of(page.text), "form_key": "s-2", "name": " ", "dea_number": "PD2345679",
        "schedules": [], "authorized_trading_partner": "", "address-postal_code": ""})
    assert r.status_code == 422
    assert {"name", "dea_number", "schedules", "authorized_trading_partner", "address-postal_code"} <= _errors(r.text)
    assert 'value="Dallas"' in r.text and 'value="PD2345679"' in r.text
    # the service's refusal beside its field (a ZIP code that is not one)
    r = web.client.post(UI + "suppliers", data={**SUPPLIER, "csrf_token": csrf_of(page.text), "form_key": "s-3",
                                                "address-postal_code": "7520"})
    assert r.status_code == 422 and _errors(r.text) == {"address-postal_code"}
    r = web.client.post(UI + "suppliers", data={
        "action": "registration", "csrf_token": csrf_of(page.text), "form_key": "r-2", "supplier_id": "SUP999",
        "reg-registration_expires_on": "", "reg-authorized_trading_partner": "maybe"})
    assert r.status_code == 422
    assert {"supplier_id", "reg-registration_expires_on", "reg-schedules", "reg-authorized_trading_partner"} <= _errors(r.text)
    assert entry_count(web.ledger) == before


# --- prescribers ------------------------------------------------------------------------------------

PRESCRIBER = {"name": "Dr. Sam Rivera", "dea_number": NEW_PRESCRIBER, "registration_state": "TX", "schedules": ["3N", "4"],
              "expires_on": "2030-05-31", "state_license_number": "TX-Q1234", "state_license_state": "TX", "staff_id": ""}


def test_prescribers_page_registers_and_a_renewal_says_it_supersedes(web):
    login(web, "morgan")
    page = web.client.get(UI + "prescribers")
    assert page.status_code == 200 and "Dr. Alex Prescriber" in page.text and DEA in page.text
    assert "supersedes the earlier one" in page.text  # said before anyone re-registers
    r = web.client.post(UI + "prescribers", data={**PRESCRIBER, "csrf_token": csrf_of(page.text), "form_key": "pr-1"},
                        follow_redirects=False)
    seq = _saved_seq(r)
    e = _entry(web, seq)
    assert (e["kind"], e["dea_number"], e["name"], e["registration_state"], e["schedules"], e["expires_on"],
            e["state_license_number"], e["state_license_state"], e["staff_id"]) == (
        "prescriber_registered", NEW_PRESCRIBER, "Dr. Sam Rivera", "TX", ["3N", "4"], "2030-05-31", "TX-Q1234", "TX", None)
    assert [(s["staff_id"], s["meaning"]) for s in e["signatures"]] == [(_staff_id(web, "morgan"), "performed")]
    done = web.client.get(r.headers["location"])
    assert ("Prescriber registered at " in done.text and "by Morgan Manager: Dr. Sam Rivera, DEA AP2345672 (TX, "
            "schedules III N, IV), registration to 2030-05-31, TX licence TX-Q1234.") in done.text
    assert "supersedes the one recorded" not in done.text
    # renewal: picked from the list ("Record renewal"), figures kept, a new expiry typed
    renew = web.client.get(UI + f"prescribers?renew={NEW_PRESCRIBER}")
    assert 'value="Dr. Sam Rivera"' in renew.text and "already registered: saving records a renewal" in renew.text
    r = web.client.post(UI + "prescribers", data={**PRESCRIBER, "csrf_token": csrf_of(renew.text), "form_key": "pr-2",
                                                  "expires_on": "2033-05-31"}, follow_redirects=False)
    again = _saved_seq(r)
    done = web.client.get(r.headers["location"])
    assert "Prescriber renewed at " in done.text
    assert f"This registration supersedes the one recorded in entry #{seq} (to 2030-05-31)" in done.text
    rows = [p for p in api_queries.prescribers(web.ledger, DEA) if p["dea_number"] == NEW_PRESCRIBER]
    assert [(p["registered_seq"], p["expires_on"]) for p in rows] == [(again, "2033-05-31")]


def test_prescribers_form_shows_every_mistake_and_the_services_refusal_beside_its_field(web):
    login(web, "avery")
    page = web.client.get(UI + "prescribers")
    before = entry_count(web.ledger)
    r = web.client.post(UI + "prescribers", data={
        **PRESCRIBER, "csrf_token": csrf_of(page.text), "form_key": "pr-3", "name": "", "dea_number": "AP2345670",
        "schedules": [], "expires_on": "", "staff_id": "S1"})
    assert r.status_code == 422
    assert {"name", "dea_number", "schedules", "expires_on", "staff_id"} <= _errors(r.text)
    r = web.client.post(UI + "prescribers", data={**PRESCRIBER, "csrf_token": csrf_of(page.text), "form_key": "pr-4",
                                                  "registration_state": "OK"})
    assert r.status_code == 422 and _errors(r.text) == {"registration_state"} and "the clinic&#39;s state" in r.text
    r = web.client.post(UI + "prescribers", data={**PRESCRIBER, "csrf_token": csrf_of(page.text), "form_key": "pr-5",
                                                  "schedules": ["4", "5"]})
    assert r.status_code == 422 and _errors(r.text) == {"schedules"} and "3 or 3N" in r.text
    r = web.client.post(UI + "prescribers", data={**PRESCRIBER, "csrf_token": csrf_of(page.text), "form_key": "pr-6",
                                                  "schedules": ["3N", "6"]})  # a box that is not on the page
    assert r.status_code == 422 and _errors(r.text) == {"schedules"}, _summary(r.text)
    assert entry_count(web.ledger) == before


def test_prescribers_double_submit_records_once(web):
    login(web, "morgan")
    page = web.client.get(UI + "prescribers")
    data = {**PRESCRIBER, "csrf_token": csrf_of(page.text), "form_key": "pr-twice"}
    before = entry_count(web.ledger)
    assert (_saved_seq(web.client.post(UI + "prescribers", data=data, follow_redirects=False))
            == _saved_seq(web.client.post(UI + "prescribers", data=data, follow_redirects=False)))
    assert entry_count(web.ledger) == before + 1


# --- policies ---------------------------------------------------------------------------------------


def _policy_form(page_text: str) -> dict:
    """The policy form as the page fills it (the values in force), with its CSRF token and key."""
    names = re.findall(r'<input id="f-([\w-]+)" name="([\w-]+)" type="(?:text|number|time)" value="([^"]*)"', page_text)
    data = {name: value for _id, name, value in names}
    for sel in ("count_schedule", "dosage_unit"):
        block = re.search(rf'<select id="f-{sel}".*?</select>', page_text, re.S).group(0)
        data[sel] = re.search(r'<option value="([^"]+)" selected', block).group(1)
    data.update(csrf_token=csrf_of(page_text), form_key=re.search(r'name="form_key" value="([^"]+)"', page_text).group(1))
    return data


def test_policies_page_shows_meaning_and_range_and_sets_a_value_in_decimal(web):
    login(web, "morgan")
    page = web.client.get(UI + "policies")
    assert page.status_code == 200 and "csledger's defaults" in page.text
    assert "1 to 28 days (USP &lt;797&gt;" in page.text and "0 to 1.00 mL (0: counted exactly)" in page.text
    assert "must be discarded" in page.text and "raises a late-entry alert" in page.text
    form = _policy_form(page.text)
    assert form["beyond_use_days"] == "28" and form["open_count_tolerance_ml"] == "0.10"
    before = entry_count(web.ledger)
    r = web.client.post(UI + "policies", data={**form, "beyond_use_days": "21", "open_count_tolerance_ml": "0.05",
                                               "hours-mon-open": "08:00", "hours-mon-close": "18:00",
                                               "passkey_required_for": ["destruction"],
                                               "reason": "medical director memo 2026-12-01"}, follow_redirects=False)
    seq = _saved_seq(r)
    assert entry_count(web.ledger) == before + 1
    e = _entry(web, seq)
    assert (e["kind"], e["beyond_use_days"], e["late_entry_limit_hours"], e["variance_threshold_percent"],
            e["open_count_tolerance_ml"], e["count_schedule"], e["dosage_unit"], e["clinic_hours"],
            e["passkey_required_for"], e["reason"]) == (
        "policy_set", 21, 24, "1.00", "0.05", "daily_opening", "container", {"mon": ["08:00", "18:00"]},
        ["destruction"], "medical director memo 2026-12-01")
    assert Decimal(e["open_count_tolerance_ml"]) == Decimal("0.05")
    assert [(s["staff_id"], s["meaning"]) for s in e["signatures"]] == [(_staff_id(web, "morgan"), "approved")]
    done = web.client.get(r.headers["location"])
    assert "Policy set at " in done.text and "by Morgan Manager: beyond-use days for an opened vial: 28 days → 21 days" in done.text
    assert "opened vial count tolerance (mL per vial): 0.10 mL → 0.05 mL" in done.text
    assert "clinic hours: not set → Monday 08:00-18:00" in done.text
    assert "Reason: medical director memo 2026-12-01." in done.text and f"Entry #{seq}</a>" in done.text
    assert "late entry" not in done.text.split("Policy set at", 1)[1].split("</p>", 1)[0]  # only what changed
    assert _policy_form(done.text)["beyond_use_days"] == "21"  # the form starts from the new values


def test_policies_form_shows_every_mistake_at_once_and_records_nothing(web):
    login(web, "avery")
    page = web.client.get(UI + "policies")
    form = _policy_form(page.text)
    before = entry_count(web.ledger)
    r = web.client.post(UI + "policies", data={**form, "beyond_use_days": "29", "late_entry_limit_hours": "1.5",
                                               "variance_threshold_percent": "abc", "open_count_tolerance_ml": "1.5",
                                               "hours-tue-open": "09:00", "count_schedule": "hourly", "reason": ""})
    assert r.status_code == 422
    assert {"beyond_use_days", "late_entry_limit_hours", "variance_threshold_percent", "open_count_tolerance_ml",
            "hours-tue-close", "count_schedule", "reason"} <= _errors(r.text)
    assert 'value="29"' in r.text and 'value="1.5"' in r.text
    # closing before opening: the service's refusal beside that day
    r = web.client.post(UI + "policies", data={**form, "hours-wed-open": "18:00", "hours-wed-close": "08:00",
                                               "reason": "new hours"})
    assert r.status_code == 422 and _errors(r.text) == {"hours-wed-open"} and "closing time must be after" in r.text
    r = web.client.post(UI + "policies", data={**form, "hours-thu-open": "9 am", "hours-fri-close": "17:00",
                                               "reason": "new hours"})
    assert r.status_code == 422 and _errors(r.text) == {"hours-thu-open", "hours-fri-open"}, _summary(r.text)
    assert entry_count(web.ledger) == before


def test_policies_double_submit_records_once_and_a_pharmacist_is_refused(web):
    login(web, "morgan")
    page = web.client.get(UI + "policies")
    data = {**_policy_form(page.text), "beyond_use_days": "14", "reason": "stricter"}
    before = entry_count(web.ledger)
    assert (_saved_seq(web.client.post(UI + "policies", data=data, follow_redirects=False))
            == _saved_seq(web.client.post(UI + "policies", data=data, follow_redirects=False)))
    assert entry_count(web.ledger) == before + 1
    web.client.cookies.clear()
    login(web, "pia")
    assert web.client.get(UI + "policies").status_code == 403
    home = web.client.get(UI)
    r = web.client.post(UI + "policies", data={**data, "csrf_token": csrf_of(home.text), "form_key": "pia-1"})
    # refused by the page's own role check (the service would refuse it as well, differently worded)
    assert r.status_code == 403 and "needs one of the roles administrator, manager" in r.text, r.text[-1500:]
    assert entry_count(web.ledger) == before + 1


def test_the_ranges_the_page_shows_are_the_services(web):
    """The page states and pre-checks each policy bound; the service decides. Each bound is
    accepted by the service and one step past it refused, naming the same field."""
    who = web.clinic.admin
    steps = {"beyond_use_days": 1, "late_entry_limit_hours": 1, "variance_threshold_percent": Decimal("0.01"),
             "open_count_tolerance_ml": Decimal("0.01")}
    for name, step in steps.items():
        t = POLICY_TERMS[name]
        as_cmd = int if isinstance(step, int) else str
        services.set_policy(web.ledger, who, SetPolicy(reason="bound", **{name: as_cmd(t["high"])}))
        services.set_policy(web.ledger, who, SetPolicy(reason="bound", **{name: as_cmd(t["low"])}))
        with pytest.raises(InvalidInput) as exc:
            services.set_policy(web.ledger, who, SetPolicy(reason="past", **{name: as_cmd(t["high"] + step)}))
        assert exc.value.field == name
