"""Documents kept with the records (invoices, Form 41 and 106 copies): stored by SHA-256, so an
entry that names one proves which bytes it meant.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ledger.domain import entries as ev
from ledger.domain.commands import (
    StoreDocument,
)
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal, Role
from ledger.services.common import run, text
from ledger.storage.store import CommandContext, Ledger, raw

DOCUMENT_KEEPERS = frozenset({Role.NURSE, Role.PHARMACIST, Role.MANAGER, Role.COMPLIANCE_OFFICER, Role.ADMINISTRATOR})


DOCUMENT_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/tiff", "text/plain"})


MAX_DOCUMENT_BYTES = 20 * 1024 * 1024

#: How each accepted type begins (its "magic"): a scan labelled PDF must be a PDF, so a document
#: cited by an entry opens as what it claims to be (issue 20).
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
}


def content_matches(media_type: str, content: bytes) -> bool:
    """Whether ``content`` is what ``media_type`` says: the type's leading bytes, or for
    ``text/plain`` UTF-8 text without NUL."""
    if media_type == "text/plain":
        try:
            return b"\x00" not in content and bool(content.decode("utf-8"))
        except UnicodeDecodeError:
            return False
    return content.startswith(_MAGIC.get(media_type, (b"\x00" * 64,)))


def stored_documents(ctx: CommandContext, shas: Any, *, field: str = "documents") -> tuple[str, ...]:
    if not isinstance(shas, list | tuple):
        raise InvalidInput("must be a list of SHA-256 hex digests", field=field)
    return tuple(stored_document(ctx, s, field=f"{field}[{i}]") for i, s in enumerate(shas))


def stored_document(ctx: CommandContext, sha: Any, *, field: str) -> str:
    """One stored document's SHA-256, checked to be a digest of a document stored here."""
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise InvalidInput("must be a SHA-256 hex digest (64 lowercase hex digits)", field=field)
    if ctx.view.get("documents", (ctx.registrant, sha)) is None:
        raise NotFound(f"no stored document {sha[:12]}...; store it first", field=field)
    return sha


def store_document(ledger: Ledger, principal: Principal, cmd: StoreDocument, *, idempotency_key: str | None = None) -> dict:
    """Keep a document (invoice scan, police report, Form 106 confirmation, signed inventory)
    content-addressed: the bytes once by SHA-256, the entry holding the digest."""
    if not isinstance(cmd.content, bytes) or not cmd.content:
        raise InvalidInput("must be the document's bytes", field="content")
    if len(cmd.content) > MAX_DOCUMENT_BYTES:
        raise InvalidInput(f"must be at most {MAX_DOCUMENT_BYTES} bytes", field="content")
    if cmd.media_type not in DOCUMENT_TYPES:
        raise InvalidInput(f"must be one of {', '.join(sorted(DOCUMENT_TYPES))}", field="media_type")
    if not content_matches(cmd.media_type, cmd.content):
        raise InvalidInput(f"the content is not {cmd.media_type} (it does not begin as one); send the file's "
                           "true type", field="media_type")
    title = text(cmd.title, field="title", max_len=200)
    sha = hashlib.sha256(cmd.content).hexdigest()

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=DOCUMENT_KEEPERS)
        if ctx.view.get("documents", (ctx.registrant, sha)) is not None:
            raise Conflict(f"this document is already stored ({sha[:12]}...)", field="content")
        ctx.view.raw.run(ctx.conn, "INSERT INTO document_blobs (sha256, content, size_bytes) VALUES (:h, :c, :n) "
                                   "ON CONFLICT (sha256) DO NOTHING", {"h": sha, "c": cmd.content, "n": len(cmd.content)})
        ctx.append(ev.DocumentStored(sha256=sha, media_type=cmd.media_type, title=title, size_bytes=len(cmd.content)),
                   signatures=[sig], occurred_at=ctx.now)
        return {"sha256": sha}

    request = {"type": "StoreDocument", "sha256": sha, "media_type": cmd.media_type, "title": title}
    return run(ledger, principal, "store_document", cmd, build, idempotency_key, request)


def read_document(ledger: Ledger, registrant: str, sha256: str) -> bytes:
    """A stored document's bytes, checked against their digest."""
    with ledger.reading() as conn:
        r = raw(conn)
        if r.one(conn, "SELECT sha256 FROM documents WHERE registrant = :r AND sha256 = :h",
                 {"r": registrant, "h": sha256}) is None:
            raise NotFound(f"no document {sha256[:12]}... at {registrant}", field="sha256")
        row = r.one(conn, "SELECT content FROM document_blobs WHERE sha256 = :h", {"h": sha256})
    content = bytes(row["content"])
    if hashlib.sha256(content).hexdigest() != sha256:
        from ledger.domain.errors import IntegrityFailure

        raise IntegrityFailure(f"document {sha256[:12]}... does not hash to its digest")
    return content


def document_media_type(ledger: Ledger, registrant: str, sha256: str) -> str:
    """The media type a stored document was kept as."""
    with ledger.reading() as conn:
        row = raw(conn).one(conn, "SELECT media_type FROM documents WHERE registrant = :r AND sha256 = :h",
                            {"r": registrant, "h": sha256})
    if row is None:
        raise NotFound(f"no document {sha256[:12]}... at {registrant}", field="sha256")
    return row["media_type"]
