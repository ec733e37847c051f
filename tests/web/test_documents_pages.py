"""Issue 20: "document upload ... linked from the entries that cite them". An entry that cites a
stored document (an invoice scan on a receipt) lists it on its entry page, by title, linked to
``/ui/<DEA>/documents/<sha256>``, which hands over exactly the stored bytes, as a download, to
the roles that read documents (a prescriber, who does not, is refused)."""

from __future__ import annotations

import hashlib

import pytest

from api.web.settings import WebSettings
from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock, StoreDocument
from tests.api.conftest import build_api
from tests.conftest import BACKENDS, KETAMINE_50, an_hour_ago
from tests.web.test_pages_http import UI, login

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)

SCAN = b"%PDF-1.7\n% invoice GMS-0077, scanned at the front desk\n%%EOF\n"


@pytest.fixture
def web(ledger):
    api = build_api(ledger)
    api.client.app.state.web_settings = WebSettings(cookie_secure=False)
    return api


def test_an_entry_page_links_the_documents_it_cites(web):
    clinic = web.clinic
    stored = services.store_document(web.ledger, clinic.nurse, StoreDocument(
        content=SCAN, media_type="application/pdf", title="Invoice GMS-0077 (scan)"))
    sha = hashlib.sha256(SCAN).hexdigest()
    assert stored["sha256"] == sha
    res = services.receive_stock(web.ledger, clinic.nurse, ReceiveStock(
        clinic.supplier_id, "GMS-0077", an_hour_ago(), (ReceivedLineInput(KETAMINE_50, 1, "KA1", "2029-01-31"),),
        documents=(sha,)))
    seq = res["entries"][0]["seq"]
    login(web, "morgan")
    page = web.client.get(UI + f"entries/{seq}")
    assert page.status_code == 200, page.text
    link = f'/ui/{web.dea}/documents/{sha}'
    assert "Documents cited" in page.text and f'href="{link}"' in page.text and "Invoice GMS-0077 (scan)" in page.text
    got = web.client.get(link)
    assert got.status_code == 200 and got.content == SCAN
    assert got.headers["content-type"] == "application/pdf" and got.headers["content-disposition"].startswith("attachment")
    missing = web.client.get(f"/ui/{web.dea}/documents/{'1' * 64}")
    assert missing.status_code == 404


def test_a_role_that_does_not_read_documents_is_refused(web):
    services.store_document(web.ledger, web.clinic.nurse, StoreDocument(
        content=SCAN, media_type="application/pdf", title="Invoice GMS-0078"))
    login(web, "dana")  # a prescriber: documents are not theirs to read (get_document's roles)
    r = web.client.get(f"/ui/{web.dea}/documents/{hashlib.sha256(SCAN).hexdigest()}")
    assert r.status_code == 403 and SCAN not in r.content
