"""Inventories, receipts and stock on hand."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, status

from api.http import queries
from api.http.deps import IdempotencyKey, LedgerDep, OptionalWitnessDep, actor
from api.http.schemas import (
    PROBLEM_RESPONSES,
    InventoryCreate,
    InventoryRecordedPublic,
    ReceiptCreate,
    StockPublic,
    StockRecordedPublic,
    VialPage,
    VialPublic,
)
from ledger import services
from ledger.domain.commands import (
    InventoryItemInput,
    ReceivedLineInput,
    ReceiveStock,
    TakeInventory,
)
from ledger.domain.errors import NotFound
from ledger.domain.principal import Principal
from ledger.integrity.canonical import format_time
from ledger.storage.stock_reads import record_stock_read

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["stock"], responses=PROBLEM_RESPONSES)


def note_stock_read(request: Request, ledger, who: Principal, what: str) -> None:
    """Record that ``who`` read the book (a blind count lists its counters' reads)."""
    record_stock_read(ledger.engine, who.registrant, who.staff_id, what, format_time(request.app.state.auth.now()))


@router.post("/inventories", status_code=status.HTTP_201_CREATED, response_model=InventoryRecordedPublic,
             name="take_inventory")
def take_inventory(body: InventoryCreate, ledger: LedgerDep, who: Annotated[Principal, actor("take_inventory")],
                   witness: OptionalWitnessDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Record an inventory (21 CFR 1304.11), witnessed by a second person (``Witness-Assertion``,
    required: 422 naming ``witness`` without one). An initial inventory gives every container its
    own identity; a biennial or other one names the vials on the book it found and is compared
    with the book at that instant: the answer names the discrepancies it opened (issue 20)."""
    cmd = TakeInventory(body.inventory_type, body.taken_at, body.occurred_at, items=tuple(
        InventoryItemInput(i.ndc, i.lot, i.expiry, i.sealed, i.ml, i.containers, i.vial_id,
                           None if i.first_punctured_on is None else str(i.first_punctured_on),
                           i.first_puncture_estimated) for i in body.items),
        late_reason=body.late_reason, reason=body.reason)
    return services.take_inventory(ledger, who, cmd, idempotency_key=idempotency_key,
                                   witness=witness.principal if witness is not None else None)


@router.post("/receipts", status_code=status.HTTP_201_CREATED, response_model=StockRecordedPublic,
             name="receive_stock")
def receive_stock(body: ReceiptCreate, ledger: LedgerDep, who: Annotated[Principal, actor("receive_stock")],
                  idempotency_key: IdempotencyKey = None) -> dict:
    """Record a receipt on a supplier's invoice (21 CFR 1304.22(c)); the receiver signs ``received``."""
    cmd = ReceiveStock(body.supplier_id, body.invoice_number, body.occurred_at,
                       tuple(ReceivedLineInput(ln.ndc, ln.containers, ln.lot, ln.expiry, tuple(ln.scans), ln.gtin,
                                               tuple(ln.serials), ln.invoiced_containers, ln.quarantine,
                                               packages=ln.packages, invoiced_packages=ln.invoiced_packages)
                             for ln in body.lines),
                       late_reason=body.late_reason, notes=body.notes, dscsa_reference=body.dscsa_reference,
                       documents=tuple(body.documents))
    return services.receive_stock(ledger, who, cmd, idempotency_key=idempotency_key)


#: Every state a vial can be in: a typo in the filter is a 422, not an empty page.
VialState = Literal["sealed", "open", "quarantined", "empty", "lost", "destroyed", "transferred", "returned"]


@router.get("/vials", response_model=VialPage, name="list_vials")
def list_vials(request: Request, ledger: LedgerDep, who: Annotated[Principal, actor("list_vials")],
               state: Annotated[VialState | None, Query()] = None,
               ndc_key: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]{11,12}$")] = None,
               lot: Annotated[str | None, Query(max_length=64)] = None,
               cursor: Annotated[str | None, Query(max_length=200)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> VialPage:
    """Vials one by one (state, mL and mg left), filtered by state, product or lot."""
    note_stock_read(request, ledger, who, "GET /vials")
    items, nxt = queries.vials(ledger, who.registrant, state=state, ndc_key=ndc_key, lot=lot, cursor=cursor,
                               limit=limit)
    return VialPage(items=[VialPublic(**i) for i in items], next_cursor=nxt)


@router.get("/vials/{vial_id}", response_model=VialPublic, name="get_vial")
def get_vial(request: Request, vial_id: Annotated[str, Path(max_length=128)], ledger: LedgerDep,
             who: Annotated[Principal, actor("get_vial")]) -> dict:
    """One vial."""
    note_stock_read(request, ledger, who, "GET /vials/{vial_id}")
    v = queries.vial(ledger, who.registrant, vial_id)
    if v is None:
        raise NotFound(f"no vial {vial_id[:40]!r} at {who.registrant}", field="vial_id")
    return v


@router.get("/stock", response_model=StockPublic, name="stock_on_hand")
def stock_on_hand(request: Request, ledger: LedgerDep, who: Annotated[Principal, actor("stock_on_hand")]) -> dict:
    """Stock on hand per product and lot, in containers, mL and mg, and mg per DEA drug code."""
    note_stock_read(request, ledger, who, "GET /stock")
    return queries.stock(ledger, who.registrant)
