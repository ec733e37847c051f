"""HTTP endpoints of the verifiable ledger (the integrity contracts of docs/architecture.md, under ``/v1``).

Public: the signed checkpoint with its cosignatures, the verifier keys, inclusion and
consistency proofs. One entry's canonical bytes (``GET .../entries/{seq}``) are role-gated and
served by ``api/http/routes_records`` (issue 5); with them and these proofs a client checks an entry.

Every proof is built from the stored perfect Merkle nodes: O(log n) reads, never a scan. Bad
sizes are the caller's error (422), sizes the log has not reached are 404, both problem+json
through the app's ``LedgerError`` handler; nothing here can answer 500 for bad input.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from api.http.schemas import _problem
from ledger.domain.errors import InvalidInput, NotFound
from ledger.integrity import merkle
from ledger.storage.log import (
    log_keys,
    memo_reader,
    signed_checkpoint_with_cosignatures,
    witness_policy,
)
from ledger.storage.store import Ledger, tree_size

#: What these public endpoints may refuse with, for the OpenAPI document (no login, so no 401/403).
INTEGRITY_RESPONSES = {
    404: _problem("Unknown registrant, no signed checkpoint or log key yet, or a tree size the log has not reached"),
    413: _problem("Request body too large"),
    422: _problem("Malformed input: the offending fields are listed"),
}
router = APIRouter(prefix="/v1/registrants/{dea}", tags=["verifiable ledger"], responses=INTEGRITY_RESPONSES)

Dea = Annotated[str, Path(description="The registrant's DEA number.", max_length=9)]
#: A tree size or index: a JSON-safe non-negative integer (larger is a 422, not an overflow).
Size = Annotated[int, Query(ge=0, le=(1 << 53) - 1)]

def _ledger(request: Request) -> Ledger:
    return request.app.state.ledger


def _size_of(conn, dea: str) -> int:
    n = tree_size(conn, dea)
    if n == 0:
        raise NotFound(f"no registrant with DEA number {dea}", field="dea")
    return n


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@router.get("/checkpoint", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "C2SP signed note with cosignatures"}})
def get_checkpoint(dea: Dea, request: Request) -> PlainTextResponse:
    """The latest signed checkpoint (C2SP tlog-checkpoint note) with the witnesses' cosignatures.

    Header ``Csledger-Witnessed: <cosignatures>/<threshold>`` says whether the registrant's
    witness policy is met for this checkpoint.
    """
    with _ledger(request).reading() as conn:
        found = signed_checkpoint_with_cosignatures(conn, dea)
        policy = witness_policy(conn, dea)
    if found is None:
        raise NotFound(f"no signed checkpoint for {dea}", field="dea")
    cp, note = found
    cosigs = max(0, note.decode().count("\n\u2014 ") - 1)
    headers = {"Csledger-Tree-Size": str(cp.tree_size)}
    if policy is not None:
        headers["Csledger-Witnessed"] = f"{cosigs}/{policy.threshold}"
    return PlainTextResponse(note.decode(), headers=headers)


@router.get("/verifier-key", response_class=PlainTextResponse)
def get_verifier_key(dea: Dea, request: Request) -> PlainTextResponse:
    """The log's verifier keys, one per line: current first, retired after."""
    with _ledger(request).reading() as conn:
        keys = log_keys(conn, dea)
    if not keys:
        raise NotFound(f"no log key for {dea}", field="dea")
    return PlainTextResponse("".join(k.verifier_key + "\n" for k in keys))


@router.get("/proofs/inclusion")
def get_inclusion_proof(dea: Dea, request: Request, seq: Size,
                        tree_size: Annotated[int | None, Query(ge=1, le=(1 << 53) - 1)] = None) -> JSONResponse:
    """RFC 9162 inclusion proof of entry ``seq`` in the tree of ``tree_size`` entries (default:
    the latest signed checkpoint's size)."""
    with _ledger(request).reading() as conn:
        n = _size_of(conn, dea)
        if tree_size is None:
            found = signed_checkpoint_with_cosignatures(conn, dea)
            tree_size = found[0].tree_size if found else n
        if tree_size > n:
            raise NotFound(f"the log has {n} entries; no tree of size {tree_size} yet", field="tree_size")
        if seq >= tree_size:
            raise InvalidInput(f"seq {seq} is not below tree_size {tree_size}", field="seq")
        try:
            proof = merkle.inclusion_proof(seq, tree_size, memo_reader(conn, dea))
        except merkle.ProofError as exc:
            raise InvalidInput(str(exc), field="seq") from None
    return JSONResponse({"seq": seq, "tree_size": tree_size, "hashes": _b64(proof)})


@router.get("/proofs/consistency")
def get_consistency_proof(dea: Dea, request: Request, first: Size, second: Size) -> JSONResponse:
    """RFC 9162 consistency proof from the tree of ``first`` entries to that of ``second``."""
    if first < 1:
        raise InvalidInput("a consistency proof needs first >= 1", field="first")
    if first > second:
        raise InvalidInput(f"first ({first}) is larger than second ({second})", field="first")
    with _ledger(request).reading() as conn:
        n = _size_of(conn, dea)
        if second > n:
            raise NotFound(f"the log has {n} entries; no tree of size {second} yet", field="second")
        try:
            proof = merkle.consistency_proof(first, second, memo_reader(conn, dea))
        except merkle.ProofError as exc:
            raise InvalidInput(str(exc), field="first") from None
    return JSONResponse({"first": first, "second": second, "hashes": _b64(proof)})
