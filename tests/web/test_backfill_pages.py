"""Issue 21: downtime backfill and document upload on the pages, over HTTP, SQLite and PostgreSQL.

- Upload a document (``store_document`` on a page): multipart, the API's types and limit, the
  confirmation with the SHA-256 and a link to the document.
- Backfill: upload the scanned downtime sheet, record an infusion from it at its paper time: the
  entry carries that time, the late reason and the sheet (``documents``), the late-entry alert
  follows, the entry page links the sheet; a later waste from the sheet alike. A missing late
  reason is refused naming the field, an unknown sheet is refused, nothing recorded on refusal,
  a double submit records once.
- The API takes ``documents`` on administrations and wastes (optional; an unknown one is 404
  naming ``documents[0]``), and entries recorded before the field still read and verify.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.commands import InventoryItemInput, TakeInventory
from ledger.services import alerts as alert_service
from ledger.services.documents import MAX_DOCUMENT_BYTES
from tests.api.conftest import PASSWORD
from tests.api.test_clinical import witnessed
from tests.conftest import BACKENDS, DEA, KETAMINE_50, entry_count
from tests.web.test_infusion_page21 import _errors, _patients, web  # noqa: F401  (the fixture)
from tests.web.test_pages_http import UI, csrf_of, login

BOTH = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
TZ = ZoneInfo("America/Chicago")
SHEET = b"%PDF-1.7\n% downtime paper sheet, chair 2, signed\n%%EOF\n"
SHEET_SHA = hashlib.sha256(SHEET).hexdigest()
REASON = "Recorded from the downtime paper sheet"


def _stock(site) -> None:
    """Three vials on the book since three days ago (an initial inventory, entered late)."""
    services.take_inventory(site.ledger, site.clinic.pharmacist, TakeInventory(
        "initial", "opening_of_business", datetime.now(UTC) - timedelta(days=3), items=(
            InventoryItemInput(KETAMINE_50, "KA2601", "2028-03-31", sealed=True, containers=3),),
        late_reason="opening inventory entered from paper"), witness=site.clinic.nurse)


def _upload(site, page_text: str, path: str, *, content: bytes = SHEET, media: str = "application/pdf",
            title: str = "Downtime sheet, chair 2", key: str = "up-1"):
    return site.client.post(UI + path, data={"csrf_token": csrf_of(page_text), "title": title, "form_key": key},
                           files={"file": ("sheet.pdf", content, media)}, follow_redirects=False)


def _paper_time(hours_ago: float) -> datetime:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).astimezone(TZ).replace(second=0, microsecond=0)


def _infusion_form(page_text: str, pid: str, *, hours_ago: float = 30, **over) -> dict[str, str]:
    """The sheet's infusion: 1.00 mL drawn from the first vial, 0.73 given, 0.27 wasted before
    Ned, 45 minutes ending ``hours_ago`` hours ago (the paper's time)."""
    vial_id = re.search(r'name="vials-0-id" value="([^"]+)"', page_text).group(1)
    end = _paper_time(hours_ago)
    start = (end.astimezone(UTC) - timedelta(minutes=45)).astimezone(TZ)
    form = {"csrf_token": csrf_of(page_text), "form_key": "bf-inf-1", "sheet": SHEET_SHA, "patient_id": pid,
            "patient_query": "", "prescriber_dea_number": DEA, "weight_kg": "72.50", "ordered_mg_per_kg": "0.50",
            "vials-0-id": vial_id, "vials-0-use": "1", "vials-0-ml": "1.00", "ml_given": "0.73", "waste_ml": "0.27",
            "waste_method": "sink, witnessed", "started_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ended_at": end.strftime("%Y-%m-%dT%H:%M"), "late_reason": REASON, "witness_username": "ned",
            "witness_password": PASSWORD, "action": "record"}
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def _entries(site, kind: str) -> list[dict]:
    with site.ledger.reading() as c:
        rows = c.execute(sa.text("SELECT canonical FROM entries WHERE registrant = :r AND kind = :k ORDER BY seq"),
                         {"r": DEA, "k": kind}).scalars().all()
    return [json.loads(bytes(r)) for r in rows]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@BOTH
def test_upload_a_document_on_the_page_confirms_its_sha256_and_links_it(web):  # noqa: F811
    login(web, "nora")
    page = web.client.get(UI + "documents/new")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    before = entry_count(web.ledger)
    # every mistake at once: no title, a file that is not the PDF it is named as; nothing stored
    r = _upload(web, page.text, "documents/new", content=b"GIF89a not a pdf", title="")
    assert r.status_code == 422
    assert set(_errors(r.text)) >= {"title", "file"}, _errors(r.text)
    assert "is not the PDF it is named as" in _errors(r.text)["file"]
    r = _upload(web, page.text, "documents/new", media="application/zip")
    assert r.status_code == 422 and "must be a PDF, PNG, JPEG or TIFF" in _errors(r.text)["file"]
    assert 'value="Downtime sheet, chair 2"' in r.text  # the title typed stays
    assert entry_count(web.ledger) == before
    r = _upload(web, page.text, "documents/new")
    assert r.status_code == 303 and r.headers["location"].endswith(f"documents/new?stored={SHEET_SHA}")
    again = _upload(web, page.text, "documents/new")  # the same form sent twice: stored once
    assert again.status_code == 303 and entry_count(web.ledger) == before + 1
    done = web.client.get(r.headers["location"])
    text = _text(done.text)
    assert "Document stored: Downtime sheet, chair 2 (PDF" in text and SHA_IN(done.text)
    assert f'href="/ui/{DEA}/documents/{SHEET_SHA}"' in done.text
    assert web.client.get(UI + f"documents/{SHEET_SHA}").content == SHEET
    [stored] = _entries(web, "document_stored")
    assert stored["sha256"] == SHEET_SHA and stored["title"] == "Downtime sheet, chair 2"
    assert stored["media_type"] == "application/pdf"
    # a browser that names no type (application/octet-stream): the accepted type its bytes begin as
    r = _upload(web, page.text, "documents/new", content=b"II*\x00 a tiff scan", media="application/octet-stream",
                key="up-tiff")
    assert r.status_code == 303, _errors(r.text)
    assert _entries(web, "document_stored")[-1]["media_type"] == "image/tiff"


def SHA_IN(html: str) -> bool:  # noqa: N802
    return f'id="stored-sha256">{SHEET_SHA}<' in html


@BOTH
def test_a_document_larger_than_the_apis_limit_is_refused_and_nothing_is_stored(web):  # noqa: F811
    login(web, "nora")
    page = web.client.get(UI + "documents/new")
    before = entry_count(web.ledger)
    r = _upload(web, page.text, "documents/new", content=b"%PDF-" + b"0" * MAX_DOCUMENT_BYTES)
    assert r.status_code == 422 and "larger than 20 MB" in _errors(r.text)["file"]
    r = _upload(web, page.text, "documents/new", content=b"%PDF-" + b"0" * (MAX_DOCUMENT_BYTES + (1 << 20)))
    assert r.status_code == 413 and "larger than 20 MB" in _errors(r.text)["file"]  # refused while read
    # under 1 MB (the forms' limit) is not the bound: a 2 MB scan is kept
    r = _upload(web, page.text, "documents/new", content=b"%PDF-" + b"1" * (2 << 20), key="up-big")
    assert r.status_code == 303 and entry_count(web.ledger) == before + 1


@BOTH
def test_roles_the_upload_and_the_backfill_refuse(web):  # noqa: F811
    login(web, "ari")  # an auditor stores nothing and records nothing
    assert web.client.get(UI + "documents/new").status_code == 403
    assert web.client.get(UI + "backfill").status_code == 403
    web.client.cookies.clear()
    login(web, "dana")  # a prescriber records from a sheet but does not upload it
    page = web.client.get(UI + "backfill")
    assert page.status_code == 200 and 'id="sheet-form"' not in page.text
    before = entry_count(web.ledger)
    r = _upload(web, page.text, "backfill")
    assert r.status_code == 403 and entry_count(web.ledger) == before


@BOTH
def test_backfill_an_infusion_from_the_uploaded_sheet_as_a_late_entry_citing_it(web):  # noqa: F811
    alert_service.attach_alert_rules(web.ledger)  # as the server does: the alerts are raised with the entries
    _stock(web)
    ids = _patients(web)
    login(web, "nora")
    start = web.client.get(UI + "backfill")
    assert start.status_code == 200 and 'action="/ui/' + DEA + '/backfill"' in start.text
    r = _upload(web, start.text, "backfill")
    assert r.status_code == 303 and r.headers["location"].endswith(f"backfill?sheet={SHEET_SHA}")
    page = web.client.get(r.headers["location"])
    assert page.status_code == 200 and SHEET_SHA in page.text
    assert f'value="{REASON}"' in page.text  # the late reason, prefilled
    before = entry_count(web.ledger)

    # several mistakes at once, each beside its field; the late reason cleared is one of them
    r = web.client.post(UI + "backfill/infusion", data=_infusion_form(page.text, ids["Pat Alvarez"], late_reason="",
                                                                      weight_kg="", prescriber_dea_number=""))
    assert r.status_code == 422
    errs = _errors(r.text)
    assert {"late_reason", "weight_kg", "prescriber_dea_number"} <= set(errs), errs
    assert "a late entry must give its reason" in errs["late_reason"]
    assert 'name="witness_password" type="password" value=""' in r.text  # never kept
    assert entry_count(web.ledger) == before

    form = _infusion_form(page.text, ids["Pat Alvarez"])
    r = web.client.post(UI + "backfill/infusion", data=form, follow_redirects=False)
    assert r.status_code == 303, _errors(r.text) or r.text[:800]
    assert web.client.post(UI + "backfill/infusion", data=form, follow_redirects=False).status_code == 303
    [dose] = _entries(web, "dose_administered")  # the double submit recorded once
    [waste] = _entries(web, "dose_wasted")
    paper_start = datetime.fromisoformat(form["started_at"]).replace(tzinfo=TZ).astimezone(UTC)
    assert datetime.fromisoformat(dose["occurred_at"].replace("Z", "+00:00")) == paper_start
    assert dose["late_reason"] == REASON and waste["late_reason"] == REASON
    assert dose["documents"] == [SHEET_SHA] and waste["documents"] == [SHEET_SHA]
    assert dose["patient_id"] == ids["Pat Alvarez"] and dose["ml_given"] == "0.73" and waste["ml"] == "0.27"
    assert any(s["meaning"] == "witnessed" and s["printed_name"] for s in waste["signatures"])
    late = alert_service.list_alerts(web.ledger, DEA, rule="late_entry")
    assert any(str(dose["seq"]) in json.dumps(a, default=str) for a in late), late  # the late-entry alert

    done = web.client.get(r.headers["location"])
    text = _text(done.text)
    assert "Infusion for P. Alvarez: 36.50 mg given, 13.50 mg wasted, witnessed by" in text, text[:1500]
    assert f"Entered late: {REASON}" in text and "Cites the sheet" in text
    assert f'href="/ui/{DEA}/entries/{dose["seq"]}"' in done.text
    # the entry page shows it cites the sheet, linked
    entry = web.client.get(UI + f"entries/{dose['seq']}")
    assert entry.status_code == 200 and "Documents cited" in entry.text
    assert f'href="/ui/{DEA}/documents/{SHEET_SHA}">Downtime sheet, chair 2</a>' in entry.text


@BOTH
def test_an_unknown_sheet_is_refused_and_nothing_is_recorded(web):  # noqa: F811
    _stock(web)
    ids = _patients(web)
    login(web, "nora")
    start = web.client.get(UI + "backfill")
    _upload(web, start.text, "backfill")
    page = web.client.get(UI + f"backfill?sheet={SHEET_SHA}")
    before = entry_count(web.ledger)
    unknown = "ab" * 32
    r = web.client.post(UI + "backfill/infusion", data=_infusion_form(page.text, ids["Pat Alvarez"], sheet=unknown))
    assert r.status_code == 404 and f"no stored document {unknown[:12]}" in _errors(r.text).get("sheet", ""), \
        _errors(r.text)
    r = web.client.post(UI + "backfill/infusion", data=_infusion_form(page.text, ids["Pat Alvarez"], sheet=""))
    assert r.status_code == 422 and "upload the scanned sheet first" in _errors(r.text)["sheet"]
    assert web.client.get(UI + f"backfill?sheet={unknown}").status_code == 200  # step 1 again, no sheet
    assert entry_count(web.ledger) == before


@BOTH
def test_a_later_waste_from_the_sheet_cites_it_at_its_paper_time(web):  # noqa: F811
    _stock(web)
    ids = _patients(web)
    login(web, "nora")
    start = web.client.get(UI + "backfill")
    _upload(web, start.text, "backfill")
    page = web.client.get(UI + f"backfill?sheet={SHEET_SHA}")
    # the sheet's infusion without its waste (it is further down the sheet)
    r = web.client.post(UI + "backfill/infusion", data=_infusion_form(
        page.text, ids["Jordan Example"], waste_ml="", witness_username="", witness_password=""),
        follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    [dose] = _entries(web, "dose_administered")
    page = web.client.get(r.headers["location"])
    assert "Not reconciled: 0.27 mL" in _text(page.text)
    assert f'name="lw_administration_id" value="{dose["administration_id"]}"' in page.text
    at = _paper_time(29)
    form = {"csrf_token": csrf_of(page.text), "form_key": "bf-w-1", "sheet": SHEET_SHA,
            "lw_administration_id": dose["administration_id"], "lw_ml": "0.27", "lw_method": "sink, witnessed",
            "lw_occurred_at": at.strftime("%Y-%m-%dT%H:%M"), "lw_late_reason": "",
            "waste_witness_username": "ned", "waste_witness_password": PASSWORD}
    before = entry_count(web.ledger)
    r = web.client.post(UI + "backfill/waste", data={**form, "lw_ml": "0.50"})
    errs = _errors(r.text)
    assert r.status_code == 422 and {"lw_late_reason", "lw_ml"} <= set(errs), errs
    assert entry_count(web.ledger) == before
    r = web.client.post(UI + "backfill/waste", data={**form, "lw_late_reason": "Recorded from the paper sheet, chair 2"},
                        follow_redirects=False)
    assert r.status_code == 303, _errors(r.text)
    [waste] = _entries(web, "dose_wasted")
    assert waste["documents"] == [SHEET_SHA] and waste["late_reason"] == "Recorded from the paper sheet, chair 2"
    assert datetime.fromisoformat(waste["occurred_at"].replace("Z", "+00:00")) == at.astimezone(UTC)
    done = _text(web.client.get(r.headers["location"]).text)
    assert "Waste recorded: 0.27 mL (13.50 mg) of" in done and "Cites the sheet" in done


@BOTH
def test_the_api_takes_documents_on_administrations_and_wastes(web):  # noqa: F811
    """``documents`` is optional on POST administrations and wastes: cited, checked stored; an
    unknown one is refused naming ``documents[0]`` with nothing recorded."""
    _stock(web)
    ids = _patients(web)
    api = web
    stored = api.client.post(api.url("/documents"), content=SHEET, headers={
        **api.headers("nora"), "Content-Type": "application/pdf", "Document-Title": "Downtime%20sheet"})
    assert stored.status_code == 201, stored.text
    with api.ledger.reading() as c:
        vial = c.execute(sa.text("SELECT vial_id FROM vials WHERE registrant = :r ORDER BY vial_id"),
                         {"r": DEA}).scalars().first()
    end = datetime.now(UTC) - timedelta(hours=30)
    body = {"patient_id": ids["Pat Alvarez"], "prescriber_dea_number": DEA, "weight_kg": "72.50",
            "ordered_mg_per_kg": "0.50", "draws": [{"vial_id": vial, "ml": "1.00"}], "ml_given": "0.73",
            "started_at": (end - timedelta(minutes=40)).isoformat(), "ended_at": end.isoformat(),
            "late_reason": REASON}
    before = entry_count(api.ledger)
    r = api.client.post(api.url("/administrations"), headers={**api.headers("nora"), **api.key()},
                        json={**body, "documents": ["cd" * 32]})
    assert r.status_code == 404 and "documents[0]" in r.text, r.text
    assert entry_count(api.ledger) == before
    r = api.client.post(api.url("/administrations"), headers={**api.headers("nora"), **api.key()},
                        json={**body, "documents": [SHEET_SHA]})
    assert r.status_code == 201, r.text
    [dose] = _entries(web, "dose_administered")
    assert dose["documents"] == [SHEET_SHA]
    # without documents: as before (an empty list on the entry)
    r = api.client.post(api.url("/administrations"), headers={**api.headers("nora"), **api.key()},
                        json={**body, "draws": [{"vial_id": vial, "ml": "0.50"}], "ml_given": "0.50"})
    assert r.status_code == 201, r.text
    assert _entries(web, "dose_administered")[1]["documents"] == []
    # a waste citing the sheet
    r, _ = witnessed(api, "nora", "/wastes", {
        "administration_id": dose["administration_id"], "ml": "0.27", "method": "sink",
        "occurred_at": (end + timedelta(minutes=5)).isoformat(), "late_reason": REASON, "documents": [SHEET_SHA]},
        "ned")
    assert r.status_code == 201, r.text
    assert _entries(web, "dose_wasted")[0]["documents"] == [SHEET_SHA]


@BOTH
def test_doses_and_wastes_recorded_before_the_documents_field_still_read_and_verify(web, monkeypatch):  # noqa: F811
    """Entries recorded before issue 21 lack ``documents``: written here as they were (the key
    left out of the canonical bytes), they verify deep, read on the entry page, and a later
    waste of such a dose, citing the sheet, is recorded and verifies too."""
    from ledger.domain.commands import AdministerDose, DrawInput, RecordWaste, StoreDocument
    from ledger.integrity import canonical
    from ledger.services.verify import verify

    _stock(web)
    ids = _patients(web)
    with web.ledger.reading() as c:
        vial = c.execute(sa.text("SELECT vial_id FROM vials WHERE registrant = :r ORDER BY vial_id"),
                         {"r": DEA}).scalars().first()
    real = canonical.to_json_value

    def as_before(value):
        out = real(value)
        if getattr(value, "kind", None) in ("dose_administered", "dose_wasted"):
            out.pop("documents", None)
        return out

    monkeypatch.setattr(canonical, "to_json_value", as_before)
    end = datetime.now(UTC) - timedelta(hours=2)
    res = services.administer_dose(web.ledger, web.clinic.nurse, AdministerDose(
        ids["Pat Alvarez"], DEA, "72.50", "0.50", (DrawInput(vial, "1.00"),), "0.70", end - timedelta(minutes=30),
        end))
    monkeypatch.setattr(canonical, "to_json_value", real)
    [old] = _entries(web, "dose_administered")
    assert "documents" not in old
    services.store_document(web.ledger, web.clinic.nurse, StoreDocument(SHEET, "application/pdf", "Downtime sheet"))
    services.record_waste(web.ledger, web.clinic.nurse, RecordWaste(
        res["administration_id"], "0.30", "sink, witnessed", end + timedelta(minutes=5), documents=(SHEET_SHA,)),
        witness=web.clinic.pharmacist)
    report = verify(web.ledger, deep=True)
    assert report.ok, [str(x) for x in report.problems]
    login(web, "nora")
    page = web.client.get(UI + f"entries/{old['seq']}")
    assert page.status_code == 200 and "Documents cited" not in page.text
    [waste] = _entries(web, "dose_wasted")
    assert waste["documents"] == [SHEET_SHA]
