"""Issue 21: the preparations page (bags and syringes: make, infuse, waste before a witness) and
the Spravato (esketamine) session page, over HTTP on SQLite and PostgreSQL.

Each form calls the API's service with the API's command: the entries recorded carry exactly what
was picked and typed; the confirmation says it in the clinic's words; several mistakes show at
once, beside their fields, typed values kept and passwords never; a refused role or a refused
form records nothing; a double submit (same form key) records once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.commands import AddProduct, ReceivedLineInput, ReceiveStock
from tests.api.conftest import PASSWORD, entry_count
from tests.conftest import BACKENDS, DEA
from tests.web.test_infusion_page21 import _errors, _patients
from tests.web.test_pages_http import UI, _stock_up, csrf_of, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
TZ = ZoneInfo("America/Chicago")
SPRAVATO_2 = "50458-0028-02"


@pytest.fixture
def web(ledger):
    from api.web.settings import WebSettings
    from tests.api.conftest import build_api

    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _local(web, minutes_ago: int = 0) -> str:
    return (web.clock() - timedelta(minutes=minutes_ago)).astimezone(TZ).strftime("%Y-%m-%dT%H:%M")


def _last(web, kind: str) -> dict:
    import sqlalchemy as sa

    with web.ledger.reading() as c:
        row = c.execute(sa.text("SELECT canonical FROM entries WHERE kind = :k ORDER BY seq DESC LIMIT 1"),
                        {"k": kind}).scalar_one()
    from ledger.integrity.canonical import decode

    return decode(bytes(row))


def _make_form(web, page_text: str, pid: str, **over) -> dict[str, str]:
    """0.70 mL of 50 mg/mL ketamine (35 mg) from the first vial into a 100 mL saline bag."""
    vial = re.search(r'name="vials-0-id" value="([^"]+)"', page_text).group(1)
    form = {"csrf_token": csrf_of(page_text), "form_key": "prep-1", "patient_id": pid, "patient_query": "",
            "prescriber_dea_number": DEA, "weight_kg": "70.00", "ordered_mg_per_kg": "0.50",
            "vials-0-id": vial, "vials-0-use": "1", "vials-0-ml": "0.70", "diluent": "0.9% sodium chloride",
            "diluent_ml": "100.00", "container": "bag", "final_ml": "100.70", "started_at": _local(web, 30),
            "late_reason": "", "action": "record"}
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def _made(web) -> tuple[str, str]:
    """A bag made on the page by Nora; (preparation id, patient id)."""
    _stock_up(web)
    ids = _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "preparations")
    r = web.client.post(UI + "preparations", data=_make_form(web, page.text, ids["Pat Alvarez"]),
                        follow_redirects=False)
    assert r.status_code == 303, _errors(r.text) or r.text[:800]
    return _last(web, "preparation_made")["preparation_id"], ids["Pat Alvarez"]


def test_a_bag_is_made_infused_and_wasted_on_the_pages(web):
    _stock_up(web)
    ids = _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "preparations")
    assert page.status_code == 200 and "No open preparation." in page.text and 'name="patient_query"' in page.text
    form = _make_form(web, page.text, ids["Pat Alvarez"])
    r = web.client.post(UI + "preparations", data=form, follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    e = _last(web, "preparation_made")
    # exactly what the API's command records from the same inputs
    assert (e["patient_id"], e["prescriber_dea_number"], e["weight_kg"], e["ordered_mg_per_kg"]) == (
        ids["Pat Alvarez"], DEA, "70.00", "0.50")
    assert [(d["vial_id"], d["ml"]) for d in e["draws"]] == [(form["vials-0-id"], "0.70")]
    assert (e["diluent"], e["diluent_ml"], e["container"], e["final_ml"], e["mg"]) == (
        "0.9% sodium chloride", "100.00", "bag", "100.70", "35.00")
    assert [(s["printed_name"], s["meaning"]) for s in e["signatures"]] == [("Nora Nurse", "performed")]
    done = web.client.get(r.headers["location"])
    prep = e["preparation_id"]
    assert f"Bag {prep} prepared for P. Alvarez: 35.00 mg of Ketamine HCl injection 50 mg/mL in 100.70 mL" in done.text
    assert f'id="print-label" href="/ui/{DEA}/containers/{prep}/label"' in done.text  # the label, linked
    assert f'href="/ui/{DEA}/entries/{e["seq"]}"' in done.text
    assert web.client.get(f"/ui/{DEA}/containers/{prep}/label").headers["content-type"] == "application/pdf"
    assert f"Bag {prep}" in done.text and "100.70 mL" in done.text  # listed as open, mL left
    assert "Pat Alvarez" not in r.headers["location"] and "Alvarez" not in r.headers["location"]

    # the infusion, as the pump reports it
    page = web.client.get(UI + f"preparations/{prep}/infusion")
    assert page.status_code == 200
    r = web.client.post(UI + f"preparations/{prep}/infusion", data={
        "csrf_token": csrf_of(page.text), "form_key": "inf-1", "ml_infused": "70.00", "started_at": _local(web, 20),
        "ended_at": _local(web, 5), "stop_reason": "patient asked to stop", "late_reason": ""},
        follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    i = _last(web, "preparation_infused")
    assert (i["preparation_id"], i["ml_infused"], i["mg_given"], i["stop_reason"]) == (
        prep, "70.00", "24.33", "patient asked to stop")
    done = web.client.get(r.headers["location"])
    assert f"Infusion from {prep}: 70.00 of 100.70 mL infused, 24.33 mg given" in done.text
    assert "10.67 mg is left in" in done.text and "unreconciled until its waste is recorded" in done.text

    # the remainder, wasted before Ned
    page = web.client.get(UI + f"preparations/{prep}/waste")
    assert page.status_code == 200 and "30.70" in page.text
    r = web.client.post(UI + f"preparations/{prep}/waste", data={
        "csrf_token": csrf_of(page.text), "form_key": "w-1",
        "method": "bag emptied into drug disposal container, witnessed", "occurred_at": _local(web, 0),
        "ml_remaining": "30.70", "reason": "", "late_reason": "", "witness_username": "ned",
        "witness_password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    w = _last(web, "preparation_wasted")
    assert (w["preparation_id"], w["mg"], w["ml_remaining"]) == (prep, "10.67", "30.70")
    assert [(s["printed_name"], s["meaning"]) for s in w["signatures"]] == [
        ("Nora Nurse", "performed"), ("Ned Nurse", "witnessed")]
    done = web.client.get(r.headers["location"])
    assert f"Waste of {prep} recorded: 10.67 mg wasted" in done.text and "witnessed by Ned Nurse" in done.text
    assert "No open preparation." in done.text


def test_every_mistake_of_the_make_form_at_once_values_kept_nothing_recorded(web):
    _stock_up(web)
    _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "preparations")
    before = entry_count(web)
    r = web.client.post(UI + "preparations", data=_make_form(
        web, page.text, "", prescriber_dea_number="", weight_kg="seventy", **{"vials-0-use": "", "vials-0-ml": ""},
        final_ml="", diluent_ml="100.00", container="jar", started_at="2026-12-01"))
    assert r.status_code == 422
    errs = _errors(r.text)
    assert {"patient_id", "prescriber_dea_number", "weight_kg", "draws", "final_ml", "container",
            "started_at"} <= set(errs), errs
    assert 'value="seventy"' in r.text and 'value="100.00"' in r.text  # typed values kept
    assert entry_count(web) == before


def test_the_service_refusal_shows_beside_its_field(web):
    """More drug and diluent than the final volume: the service's rule (review F3), beside final_ml."""
    _stock_up(web)
    ids = _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "preparations")
    before = entry_count(web)
    r = web.client.post(UI + "preparations", data=_make_form(web, page.text, ids["Pat Alvarez"], final_ml="100.00"))
    assert r.status_code == 422 and "more than the final volume" in _errors(r.text)["final_ml"]
    r = web.client.post(UI + "preparations", data=_make_form(web, page.text, ids["Pat Alvarez"],
                                                             **{"vials-0-ml": "11.00"}))
    assert r.status_code == 422 and "only 10.00 mL is left" in _errors(r.text)["vials-0-ml"]
    assert entry_count(web) == before


def test_a_double_submit_records_one_preparation(web):
    _stock_up(web)
    ids = _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "preparations")
    form = _make_form(web, page.text, ids["Pat Alvarez"])
    before = entry_count(web)
    r1 = web.client.post(UI + "preparations", data=form, follow_redirects=False)
    r2 = web.client.post(UI + "preparations", data=form, follow_redirects=False)
    assert r1.status_code == r2.status_code == 303 and r1.headers["location"] == r2.headers["location"]
    assert entry_count(web) == before + 1


def test_waste_asks_the_witness_once_after_the_rest_is_right(web):
    prep, _ = _made(web)
    page = web.client.get(UI + f"preparations/{prep}/waste")
    before = entry_count(web)
    form = {"csrf_token": csrf_of(page.text), "form_key": "w-2", "method": "", "occurred_at": _local(web),
            "ml_remaining": "", "reason": "", "late_reason": "", "witness_username": "ned",
            "witness_password": PASSWORD}
    r = web.client.post(UI + f"preparations/{prep}/waste", data=form)
    assert r.status_code == 422
    errs = _errors(r.text)
    assert {"method", "reason"} <= set(errs) and "witness_password" not in errs  # never infused: say why
    assert PASSWORD not in r.text and "password was not checked yet" in r.text and 'value="ned"' in r.text
    r = web.client.post(UI + f"preparations/{prep}/waste", data={
        **form, "method": "bag emptied into drug disposal container, witnessed", "reason": "infusion cancelled",
        "witness_password": "not the password"})
    assert r.status_code == 422 and "witness_password" in _errors(r.text)
    r = web.client.post(UI + f"preparations/{prep}/waste", data={
        **form, "method": "bag emptied into drug disposal container, witnessed", "reason": "infusion cancelled",
        "witness_username": "nora"})
    assert r.status_code in (409, 422) and "witness_username" in _errors(r.text)  # not oneself
    assert entry_count(web) == before
    r = web.client.post(UI + f"preparations/{prep}/waste", data={
        **form, "method": "bag emptied into drug disposal container, witnessed", "reason": "infusion cancelled"},
        follow_redirects=False)
    assert r.status_code == 303 and entry_count(web) == before + 1
    assert _last(web, "preparation_wasted")["mg"] == "35.00"  # never infused: all of it


def test_roles_the_api_refuses_are_refused_and_nothing_is_recorded(web):
    prep, pid = _made(web)
    login(web, "ari")  # auditor
    assert web.client.get(UI + "preparations").status_code == 403
    login(web, "morgan")  # a manager sees the list and may waste, not make nor infuse
    page = web.client.get(UI + "preparations")
    assert page.status_code == 200 and prep in page.text and 'id="preparation-form"' not in page.text
    before = entry_count(web)
    r = web.client.post(UI + "preparations", data={"csrf_token": csrf_of(page.text), "form_key": "m-1",
                                                   "patient_id": pid, "action": "record"})
    assert r.status_code == 403
    r = web.client.post(UI + f"preparations/{prep}/infusion", data={
        "csrf_token": csrf_of(page.text), "form_key": "m-2", "ml_infused": "10.00", "started_at": _local(web, 9),
        "ended_at": _local(web, 1)})
    assert r.status_code == 403 and entry_count(web) == before
    assert web.client.get(UI + f"preparations/{prep}/waste").status_code == 200
    login(web, "pia")  # a pharmacist prepares but does not infuse
    assert web.client.get(UI + f"preparations/{prep}/infusion").status_code == 403


def _devices(web, n: int) -> list[str]:
    services.add_product(web.ledger, web.clinic.admin, AddProduct(
        SPRAVATO_2, "Spravato (esketamine) nasal spray 28 mg", "7285", "III", "nasal spray", "140.00", "0.20"))
    return services.receive_stock(web.ledger, web.clinic.nurse, ReceiveStock(
        web.clinic.supplier_id, "INV-SPR-1", datetime.now(UTC) - timedelta(hours=6),
        (ReceivedLineInput(SPRAVATO_2, n, "SPR-LOT-1", "2028-06-30"),)))["vial_ids"]


def _session_form(web, page_text: str, pid: str, ids: list[str], **over) -> str:
    """The session form as the browser encodes it (``device_ids`` once per ticked device)."""
    from urllib.parse import urlencode

    form = {"csrf_token": csrf_of(page_text), "form_key": "esk-1", "patient_id": pid, "patient_query": "",
            "prescriber_dea_number": DEA, "dose_mg": "56.00", "administered_at": _local(web, 130),
            "observation_started_at": _local(web, 130), "observation_ended_at": _local(web, 2), "late_reason": "",
            "action": "record"}
    form.update(over)
    return urlencode([(k, v) for k, v in form.items() if v is not None] + [("device_ids", d) for d in ids])


def _post(web, body: str, **kw):
    return web.client.post(UI + "esketamine-sessions/new", content=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, **kw)


def test_a_spravato_session_on_its_page(web):
    ids = _devices(web, 3)
    pids = _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "esketamine-sessions/new")
    assert page.status_code == 200 and all(f'value="{d}"' in page.text for d in ids)
    # the devices on hand are the book: opening the form is a noted read (blind counts)
    with web.ledger.reading() as c:
        whats = c.execute(sa.text("SELECT what FROM stock_reads WHERE staff_id = :s"),
                          {"s": web.clinic.nurse.staff_id}).scalars().all()
    assert "Spravato session form" in whats
    before = entry_count(web)
    body = _session_form(web, page.text, pids["Pat Alvarez"], ids[:2])
    r = _post(web, body, follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    again = _post(web, body, follow_redirects=False)
    assert again.headers["location"] == r.headers["location"] and entry_count(web) == before + 1  # once
    e = _last(web, "esketamine_session_recorded")
    assert ([d["vial_id"] for d in e["devices"]], e["dose_mg"], e["patient_id"], e["prescriber_dea_number"]) == (
        ids[:2], "56.00", pids["Pat Alvarez"], DEA)
    assert e["directly_observed_by_name"] == "Nora Nurse"
    done = web.client.get(r.headers["location"])
    assert "Spravato session for P. Alvarez: 56.00 mg (2 devices), observed by Nora Nurse" in done.text
    assert "(128 minutes)" in done.text and f'href="/ui/{DEA}/entries/{e["seq"]}"' in done.text
    assert ids[0] not in re.findall(r'name="device_ids" value="([^"]+)"', done.text)  # used


def test_every_mistake_of_the_session_form_at_once(web):
    ids = _devices(web, 3)
    pid = _patients(web)["Pat Alvarez"]
    login(web, "nora")
    page = web.client.get(UI + "esketamine-sessions/new")
    before = entry_count(web)
    r = _post(web, _session_form(
        web, page.text, "", [], prescriber_dea_number="", dose_mg="70", observation_ended_at="soon"))
    assert r.status_code == 422
    assert {"patient_id", "prescriber_dea_number", "device_ids", "dose_mg", "observation_ended_at"} <= set(
        _errors(r.text)), _errors(r.text)
    # the service's REMS rule: under 2 hours of observation, beside its field
    r = _post(web, _session_form(
        web, page.text, pid, ids[:2], observation_ended_at=_local(web, 60)))
    assert r.status_code == 422 and "observation_ended_at" in _errors(r.text)
    assert f'value="{ids[0]}" checked' in r.text  # the ticked devices stay ticked
    assert entry_count(web) == before
    login(web, "morgan")
    assert web.client.get(UI + "esketamine-sessions/new").status_code == 403
