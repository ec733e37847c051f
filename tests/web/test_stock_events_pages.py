"""Issue 21, stock events on pages: a waste recorded after its infusion, a breakage or spill, a
return to the supplier, quarantine and release, and opening a sealed package. Each records the
entry its API route records (same service, same command), says what it recorded in plain words
with the entry's number, shows every mistake of a form at once beside its field, records nothing
on a refusal, and records a form sent twice once; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from api.http import queries as api_queries
from api.web.settings import WebSettings
from ledger import services
from ledger.domain.commands import AdministerDose, DrawInput, ReceivedLineInput, ReceiveStock
from tests.api.conftest import PASSWORD, build_api
from tests.conftest import BACKENDS, DEA, KETAMINE_50, entry_count
from tests.web.test_pages_http import UI, _patient, _stock_up, csrf_of, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _now(web) -> str:
    return web.clock().astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%dT%H:%M")


def _entry(web, seq: int) -> dict:
    return json.loads(api_queries.entry(web.ledger, DEA, seq)["canonical"])


def _saved_seq(r) -> int:
    assert r.status_code == 303, r.text
    return int(re.search(r"\?saved=(\d+)$", r.headers["location"]).group(1))


def _errors(html: str) -> set[str]:
    return set(re.findall(r'id="f-([A-Za-z0-9_-]+?)-error"', html))


def _signers(e: dict) -> dict[str, str]:
    return {s["meaning"]: s["printed_name"] for s in e["signatures"]}


def _infusion(web, drawn: str = "5.00", given: str = "3.00") -> str:
    """An infusion by Nora with no waste recorded: unreconciled, ``drawn - given`` mL to account for."""
    patient = _patient(web)
    vial = next(v["vial_id"] for v in api_queries.vials(web.ledger, DEA, state="sealed", ndc_key=None, lot=None,
                                                         cursor=None, limit=10)[0])
    at = datetime.now(UTC) - timedelta(minutes=50)
    res = services.administer_dose(web.ledger, web.clinic.nurse, AdministerDose(
        patient, _prescriber(web), "70.00", "0.50", (DrawInput(vial, drawn),), given, at,
        at + timedelta(minutes=40)))
    return res["administration_id"]


def _prescriber(web) -> str:
    return api_queries.prescribers(web.ledger, DEA)[0]["dea_number"]


# --- waste after the infusion ------------------------------------------------------------------


def test_waste_after_the_infusion_records_what_the_api_records(web):
    _stock_up(web)
    admin = _infusion(web)
    login(web, "nora")
    page = web.client.get(UI + "wastes/new")
    assert page.status_code == 200 and f'value="{admin}"' in page.text and "2.00 mL to account for" in page.text
    assert "Jordan" not in page.text  # chart numbers only: no patient name is read for the list
    base = {"csrf_token": csrf_of(page.text), "form_key": "w1", "administration_id": admin, "ml": "2.00",
            "method": "sink, witnessed", "occurred_at": _now(web)}
    before = entry_count(web.ledger)
    # several mistakes at once, each beside its field; typed values kept, the password never
    r = web.client.post(UI + "wastes/new", data={**base, "ml": "2.50", "method": "bin", "occurred_at": "",
                                                 "witness_password": PASSWORD})
    assert r.status_code == 422
    assert {"ml", "method", "occurred_at", "witness_username"} <= _errors(r.text)
    assert "only 2.00 mL of infusion" in r.text and 'value="2.50"' in r.text and PASSWORD not in r.text
    r = web.client.post(UI + "wastes/new", data={**base, "administration_id": "", "ml": "abc"})
    assert r.status_code == 422 and {"administration_id", "ml", "witness_username"} <= _errors(r.text)
    assert entry_count(web.ledger) == before
    # the witness is the person recording: refused beside the witness, nothing recorded
    r = web.client.post(UI + "wastes/new", data={**base, "witness_username": "nora", "witness_password": PASSWORD})
    assert r.status_code in (409, 422) and "witness_username" in _errors(r.text)
    assert entry_count(web.ledger) == before
    ok = {**base, "witness_username": "ned", "witness_password": PASSWORD}
    r = web.client.post(UI + "wastes/new", data=ok, follow_redirects=False)
    seq = _saved_seq(r)
    e = _entry(web, seq)
    assert e["kind"] == "dose_wasted" and e["administration_id"] == admin and e["ml"] == "2.00"
    assert e["mg"] == "100.00" and e["method"] == "sink, witnessed"
    assert _signers(e) == {"performed": "Nora Nurse", "witnessed": "Ned Nurse"}
    done = web.client.get(r.headers["location"])
    assert ("Waste recorded: 2.00 mL (100.00 mg) of Ketamine HCl injection 50 mg/mL from infusion "
            f"{admin}") in done.text and "witnessed by Ned Nurse at " in done.text
    assert "The infusion is reconciled" in done.text and f'href="/ui/{DEA}/entries/{seq}"' in done.text
    assert f'value="{admin}"' not in done.text  # reconciled: no longer offered
    # the same form sent again records once and shows the same result
    after = entry_count(web.ledger)
    r = web.client.post(UI + "wastes/new", data=ok, follow_redirects=False)
    assert _saved_seq(r) == seq and entry_count(web.ledger) == after


def test_waste_page_is_for_clinicians(web):
    _stock_up(web)
    admin = _infusion(web)
    login(web, "ari")
    assert web.client.get(UI + "wastes/new").status_code == 403
    csrf = csrf_of(web.client.get(UI + "stock").text)  # a page the auditor may open
    before = entry_count(web.ledger)
    r = web.client.post(UI + "wastes/new", data={"csrf_token": csrf, "form_key": "w9", "administration_id": admin,
                                                 "ml": "1.00", "method": "sink, witnessed", "occurred_at": _now(web),
                                                 "witness_username": "ned", "witness_password": PASSWORD})
    assert r.status_code == 403 and "needs one of the roles manager, nurse, pharmacist, prescriber" in r.text
    assert entry_count(web.ledger) == before


# --- breakage or spill ---------------------------------------------------------------------------


def _rows(html: str) -> dict[str, int]:
    return {vid: int(i) for i, vid in re.findall(r'name="lines-(\d+)-id" value="([^"]+)"', html)}


def test_breakage_and_spill(web):
    _stock_up(web)
    login(web, "nora")
    page = web.client.get(UI + "breakages/new")
    rows = _rows(page.text)
    assert len(rows) == 3
    (v1, i1), (v2, i2) = list(rows.items())[:2]
    base = {"csrf_token": csrf_of(page.text), "form_key": "b1", "what": "spill", "recoverable": "no",
            "description": "syringe knocked over at chair 3", "occurred_at": _now(web),
            f"lines-{i1}-id": v1, f"lines-{i2}-id": v2}
    before = entry_count(web.ledger)
    r = web.client.post(UI + "breakages/new", data={**base, "what": "", "description": "",
                                                    f"lines-{i1}-use": "1", f"lines-{i1}-ml": "1.2345"})
    assert r.status_code == 422
    assert {"what", "description", f"lines-{i1}-ml", "witness_username", "witness_password"} <= _errors(r.text)
    r = web.client.post(UI + "breakages/new", data=base)
    assert r.status_code == 422 and "lines" in _errors(r.text) and '>syringe knocked over at chair 3</textarea>' in r.text
    # a broken vial leaves whole: the service refuses part of one, beside that vial's mL
    r = web.client.post(UI + "breakages/new", data={**base, "what": "breakage", f"lines-{i2}-use": "1",
                                                    f"lines-{i2}-ml": "2.00", "witness_username": "pia",
                                                    "witness_password": PASSWORD})
    assert r.status_code == 409 and f"lines-{i2}-ml" in _errors(r.text) and "leaves the book whole" in r.text
    assert entry_count(web.ledger) == before
    ok = {**base, "form_key": "b2", f"lines-{i1}-use": "1", f"lines-{i1}-ml": "2.00", "witness_username": "pia",
          "witness_password": PASSWORD}
    r = web.client.post(UI + "breakages/new", data=ok, follow_redirects=False)
    seq = _saved_seq(r)
    e = _entry(web, seq)
    assert e["kind"] == "breakage_recorded" and e["what"] == "spill" and e["recoverable"] is False
    assert e["description"] == "syringe knocked over at chair 3"
    assert [(ln["vial_id"], ln["ml"], ln["whole_vial"]) for ln in e["lines"]] == [(v1, "2.00", False)]
    assert _signers(e) == {"performed": "Nora Nurse", "witnessed": "Pia Pharmacist"}
    done = web.client.get(r.headers["location"])
    assert "Spill recorded: 2.00 mL of Ketamine HCl injection 50 mg/mL, vial " in done.text
    assert "witnessed by Pia Pharmacist at " in done.text and "Not recoverable: the mL left the book." in done.text
    after = entry_count(web.ledger)
    r = web.client.post(UI + "breakages/new", data=ok, follow_redirects=False)
    assert _saved_seq(r) == seq and entry_count(web.ledger) == after


def test_a_recoverable_breakage_takes_the_whole_vial(web):
    _stock_up(web)
    login(web, "nora")
    page = web.client.get(UI + "breakages/new")
    vid, i = next(iter(_rows(page.text).items()))
    r = web.client.post(UI + "breakages/new", data={
        "csrf_token": csrf_of(page.text), "form_key": "b3", "what": "breakage", "recoverable": "yes",
        "description": "cracked vial, contents intact", "occurred_at": _now(web), f"lines-{i}-id": vid,
        f"lines-{i}-use": "1", "witness_username": "ned", "witness_password": PASSWORD}, follow_redirects=False)
    e = _entry(web, _saved_seq(r))
    assert e["recoverable"] is True and e["lines"][0]["ml"] == "10.00" and e["lines"][0]["whole_vial"] is True
    assert "set aside" in web.client.get(r.headers["location"]).text


# --- return to the supplier ----------------------------------------------------------------------


def test_return_to_the_supplier(web):
    _stock_up(web)
    login(web, "pia")
    page = web.client.get(UI + "returns/new")
    assert page.status_code == 200 and "Gulf Medical Supply" in page.text and "Form 222" in page.text
    vials = re.findall(r'name="vial_ids" value="([^"]+)"', page.text)
    base = {"csrf_token": csrf_of(page.text), "form_key": "r1", "supplier_id": web.clinic.supplier_id,
            "invoice_number": "RET-77", "occurred_at": _now(web)}
    before = entry_count(web.ledger)
    r = web.client.post(UI + "returns/new", data={**base, "supplier_id": "", "invoice_number": ""})
    assert r.status_code == 422
    assert {"supplier_id", "vial_ids", "invoice_number", "witness_username", "witness_password"} <= _errors(r.text)
    assert entry_count(web.ledger) == before
    ok = {**base, "vial_ids": vials[:2], "witness_username": "ned", "witness_password": PASSWORD}
    r = web.client.post(UI + "returns/new", data=ok, follow_redirects=False)
    seq = _saved_seq(r)
    e = _entry(web, seq)
    assert e["kind"] == "stock_returned" and e["recipient_type"] == "supplier"
    assert e["recipient_name"] == "Gulf Medical Supply" and e["recipient_dea_number"] == "PB1234563"
    assert e["invoice_number"] == "RET-77" and e["supplier_id"] == web.clinic.supplier_id
    assert sorted(v["vial_id"] for v in e["vials"]) == sorted(vials[:2])
    assert _signers(e) == {"performed": "Pia Pharmacist", "witnessed": "Ned Nurse"}
    done = web.client.get(r.headers["location"])
    assert ("Return recorded: 2 vials (20.00 mL of Ketamine HCl injection 50 mg/mL) to Gulf Medical Supply "
            "(DEA PB1234563) on invoice RET-77, checked by Ned Nurse at ") in done.text
    after = entry_count(web.ledger)
    r = web.client.post(UI + "returns/new", data=ok, follow_redirects=False)
    assert _saved_seq(r) == seq and entry_count(web.ledger) == after
    # a vial no longer on hand: the service's refusal beside the vials
    r = web.client.post(UI + "returns/new", data={**ok, "form_key": "r2"})
    assert r.status_code == 409 and "vial_ids" in _errors(r.text) and entry_count(web.ledger) == after


def test_returns_are_for_pharmacists_and_managers(web):
    _stock_up(web)
    login(web, "nora")
    assert web.client.get(UI + "returns/new").status_code == 403


# --- quarantine and release --------------------------------------------------------------------


def test_quarantine_then_release(web):
    _stock_up(web)
    login(web, "nora")
    page = web.client.get(UI + "quarantines")
    assert page.status_code == 200 and 'action="/ui/' + DEA + '/quarantines/release"' not in page.text
    vial = re.search(r'name="vial_ids" value="([^"]+)"', page.text).group(1)
    before = entry_count(web.ledger)
    r = web.client.post(UI + "quarantines", data={"csrf_token": csrf_of(page.text), "form_key": "q1", "reason": ""})
    assert r.status_code == 422 and {"vial_ids", "reason"} <= _errors(r.text)
    q = {"csrf_token": csrf_of(page.text), "form_key": "q1", "vial_ids": vial, "reason": "recall notice R-14"}
    r = web.client.post(UI + "quarantines", data=q, follow_redirects=False)
    seq = _saved_seq(r)
    e = _entry(web, seq)
    assert e["kind"] == "stock_quarantined" and e["vial_ids"] == [vial] and e["reason"] == "recall notice R-14"
    assert "Quarantined: 1 vial (" in web.client.get(r.headers["location"]).text
    r = web.client.post(UI + "quarantines", data=q, follow_redirects=False)
    assert _saved_seq(r) == seq and entry_count(web.ledger) == before + 1
    # a nurse may not release (the API's roles): refused, nothing recorded
    r = web.client.post(UI + "quarantines/release", data={"csrf_token": csrf_of(page.text), "release_key": "x1",
                                                          "release_vial_ids": vial, "release_reason": "ok"})
    assert r.status_code == 403 and "needs one of the roles manager, pharmacist" in r.text
    assert entry_count(web.ledger) == before + 1
    web.client.cookies.clear()
    login(web, "pia")
    page = web.client.get(UI + "quarantines")
    assert f'name="release_vial_ids" value="{vial}"' in page.text
    rel = {"csrf_token": csrf_of(page.text), "release_key": "rel-1", "release_vial_ids": vial, "release_reason": ""}
    r = web.client.post(UI + "quarantines/release", data=rel)
    assert r.status_code == 422 and "release_reason" in _errors(r.text)
    r = web.client.post(UI + "quarantines/release", data={**rel, "release_reason": "lot not in the recall"},
                        follow_redirects=False)
    e = _entry(web, _saved_seq(r))
    assert e["kind"] == "quarantine_released" and e["vial_ids"] == [vial]
    assert "Released from quarantine: 1 vial" in web.client.get(r.headers["location"]).text
    # not in quarantine any more: the service's refusal beside the release list
    r = web.client.post(UI + "quarantines/release", data={**rel, "release_key": "rel-2", "release_reason": "again"})
    assert r.status_code == 409 and "release_vial_ids" in _errors(r.text)


# --- opening a sealed package --------------------------------------------------------------------


def _carton(web) -> str:
    res = services.receive_stock(web.ledger, web.clinic.nurse, ReceiveStock(
        web.clinic.supplier_id, "INV-CARTON-1", datetime.now(UTC) - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, None, "KA2611", "2028-06-30", packages=1),)))
    return res["package_ids"][0]


def test_open_a_package_short_opens_a_discrepancy(web):
    pkg = _carton(web)
    login(web, "nora")
    page = web.client.get(UI + "packages")
    assert page.status_code == 200 and f'value="{pkg}"' in page.text and "10 vials" in page.text
    base = {"csrf_token": csrf_of(page.text), "form_key": "p1", "package_id": pkg, "units_found": "8",
            "occurred_at": _now(web)}
    before = entry_count(web.ledger)
    r = web.client.post(UI + "packages", data={**base, "package_id": "", "units_found": "eight"})
    assert r.status_code == 422 and {"package_id", "units_found", "witness_username"} <= _errors(r.text)
    r = web.client.post(UI + "packages", data={**base, "units_found": "11", "witness_username": "ned"})
    assert r.status_code == 422 and "units_found" in _errors(r.text) and "holding 10 units" in r.text
    assert entry_count(web.ledger) == before
    ok = {**base, "witness_username": "ned", "witness_password": PASSWORD}
    r = web.client.post(UI + "packages", data=ok, follow_redirects=False)
    seq = _saved_seq(r)
    e = _entry(web, seq)
    assert e["kind"] == "package_opened" and e["package_id"] == pkg
    assert len(e["units_found"]) == 8 and len(e["units_missing"]) == 2 and e["discrepancy_id"]
    assert _signers(e) == {"performed": "Nora Nurse", "witnessed": "Ned Nurse"}
    done = web.client.get(r.headers["location"])
    assert "opened: 8 of 10 units found, witnessed by Ned Nurse at " in done.text
    assert f"discrepancy {e['discrepancy_id']} is open" in done.text
    assert f'value="{pkg}"' not in done.text  # opened: no longer offered
    after = entry_count(web.ledger)
    r = web.client.post(UI + "packages", data=ok, follow_redirects=False)
    assert _saved_seq(r) == seq and entry_count(web.ledger) == after


def test_packages_page_is_not_for_prescribers(web):
    pkg = _carton(web)
    login(web, "dana")
    assert web.client.get(UI + "packages").status_code == 403
    before = entry_count(web.ledger)
    csrf = csrf_of(web.client.get(UI + "stock").text)
    r = web.client.post(UI + "packages", data={"csrf_token": csrf, "form_key": "p9", "package_id": pkg,
                                               "units_found": "10", "occurred_at": _now(web),
                                               "witness_username": "ned", "witness_password": PASSWORD})
    assert r.status_code == 403 and "needs one of the roles manager, nurse, pharmacist" in r.text
    assert entry_count(web.ledger) == before


def test_a_sealed_carton_is_picked_once_and_moves_whole(web):
    """Quarantine and returns list a carton still sealed once (its units move only together):
    ticking it names every unit of it, as the API's command must."""
    pkg = _carton(web)
    login(web, "pia")
    page = web.client.get(UI + "quarantines")
    assert page.text.count(f'value="carton:{pkg}"') == 1 and f'value="{pkg}:01"' not in page.text
    assert f"sealed carton {pkg}" in page.text and "10 units of Ketamine" in page.text
    r = web.client.post(UI + "quarantines", data={"csrf_token": csrf_of(page.text), "form_key": "qc",
                                                  "vial_ids": f"carton:{pkg}", "reason": "seal torn"},
                        follow_redirects=False)
    e = _entry(web, _saved_seq(r))
    assert e["vial_ids"] == [f"{pkg}:{k:02d}" for k in range(1, 11)]
    page = web.client.get(r.headers["location"])
    assert page.text.count(f'name="release_vial_ids" value="carton:{pkg}"') == 1
    returns = web.client.get(UI + "returns/new")
    assert returns.text.count(f'value="carton:{pkg}"') == 1
