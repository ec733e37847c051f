"""Documents kept with the records (issue 20): invoice scans, police reports, DEA notices and
Form 106 confirmations, signed inventories.

``POST .../documents`` takes the file itself as the request body (its ``Content-Type`` one of the
accepted types, its title in ``Document-Title``, percent-encoded UTF-8), read as a stream and
refused with 413 as soon as it passes the limit, so a large upload is never held whole before it
is refused. The document is stored by SHA-256; entries cite that digest (``documents``), and
``GET .../documents/{sha256}`` gives the bytes back, checked against it. The title stays out of
the URL: it may name a person.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from fastapi import APIRouter, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.http.deps import IdempotencyKey, LedgerDep, actor
from api.http.problems import PayloadTooLarge
from api.http.schemas import PROBLEM_RESPONSES, CommandResultPublic
from ledger import services
from ledger.domain.commands import StoreDocument
from ledger.domain.errors import InvalidInput
from ledger.domain.principal import Principal
from ledger.services.documents import DOCUMENT_TYPES, MAX_DOCUMENT_BYTES

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["record"], responses=PROBLEM_RESPONSES)
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="The document's SHA-256, lowercase hex.")]


class DocumentStoredPublic(CommandResultPublic):
    sha256: str


_BODY = {"required": True, "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                       for t in sorted(DOCUMENT_TYPES)}}


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"the document is {declared} bytes; at most {MAX_DOCUMENT_BYTES} are kept")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise PayloadTooLarge(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
        parts.append(chunk)
    return b"".join(parts)


@router.post("/documents", status_code=201, response_model=DocumentStoredPublic, name="store_document",
             openapi_extra={"requestBody": _BODY})
async def store_document(request: Request, ledger: LedgerDep, who: Annotated[Principal, actor("store_document")],
                         document_title: Annotated[str, Header(min_length=1, max_length=600, description=(
                             "What the document is (\"Invoice GMS-0042\"), percent-encoded UTF-8."))],
                         content_type: Annotated[str, Header(max_length=100)],
                         idempotency_key: IdempotencyKey = None) -> dict:
    """Store a document (the request body is the file): PDF, PNG, JPEG, TIFF or plain text, at
    most 20 MB, and its bytes must be of the type named. Answers its SHA-256, which entries cite
    in their ``documents`` list."""
    media = content_type.split(";")[0].strip().lower()
    if media not in DOCUMENT_TYPES:
        raise InvalidInput(f"must be one of {', '.join(sorted(DOCUMENT_TYPES))}, not {media[:40]!r}",
                           field="Content-Type")
    try:
        title = unquote(document_title, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput("must be percent-encoded UTF-8", field="Document-Title") from None
    content = await _read_limited(request)
    if not content:
        raise InvalidInput("the body is empty: send the document's bytes", field="body")
    cmd = StoreDocument(content=content, media_type=media, title=title)
    try:
        return await run_in_threadpool(services.store_document, ledger, who, cmd, idempotency_key=idempotency_key)
    except InvalidInput as exc:
        if exc.field == "media_type":  # the route's name for it is the header
            raise InvalidInput(exc.reason, field="Content-Type") from None
        if exc.field == "title":
            raise InvalidInput(exc.reason, field="Document-Title") from None
        raise


@router.get("/documents/{sha256}", name="get_document",
            responses={200: {"description": "The document's bytes, of its stored type.",
                             "content": {t: {} for t in sorted(DOCUMENT_TYPES)}}})
def get_document(sha256: Sha256, ledger: LedgerDep, who: Annotated[Principal, actor("get_document")]) -> Response:
    """A stored document, checked against its digest before it is sent."""
    content = services.read_document(ledger, who.registrant, sha256)
    media = services.document_media_type(ledger, who.registrant, sha256)
    return Response(content, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{sha256[:16]}"', "ETag": f'"{sha256}"'})
