"""The record itself: entries (filtered, paged), one entry's canonical bytes, the patient access log."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.http import queries
from api.http.deps import AuthDep, LedgerDep, actor
from api.http.schemas import (
    PROBLEM_RESPONSES,
    EntryCanonicalPublic,
    EntryPage,
    PatientAccessPage,
    PatientAccessPublic,
    When,
)
from ledger.domain.errors import NotFound
from ledger.domain.principal import Principal
from ledger.integrity.canonical import format_time

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["record"], responses=PROBLEM_RESPONSES)


@router.get("/entries", response_model=EntryPage, name="list_entries")
def list_entries(ledger: LedgerDep, who: Annotated[Principal, actor("list_entries")],
             kind: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+$")] = None,
             occurred_from: Annotated[When | None, Query(description="Inclusive.")] = None,
             occurred_to: Annotated[When | None, Query(description="Exclusive.")] = None,
             vial_id: Annotated[str | None, Query(max_length=128)] = None,
             staff_id: Annotated[str | None, Query(max_length=64)] = None,
             patient_id: Annotated[str | None, Query(max_length=32, description="A patient id (never a name).")] = None,
             cursor: Annotated[str | None, Query(max_length=200)] = None,
             limit: Annotated[int, Query(ge=1, le=500)] = 100) -> EntryPage:
    """Entries in sequence order, filtered by kind, period (when the event happened), vial or
    staff member (a signer or the subject); ``next_cursor`` pages on."""
    f = queries.EntryFilter(kind=kind, vial_id=vial_id, staff_id=staff_id, patient_id=patient_id,
                            occurred_from=format_time(occurred_from) if occurred_from else None,
                            occurred_to=format_time(occurred_to) if occurred_to else None)
    items, nxt = queries.entries(ledger, who.registrant, f, cursor=cursor, limit=limit)
    return EntryPage(items=items, next_cursor=nxt)


@router.get("/entries/{seq}", response_model=EntryCanonicalPublic, name="get_entry")
def get_entry(seq: Annotated[int, Path(ge=0, le=2**62)], ledger: LedgerDep,
          who: Annotated[Principal, actor("get_entry")]) -> dict:
    """One entry as it was hashed: its leaf hash and canonical JSON text."""
    e = queries.entry(ledger, who.registrant, seq)
    if e is None:
        raise NotFound(f"no entry {seq} at {who.registrant}", field="seq")
    return e


@router.get("/patient-access-log", response_model=PatientAccessPage, name="patient_access_log")
def patient_access_log(auth: AuthDep, who: Annotated[Principal, actor("patient_access_log")],
                   cursor: Annotated[str | None, Query(max_length=200)] = None,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100) -> PatientAccessPage:
    """Who read which patient's identifying data, when (append-only; for compliance). A report
    that decrypted many patients' names is one row: ``patient_id`` ``*``, the ``report`` and
    every patient it included in ``patient_ids``."""
    # A cursor that is not one this list gave out is refused (422), never read as "from the start".
    after = queries.cursor_seq(cursor, "access") or 0
    rows = auth.store.patient_access(who.registrant, after_id=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return PatientAccessPage(items=[_access_row(r) for r in rows],
                         next_cursor=queries.encode_cursor("access", rows[-1]["id"]) if more else None)


def _access_row(r: dict) -> PatientAccessPublic:
    ids = r.get("patient_ids")
    return PatientAccessPublic(**{k: r.get(k) for k in PatientAccessPublic.model_fields if k != "patient_ids"},
                               patient_ids=json.loads(ids) if ids else None)
