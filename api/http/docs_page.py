"""The API's documentation pages, served entirely by the app (issue 21).

FastAPI's default ``/docs`` loads Swagger UI from a CDN and starts it with an inline script:
blank without internet, and a third party's script running on the ledger's origin. Here the
Swagger UI files come from the ``fastapi-offline`` package (Swagger UI 5, which reads OpenAPI
3.1), the starter script is the app's own file, and the page carries a Content-Security-Policy
that allows scripts and styles from this origin only. ``/favicon.ico`` answers too, so no page
logs a 404 for it.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

from ledger.domain.errors import NotFound

HERE = Path(__file__).parent / "docs_static"
#: Swagger UI's files as the fastapi-offline package ships them (swagger-ui-dist 5.x).
SWAGGER = Path(str(resources.files("fastapi_offline") / "static"))
ASSETS = {  # name -> (directory, media type): only these files are served
    "swagger-ui-bundle.js": (SWAGGER, "text/javascript"),
    "swagger-ui.css": (SWAGGER, "text/css"),
    "swagger-init.js": (HERE, "text/javascript"),
    "favicon.png": (HERE, "image/png"),  # csledger's own: a vial
}
ASSET_PREFIX = "/docs-assets/"

#: Swagger UI draws with inline style attributes set from script (allowed: CSSOM) and loads no
#: fonts or images from elsewhere; "Try it out" calls this origin's API only.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'none'")


def _page(title: str, openapi_url: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" type="image/png" href="{ASSET_PREFIX}favicon.png">
<link rel="stylesheet" href="{ASSET_PREFIX}swagger-ui.css">
</head>
<body data-openapi-url="{html.escape(openapi_url)}">
<div id="swagger-ui"></div>
<script src="{ASSET_PREFIX}swagger-ui-bundle.js"></script>
<script src="{ASSET_PREFIX}swagger-init.js"></script>
</body>
</html>
"""


def router_for(app: FastAPI) -> APIRouter:
    """``/docs`` (Swagger UI), its files, and ``/favicon.ico``, for ``app`` (created with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages do not exist)."""
    router = APIRouter(include_in_schema=False)
    headers = {"Content-Security-Policy": DOCS_CSP, "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
               "X-Content-Type-Options": "nosniff"}

    @router.get("/docs")
    def docs() -> HTMLResponse:
        return HTMLResponse(_page(f"{app.title} API", app.openapi_url or "/openapi.json"), headers=headers)

    @router.get(ASSET_PREFIX + "{name}")
    def asset(name: str) -> Response:
        if name not in ASSETS:
            raise NotFound(f"no documentation file {name[:40]!r}", field="name")
        folder, media = ASSETS[name]
        return FileResponse(folder / name, media_type=media,
                            headers={"Cache-Control": "max-age=86400", "X-Content-Type-Options": "nosniff"})

    @router.get("/favicon.ico")
    def favicon() -> Response:
        return FileResponse(HERE / "favicon.png", media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    return router
