"""CORS closed by default, structured access logs without bodies or health data, no-store."""

from __future__ import annotations

import json
import logging

from api.http.app import create_app
from api.http.auth import fast_test_hasher
from ledger.settings import Settings
from tests.api.conftest import PASSWORD
from tests.api.test_commands import PRODUCT


def test_cors_is_closed_by_default(api):
    r = api.client.options(api.url("/products"), headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    r = api.client.get(api.url("/products"), headers=api.headers("nora", Origin="https://evil.example"))
    assert "access-control-allow-origin" not in r.headers


def test_cors_opens_only_to_configured_origins(api):
    from fastapi.testclient import TestClient

    app = create_app(api.ledger, Settings(cors_origins=["https://clinic.example"]), password_hasher=fast_test_hasher())
    c = TestClient(app)
    ok = c.options(api.url("/products"), headers={"Origin": "https://clinic.example", "Access-Control-Request-Method": "GET"})
    assert ok.headers.get("access-control-allow-origin") == "https://clinic.example"
    no = c.options(api.url("/products"), headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in no.headers


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_access_log_is_structured_and_holds_nothing_from_bodies(api):
    cap = Capture()
    logger = logging.getLogger("csledger.access")
    logger.addHandler(cap)
    try:
        token = api.token("pia", fresh=True)
        api.client.post(api.url("/products"), json=PRODUCT, headers={"Authorization": f"Bearer {token}"})
        api.client.get(api.url("/entries?kind=product_added&staff_id=S4"), headers=api.headers("casey"))
        api.client.post(api.url("/sessions"), json={"username": "nora", "password": "wrong password x"})
    finally:
        logger.removeHandler(cap)
    records = [json.loads(line) for line in cap.lines]
    assert {r["route"] for r in records} >= {"/v1/registrants/{dea}/products", "/v1/registrants/{dea}/entries",
                                             "/v1/registrants/{dea}/sessions"}
    post = next(r for r in records if r["route"].endswith("/products"))
    assert post["status"] == 201 and post["staff_id"] == api.clinic.pharmacist.staff_id and post["registrant"] == api.dea
    text = "\n".join(cap.lines)
    for secret in (PASSWORD, "wrong password x", token, PRODUCT["name"], "product_added", "nora", "Pia"):
        assert secret not in text


def test_responses_are_not_cached_and_carry_a_request_id(api):
    r = api.client.get(api.url("/products"), headers=api.headers("nora"))
    assert r.headers["cache-control"] == "no-store" and len(r.headers["x-request-id"]) == 16
    assert r.headers["x-content-type-options"] == "nosniff"
