"""Documents over HTTP (issue 20): uploaded as the request body, streamed with a size limit,
typed by their bytes, stored by SHA-256, cited by entries and read back unaltered."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import sqlalchemy as sa

from ledger.services.documents import MAX_DOCUMENT_BYTES
from tests.api.conftest import Api, entry_count
from tests.conftest import an_hour_ago

PDF = b"%PDF-1.7\n% an invoice scan\n%%EOF\n"


def upload(api: Api, content: bytes, media: str = "application/pdf", title: str = "Invoice GMS-0042",
           user: str = "nora", key: dict | None = None):
    headers = {**api.headers(user), **(key or api.key()), "Content-Type": media, "Document-Title": quote(title)}
    return api.client.post(api.url("/documents"), content=content, headers=headers)


def test_upload_read_back_and_cite(api: Api) -> None:
    r = upload(api, PDF, title="Rechnung für Müller – scan")
    assert r.status_code == 201, r.text
    sha = r.json()["sha256"]
    assert sha == hashlib.sha256(PDF).hexdigest()
    assert [e["kind"] for e in r.json()["entries"]] == ["document_stored"]
    with api.ledger.engine.connect() as c:
        title = c.execute(sa.text("SELECT title FROM documents WHERE sha256 = :h"), {"h": sha}).scalar_one()
    assert title == "Rechnung für Müller – scan"  # percent-encoded UTF-8, decoded
    got = api.client.get(api.url(f"/documents/{sha}"), headers=api.headers("casey"))
    assert got.status_code == 200 and got.content == PDF and got.headers["content-type"] == "application/pdf"
    # an entry cites it by digest
    receipt = api.client.post(api.url("/receipts"), headers={**api.headers("nora"), **api.key()}, json={
        "supplier_id": api.clinic.supplier_id, "invoice_number": "GMS-0042", "occurred_at": an_hour_ago().isoformat(),
        "documents": [sha], "lines": [{"ndc": "67457-0001-10", "containers": 1, "lot": "L1", "expiry": "2029-01-31"}]})
    assert receipt.status_code == 201, receipt.text


def test_a_retry_with_the_same_key_stores_once(api: Api) -> None:
    key = api.key()
    first = upload(api, PDF, key=key)
    before = entry_count(api)
    again = upload(api, PDF, key=key)
    assert again.status_code in (200, 201) and again.json()["replayed"] is True
    assert again.json()["sha256"] == first.json()["sha256"] and entry_count(api) == before


def test_refusals_name_the_problem_and_store_nothing(api: Api) -> None:
    before = entry_count(api)
    exe = upload(api, b"MZ\x90\x00 not a pdf")
    assert exe.status_code == 422 and exe.json()["errors"] == [
        {"field": "Content-Type", "reason": exe.json()["errors"][0]["reason"]}]
    assert "not application/pdf" in exe.json()["detail"]
    html = upload(api, b"<html>", media="text/html")
    assert html.status_code == 422 and html.json()["errors"][0]["field"] == "Content-Type"
    empty = upload(api, b"")
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "body"
    no_title = api.client.post(api.url("/documents"), content=PDF,
                               headers={**api.headers("nora"), **api.key(), "Content-Type": "application/pdf"})
    assert no_title.status_code == 422 and "document-title" in no_title.text.lower()
    bad_title = api.client.post(api.url("/documents"), content=PDF, headers={
        **api.headers("nora"), **api.key(), "Content-Type": "application/pdf", "Document-Title": "%ff%fe"})
    assert bad_title.status_code == 422 and bad_title.json()["errors"][0]["field"] == "Document-Title"
    assert entry_count(api) == before
    unknown = api.client.get(api.url("/documents/" + "a" * 64), headers=api.headers("casey"))
    assert unknown.status_code == 404
    assert api.client.get(api.url("/documents/not-a-digest"), headers=api.headers("casey")).status_code == 422


def test_too_large_is_refused_while_streaming(api: Api) -> None:
    """Over the limit: 413 from the declared length, and from a stream that declares none (the
    route stops reading once the limit is passed); the 1 MB limit of other routes does not apply
    to documents, and still applies to everything else."""
    before = entry_count(api)
    declared = api.client.post(api.url("/documents"), content=b"%PDF-" + b"0" * MAX_DOCUMENT_BYTES, headers={
        **api.headers("nora"), **api.key(), "Content-Type": "application/pdf", "Document-Title": "big"})
    assert declared.status_code == 413 and declared.json()["type"].endswith("/payload-too-large")
    sent = []

    def chunks():
        yield b"%PDF-1.7 "
        for _ in range(MAX_DOCUMENT_BYTES // (1 << 20) + 2):
            sent.append(1)
            yield b"0" * (1 << 20)

    streamed = api.client.post(api.url("/documents"), content=chunks(), headers={
        **api.headers("nora"), **api.key(), "Content-Type": "application/pdf", "Document-Title": "big"})
    assert streamed.status_code == 413
    assert entry_count(api) == before
    two_mb = b"%PDF-1.7 " + b"0" * (2 << 20)
    ok = upload(api, two_mb)
    assert ok.status_code == 201, ok.text  # larger than the JSON routes' limit, stored
    json_big = api.client.post(api.url("/counts"), content=b"{" + b" " * (2 << 20) + b"}",
                               headers={**api.headers("nora"), **api.key(), "Content-Type": "application/json"})
    assert json_big.status_code == 413
