"""The infusion page on the clinic floor (issue 21): pick, don't type; every error at once; the
witness once; a confirmation in the clinic's words.

- The patient is found by name (in a POST body, never an address) or chart number, picked from
  radio buttons, patients seen in the last 14 days first; names only for roles that may read them,
  each name shown written to the patient-access log.
- The prescriber is picked from the registered prescribers (name and DEA number).
- Vials carry short labels (carton serial tail and position), not the whole GS1 id twice.
- The page checks its own inputs all at once before the service, keeps everything typed but
  passwords, and asks the witness's password only once the rest is right.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.api.conftest import PASSWORD
from tests.conftest import BACKENDS, DEA, DEA2, KETAMINE_50
from tests.web.test_pages_http import UI, _stock_up, csrf_of, login

#: Page tests run on SQLite and PostgreSQL.
BOTH = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
TZ = ZoneInfo("America/Chicago")
NAMES = ("Pat Alvarez", "Jordan Example", "Patricia Alvarado")


@pytest.fixture
def web(ledger):
    from api.web.settings import WebSettings
    from tests.api.conftest import build_api

    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def _patients(web) -> dict[str, str]:
    """Three patients (name -> id), registered under the page's patient key."""
    import base64
    import secrets

    from ledger import services
    from ledger.domain.commands import AddressInput, RegisterPatient
    from ledger.storage.patient_keys import PatientKeys

    keys = PatientKeys.from_base64(base64.b64encode(secrets.token_bytes(32)).decode())
    web.client.app.state.patient_keys = keys
    return {name: services.register_patient(web.ledger, web.clinic.nurse, RegisterPatient(
        name, AddressInput("1 Elm St", "Austin", "TX", "78701")), keys=keys)["patient_id"] for name in NAMES}


def _access_rows(web) -> list[dict]:
    with web.ledger.reading() as c:
        return [dict(r) for r in c.execute(sa.text(
            "SELECT staff_id, patient_id, action FROM patient_access_log ORDER BY id")).mappings()]


def _form(web, page_text: str, pid: str, **over) -> dict[str, str]:
    """A complete infusion form as the browser sends it: 1.00 mL drawn from the first vial,
    0.73 given, 0.27 wasted, witnessed by Ned."""
    vial_id = re.search(r'name="vials-0-id" value="([^"]+)"', page_text).group(1)
    end = web.clock().astimezone(TZ).replace(second=0, microsecond=0, fold=0)
    start = (end.astimezone(UTC) - timedelta(minutes=45)).astimezone(TZ)
    form = {"csrf_token": csrf_of(page_text), "form_key": "inf21-1", "patient_id": pid, "patient_query": "",
            "prescriber_dea_number": DEA, "weight_kg": "72.50", "ordered_mg_per_kg": "0.50",
            "vials-0-id": vial_id, "vials-0-use": "1", "vials-0-ml": "1.00", "ml_given": "0.73", "waste_ml": "0.27",
            "waste_method": "sink, witnessed", "started_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ended_at": end.strftime("%Y-%m-%dT%H:%M"), "witness_username": "ned", "witness_password": PASSWORD,
            "action": "record"}
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def _errors(html: str) -> dict[str, str]:
    return dict(re.findall(r'<p class="error" id="f-([^"]+?)(?:-error)?">([^<]*)</p>', html))


def _urls(html: str) -> list[str]:
    return re.findall(r'\b(?:href|action|src|formaction)="([^"]*)"', html)


@BOTH
def test_search_by_name_finds_the_patient_and_writes_the_access_log(web):
    _stock_up(web)
    ids = _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    assert page.status_code == 200 and 'name="patient_query"' in page.text
    assert not any(n in page.text for n in NAMES)  # nothing revealed before a search
    before = len(_access_rows(web))
    r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                    "patient_query": "alva", "form_key": "k"})
    assert r.status_code == 200, r.text[:500]
    picks = re.findall(r'<input type="radio" id="f-patient-\d+" name="patient_id" value="([^"]+)"', r.text)
    assert sorted(picks) == sorted([ids["Pat Alvarez"], ids["Patricia Alvarado"]])
    assert "Pat Alvarez" in r.text and "Patricia Alvarado" in r.text and "Jordan" not in r.text
    assert "Austin TX 78701" in r.text  # a second identifier beside the name
    assert 'value="alva"' in r.text  # the query stays in its box
    rows = _access_rows(web)[before:]
    assert sorted((x["patient_id"], x["action"]) for x in rows) == sorted(
        [(ids["Pat Alvarez"], "search"), (ids["Patricia Alvarado"], "search")])
    assert {x["staff_id"] for x in rows} == {web.clinic.nurse.staff_id}
    # two words narrow it; a chart number, with or without its P, finds one patient
    r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                    "patient_query": "pat alvarez", "form_key": "k"})
    assert re.findall(r'name="patient_id" value="([^"]+)"', r.text) == [ids["Pat Alvarez"]]
    for q in (ids["Jordan Example"], ids["Jordan Example"].lower(), ids["Jordan Example"][1:]):
        r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                        "patient_query": q, "form_key": "k"})
        assert re.findall(r'name="patient_id" value="([^"]+)"', r.text) == [ids["Jordan Example"]], q
    # nothing found: said so, and nothing logged
    n = len(_access_rows(web))
    r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                    "patient_query": "zzzz", "form_key": "k"})
    assert r.status_code == 200 and "No patient found" in r.text and len(_access_rows(web)) == n


@BOTH
def test_patients_seen_in_the_last_14_days_come_first(web):
    _stock_up(web)
    ids = _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    # Patricia (the last registered) has an infusion today: she is listed first, and alone in
    # the empty search (the patients seen recently)
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, ids["Patricia Alvarado"]),
                        follow_redirects=False)
    assert r.status_code == 303, _errors(r.text) or r.text[:500]
    page = web.client.get(UI + "infusions/new")
    r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                    "patient_query": "alva", "form_key": "k"})
    assert re.findall(r'name="patient_id" value="([^"]+)"', r.text) == [ids["Patricia Alvarado"], ids["Pat Alvarez"]]
    assert "last infusion" in r.text
    r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                    "patient_query": "", "form_key": "k"})
    assert re.findall(r'name="patient_id" value="([^"]+)"', r.text) == [ids["Patricia Alvarado"]]


@BOTH
def test_a_role_that_may_not_read_names_sees_chart_numbers_only(web, monkeypatch):
    """The administrator may not read patients' names (``read_patient``'s rule): opened to them
    here, the search answers ids only, a name search finds nothing, and nothing is logged."""
    from api.web import core

    _stock_up(web)
    ids = _patients(web)
    monkeypatch.setitem(core.PAGE_ROLES, "infusion", core.PAGE_ROLES["infusion"] | {"administrator"})
    login(web, "avery")
    page = web.client.get(UI + "infusions/new")
    assert page.status_code == 200
    before = len(_access_rows(web))
    r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                    "patient_query": ids["Pat Alvarez"], "form_key": "k"})
    assert r.status_code == 200
    assert re.findall(r'name="patient_id" value="([^"]+)"', r.text) == [ids["Pat Alvarez"]]
    assert not any(n in r.text for n in NAMES) and "Austin TX" not in r.text
    assert "not shown patients' names" in r.text
    r = web.client.post(UI + "infusions/new", data={"csrf_token": csrf_of(page.text), "action": "search",
                                                    "patient_query": "alvarez", "form_key": "k"})
    assert "No patient found" in r.text and "Alvarez" not in r.text.replace('value="alvarez"', "")
    assert len(_access_rows(web)) == before


@BOTH
def test_names_are_in_no_address_the_page_makes_nor_in_any_log(web, caplog):
    _stock_up(web)
    ids = _patients(web)
    access = logging.getLogger("csledger.access")  # it does not propagate: listen to it directly
    access.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG):
            login(web, "nora")
            page = web.client.get(UI + "infusions/new")
            shown = [page]
            shown.append(web.client.post(UI + "infusions/new", data={
                "csrf_token": csrf_of(page.text), "action": "search", "patient_query": "Pat Alvarez", "form_key": "k"}))
            shown.append(web.client.post(UI + "infusions/new", data=_form(web, page.text, ids["Pat Alvarez"],
                                                                           weight_kg="")))
            r = web.client.post(UI + "infusions/new", data=_form(web, page.text, ids["Pat Alvarez"]),
                                follow_redirects=False)
            assert r.status_code == 303
            assert "Alvarez" not in r.headers["location"]
            shown.append(web.client.get(r.headers["location"]))
    finally:
        access.removeHandler(caplog.handler)
    assert "Pat Alvarez" in shown[1].text and "P. Alvarez" in shown[-1].text  # the pages show the name...
    for resp in shown:  # ...never in an address: links, form actions, scripts
        for url in _urls(resp.text):
            assert "alvarez" not in url.lower() and "pat" not in url.lower().replace("path", ""), url
        assert "alvarez" not in str(resp.url).lower()
    assert 'method="post"' in shown[0].text and "method=\"get\"" not in shown[0].text
    assert caplog.records  # the access log was heard
    assert "Alvarez" not in caplog.text and "alva" not in caplog.text.lower()


@BOTH
def test_the_prescriber_is_picked_from_the_registered_prescribers(web):
    _stock_up(web)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    picks = re.findall(r'name="prescriber_dea_number" value="([^"]+)"', page.text)
    assert sorted(picks) == sorted([DEA, DEA2])
    assert "Dr. Alex Prescriber" in page.text and "Dr. Fran Prescriber" in page.text
    row = re.search(r'<li class=""><label for="f-prescriber-\d+">.*?</li>', page.text, re.S).group(0)
    assert "DEA" in row and ("AB1234563" in row or "FB7654329" in row)
    # a registration that has expired by the page's today cannot be picked
    web.clock.offset = datetime(2031, 7, 2, 15, tzinfo=UTC) - datetime.now(UTC)
    login(web, "nora")  # the session of five years ago has ended
    page = web.client.get(UI + "infusions/new")
    assert page.status_code == 200, page.text[:300]
    assert page.text.count("registration expired 2031-06-30") == 2
    assert len(re.findall(r'name="prescriber_dea_number" value="[^"]+" disabled', page.text)) == 2


@BOTH
def test_vials_show_short_labels_not_the_whole_gs1_id(web):
    from ledger import services
    from ledger.domain import gs1
    from ledger.domain.commands import ReceivedLineInput, ReceiveStock

    gtin = gs1.gtin_for_ndc10("6745700110")
    scans = tuple(gs1.datamatrix(gtin, f"AB1234563W03N00000{k}", "KA2610", datetime(2028, 6, 30).date())
                  for k in range(2))
    services.receive_stock(web.ledger, web.clinic.nurse, ReceiveStock(
        web.clinic.supplier_id, "GMS-21", datetime.now(UTC) - timedelta(hours=1),
        (ReceivedLineInput(KETAMINE_50, 2, "KA2610", "2028-06-30", scans=scans),)))
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    ids = re.findall(r'name="vials-\d+-id" value="([^"]+)"', page.text)
    assert ids and all(i.startswith("(01)") for i in ids)
    labels = re.findall(r'<label for="f-vials-\d+-ml">mL drawn from ([^<]+)</label>', page.text)
    assert len(labels) == len(ids) and len(set(labels)) == len(labels)  # one label, one vial
    assert all("(01)" not in x and len(x) <= 32 for x in labels), labels
    assert set(labels) == {"serial …000000", "serial …000001"}, labels  # the vial's own serial: its tail
    assert "(01)" not in page.text.split('name="vials-0-id"')[1].split("</li>")[0].replace(ids[0], "")


def test_short_labels_grow_until_they_name_one_vial():
    from api.web.gs1 import short_vial_labels

    ids = ["(01)00367457001104(21)4563W00C001:08", "(01)00367457001104(21)9999W00C001:08",
           "(01)00367457001104(21)4563W03C001:08", "P93-1:04", "V34-1", "(01)00367457001104(21)SN1"]
    labels = short_vial_labels([{"vial_id": i} for i in ids])
    assert labels[ids[2]] == "carton …03C001 · vial 08"
    assert labels[ids[0]] != labels[ids[1]] and labels[ids[0]].endswith("W00C001 · vial 08")
    assert labels["P93-1:04"] == "pack P93-1 · vial 04" and labels["V34-1"] == "vial V34-1"
    assert labels[ids[5]] == "serial SN1"


@BOTH
def test_three_errors_are_shown_at_once_and_everything_typed_is_kept(web):
    _stock_up(web)
    _patients(web)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, "", prescriber_dea_number="",
                                                         weight_kg="", witness_password="x"))
    assert r.status_code == 422
    errors = _errors(r.text)
    assert set(errors) == {"patient_id", "prescriber_dea_number", "weight_kg"}, errors
    assert "3 things to fix" in r.text
    assert 'value="0.50"' in r.text and 'value="0.73"' in r.text and 'value="0.27"' in r.text
    assert 'value="1.00"' in r.text and 'name="vials-0-use" value="1" data-strength="50.00" checked' in r.text
    assert 'value="ned"' in r.text and 'value="x"' not in r.text  # the password is never sent back
    # the service's own refusal still comes back beside its field (a future end)
    future = (web.clock() + timedelta(hours=3)).astimezone(TZ).strftime("%Y-%m-%dT%H:%M")
    pid = _patients_first(web)
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid, ended_at=future, form_key="inf21-f"))
    assert r.status_code == 422 and "ended_at" in _errors(r.text), _errors(r.text)


def _patients_first(web) -> str:
    with web.ledger.reading() as c:
        return c.execute(sa.text("SELECT patient_id FROM patients ORDER BY registered_seq")).scalar()


@BOTH
def test_an_unbalanced_draw_is_refused_naming_the_fields(web, monkeypatch):
    _stock_up(web)
    pid = _patients(web)["Pat Alvarez"]
    calls = _count_witness_checks(web, monkeypatch)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid, ml_given="0.70", waste_ml="0.20"))
    assert r.status_code == 422
    msg = _errors(r.text)["waste_ml"]
    assert "mL drawn (1.00" in msg and "mL given (0.70)" in msg and "mL wasted (0.20)" in msg
    assert "0.10 mL is unaccounted for" in msg
    assert calls == []  # the witness's password was not checked
    # more given than drawn
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid, ml_given="1.20", waste_ml=""))
    assert "more than the 1.00 mL drawn" in _errors(r.text)["ml_given"]
    # without waste: allowed, and said plainly that it stays unreconciled
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid, ml_given="0.70", waste_ml="",
                                                         weight_kg=""))
    assert r.status_code == 422 and "stays unreconciled until its waste is recorded" in r.text
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid, ml_given="0.70", waste_ml="",
                                                         witness_username="", witness_password=""),
                        follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    done = web.client.get(r.headers["location"]).text
    assert "Not reconciled: 0.30 mL (15.00 mg) drawn" in done and "stays unreconciled until its waste is recorded" in done


def _count_witness_checks(web, monkeypatch) -> list[str]:
    auth = web.client.app.state.auth
    calls: list[str] = []
    real = auth.issue_assertion

    def counted(session, user, *a, **kw):
        calls.append(user)
        return real(session, user, *a, **kw)

    monkeypatch.setattr(auth, "issue_assertion", counted)
    return calls


@BOTH
def test_the_witness_authenticates_once_after_the_form_is_valid(web, monkeypatch):
    _stock_up(web)
    pid = _patients(web)["Pat Alvarez"]
    calls = _count_witness_checks(web, monkeypatch)
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    before = len(_access_rows(web))
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid, ordered_mg_per_kg=""))
    assert r.status_code == 422 and set(_errors(r.text)) == {"ordered_mg_per_kg"}
    assert calls == [] and "password was not checked yet" in r.text
    # the picked patient is shown again by name (so the nurse sees who), a read in the access log
    assert "Pat Alvarez" in r.text and f'value="{pid}" checked' in r.text
    assert [(x["patient_id"], x["action"]) for x in _access_rows(web)[before:]] == [(pid, "read")]
    # no witness at all: named beside the witness's fields, with the other errors
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid, ordered_mg_per_kg="",
                                                         witness_username="", witness_password=""))
    assert {"ordered_mg_per_kg", "witness_username", "witness_password"} <= set(_errors(r.text))
    assert calls == []
    r = web.client.post(UI + "infusions/new", data=_form(web, page.text, pid), follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    assert calls == ["ned"]


@BOTH
def test_the_confirmation_is_in_the_clinics_words_and_local_time(web):
    _stock_up(web)
    pid = _patients(web)["Pat Alvarez"]
    login(web, "nora")
    page = web.client.get(UI + "infusions/new")
    form = _form(web, page.text, pid)
    r = web.client.post(UI + "infusions/new", data=form, follow_redirects=False)
    assert r.status_code == 303
    assert re.search(r"/infusions/new\?saved=\d+$", r.headers["location"])
    seq = int(r.headers["location"].rsplit("=", 1)[1])
    before = len(_access_rows(web))
    done = web.client.get(r.headers["location"])
    assert done.status_code == 200
    ended = form["ended_at"][-5:]  # HH:MM, the clinic's local time (America/Chicago)
    text = re.sub(r"<[^>]+>", "", done.text)
    assert (f"Infusion for P. Alvarez: 36.50 mg given, 13.50 mg wasted, witnessed by Ned Nurse at {ended}."
            in text), text[:2000]
    assert "Ordered 36.25 mg (72.50 kg × 0.50 mg/kg) by Dr. Alex Prescriber" in text
    assert f'href="/ui/{DEA}/entries/{seq}"' in done.text and "Technical view" in done.text
    assert f"entry #{seq + 1}" in text or f"#{seq + 1}" in text
    assert "Next infusion" in done.text and 'name="patient_query" type="text" value=""' in done.text
    # the name shown is a read, logged
    assert [(x["patient_id"], x["action"]) for x in _access_rows(web)[before:]] == [(pid, "read")]
    # another person's or another kind of entry: the form only, no confirmation
    login(web, "ned")
    other = web.client.get(r.headers["location"])
    assert other.status_code == 200 and "Infusion for" not in other.text and "Alvarez" not in other.text
    login(web, "nora")
    assert "Infusion for" not in web.client.get(UI + "infusions/new?saved=1").text


@BOTH
def test_a_saved_count_says_its_result_in_the_clinics_words(web):
    """The count's result page (the entry a submitted count leads to) starts with what was found,
    product by product, before the entry's technical fields."""
    from ledger import services
    from ledger.domain.commands import CountLineInput, StartCount, SubmitCount
    from tests.conftest import KETAMINE_10

    _stock_up(web)  # 3 sealed vials of the 50 mg/mL product on the book
    clinic = web.clinic
    sid = services.start_count(web.ledger, clinic.nurse, StartCount(blind=True))["session_id"]
    when = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    res = services.submit_count(web.ledger, clinic.nurse, SubmitCount(sid, (
        CountLineInput(KETAMINE_50, 2), CountLineInput(KETAMINE_10, 0)), when), second_counter=clinic.nurse2)
    seq = res["entries"][0]["seq"]
    login(web, "nora")
    page = web.client.get(UI + f"entries/{seq}?saved=1")
    assert page.status_code == 200
    text = re.sub(r"<[^>]+>", "", page.text)
    local = when.astimezone(TZ).strftime("%H:%M")
    assert f"Count by Nora Nurse and Ned Nurse at {local}: 1 difference opened a discrepancy" in text, text[:1500]
    assert re.search(r"Ketamine HCl injection 50 mg/mL: counted 2 sealed, 0 open \(0\.00 mL\) = 20\.00 mL; the book "
                     r"held 30\.00 mL: -10\.00 mL, discrepancy D\d+-\d+ opened\.", text), text[:2000]
    assert "Ketamine HCl injection 10 mg/mL" not in text.split("The entry below")[0]  # nothing there, nothing said
    # the entry shown later (not just saved) is the technical view only
    assert "plain-result" not in web.client.get(UI + f"entries/{seq}").text
