"""Stored documents on the pages (issue 20): an entry that cites an invoice scan, a police report,
DEA's Form 106 confirmation or a signed inventory links to it, and this route hands over its bytes,
checked against their SHA-256 first (``services.read_document``), to the roles that read documents
over the API (``get_document``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.web.core import DEA_PATTERN, PageRoute, open_page
from ledger import services

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]
Sha256 = Annotated[str, Path(pattern="^[0-9a-f]{64}$")]


@router.get("/ui/{dea}/documents/{sha256}", name="web_document")
async def document(request: Request, dea: Dea, sha256: Sha256) -> Response:
    """A stored document, as a download (never rendered on the pages' origin: a stored PDF or
    image is the clinic's paper, not the app's content)."""
    await open_page(request, dea, "documents")
    ledger = request.app.state.ledger
    content = await run_in_threadpool(services.read_document, ledger, dea, sha256)
    media = await run_in_threadpool(services.document_media_type, ledger, dea, sha256)
    return Response(content, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{sha256[:16]}"', "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store"})
