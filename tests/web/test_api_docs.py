"""The API documentation without the internet (issue 21): ``/docs`` was blank offline (Swagger UI
came from a CDN) and ran that CDN's script on the ledger's origin. Now every file is the app's
own, under a Content-Security-Policy that allows this origin's scripts only, and ``/favicon.ico``
answers."""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import Api, build_api


@pytest.fixture
def api(ledger) -> Api:
    return build_api(ledger)


def test_docs_page_names_only_the_apps_own_files(api: Api) -> None:
    r = api.client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "http" not in csp
    page = r.text
    assert "<script>" not in page and "style=" not in page  # no inline script or style
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/docs-assets/") for s in sources), sources
    for s in sources:
        asset = api.client.get(s)
        assert asset.status_code == 200, s
        assert len(asset.content) > 100
    assert api.client.get("/docs-assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert api.client.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert api.client.get("/docs-assets/../app.py").status_code == 404
    missing = api.client.get("/docs-assets/index.html")  # a Swagger UI file that is not served
    assert missing.status_code == 404 and missing.json()["title"] == "Not found"
    assert api.client.get("/redoc").status_code == 404  # FastAPI's CDN page is gone


def test_favicon(api: Api) -> None:
    r = api.client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")


def test_docs_render_offline_under_the_csp(server, context, shots) -> None:
    """In Chromium: Swagger UI draws the API from the app's files alone; no request leaves the
    origin and the console shows no Content-Security-Policy violation."""
    page = context.new_page()
    elsewhere: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(server.base) or req.url.startswith("data:")
            else elsewhere.append(req.url))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(server.base + "/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "csledger" in page.inner_text(".swagger-ui .info .title")
    page.locator(".opblock-summary-path", has_text="/v1/registrants/{dea}/sessions").first.wait_for()
    shots(page, "api-docs", full_page=False)
    assert elsewhere == []
    assert not [e for e in errors if "Content Security Policy" in e], errors
