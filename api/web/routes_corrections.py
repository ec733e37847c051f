"""Correct an entry on the pages (issue 21): ``/ui/<DEA>/corrections/new``.

The same service and command as ``POST /corrections`` (``services.correct_entry``,
``CorrectEntry``): a later, signed entry that names the entry it corrects, says why, and may carry
compensating mL for the vials that entry moved. The corrected entry is never changed.

The entry is picked from the recent entries the person may see (their own; any for managers,
compliance officers and auditors, as the entry page shows them), or typed by its number and shown
back with its plain summary before anything is saved. The vials it moved are offered as lines
(add or remove mL); a line that removes stock needs a manager or pharmacist who is not the author
to approve it on this screen (witness.py, prefix ``approver``), asked once the rest is right.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.web.core import Page, PageRoute, error_of, new_form_key, open_page
from api.web.forms import Errors, Form, read_form, whole_number
from api.web.gs1 import short_vial_labels
from api.web.readable import clock_time, kind_words, local_time
from api.web.routes_clinic import Dea
from api.web.routes_preparations import again
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain.commands import CorrectEntry, CorrectionLineInput
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.domain.quantities import parse_volume
from ledger.integrity.canonical import decode
from ledger.services.corrections import vials_touched
from ledger.storage.store import entries_t

router = APIRouter(route_class=PageRoute, include_in_schema=False)

#: How many recent entries the pick list offers (older ones: type the entry's number).
RECENT = 30
#: Roles that see every entry (the entry page's rule); others see the entries they signed.
SEE_ALL = frozenset({"manager", "compliance_officer", "auditor"})
DIRECTIONS = [("add", "Add back (put mL back on the vial)"), ("remove", "Remove (take mL off the vial)")]
FIELDS = ("corrects_seq", "seq_typed", "reason", "form_key")


def _visible(page: Page, obj: dict[str, Any]) -> bool:
    return bool(page.roles & SEE_ALL) or any(
        s.get("staff_id") == page.principal.staff_id for s in obj.get("signatures", []))


def _when(obj: dict[str, Any]) -> str:
    return obj.get("occurred_at") or obj.get("recorded_at") or ""


def summary(page: Page, obj: dict[str, Any]) -> dict[str, Any]:
    """An entry in plain words: its number, kind, local time, signers and the vials it moved
    (for an entry this person may not read, its number, kind and time only)."""
    today = page.local_now().date()
    head = f"#{obj['seq']} {kind_words(obj['kind'])}, {clock_time(_when(obj), page.tz, today)}"
    if not _visible(page, obj):
        return {"seq": obj["seq"], "text": head + " (its details are shown to its signers and managers)",
                "vials": [], "visible": False}
    signers = ", ".join(dict.fromkeys(s.get("printed_name", "") for s in obj.get("signatures", [])))
    touched = vials_touched(None, obj)  # type: ignore[arg-type]  # reads the entry only
    labels = short_vial_labels([{"vial_id": v} for v in touched])
    vials = [{"vial_id": v, "label": labels[v], "ml": str(ml)} for v, ml in touched.items()]
    moved = "; ".join(f"{v['label']} {v['ml']} mL" for v in vials)
    text = head + (f", by {signers}" if signers else "") + (f": {moved}" if moved else "")
    return {"seq": obj["seq"], "text": text, "vials": vials, "visible": True}


def recent_entries(page: Page) -> list[dict[str, Any]]:
    """The newest entries this person may see, newest first, as plain summaries."""
    ledger = page.request.app.state.ledger
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.canonical).where(entries_t.c.registrant == page.dea)
                         .order_by(entries_t.c.seq.desc()).limit(RECENT * 10)).scalars().all()
    out = []
    for r in rows:
        obj = decode(bytes(r))
        if _visible(page, obj):
            out.append(summary(page, obj))
            if len(out) == RECENT:
                break
    return out


def _entry(page: Page, seq: int) -> dict[str, Any] | None:
    e = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    return json.loads(e["canonical"]) if e else None


def confirmation(page: Page, seq: int) -> dict[str, Any] | None:
    """What the correction ``seq`` recorded, in the clinic's words (None unless it is a
    correction this person signed)."""
    obj = _entry(page, seq)
    if not obj or obj.get("kind") != "entry_corrected" or not any(
            s.get("staff_id") == page.principal.staff_id for s in obj.get("signatures", [])):
        return None
    target = _entry(page, obj["corrects_seq"]) or {}
    today = page.local_now().date()
    by = next((s["printed_name"] for s in obj["signatures"] if s.get("meaning") == "performed"), "")
    approver = next((s["printed_name"] for s in obj["signatures"] if s.get("meaning") == "approved"), None)
    labels = short_vial_labels([{"vial_id": ln["vial_id"]} for ln in obj.get("lines", [])])
    lines = [f"{'added back' if ln['direction'] == 'add' else 'removed'} {ln['ml']} mL "
             f"{'to' if ln['direction'] == 'add' else 'from'} {labels[ln['vial_id']]}" for ln in obj.get("lines", [])]
    return {"seq": seq, "corrects": obj["corrects_seq"],
            "headline": f"Correction of entry #{obj['corrects_seq']} ({kind_words(obj['corrects_kind'])}"
                        + (f", {local_time(_when(target), page.tz)}" if target else "") + ") recorded by "
                        + by + (f", approved by {approver}" if approver else "")
                        + f" at {clock_time(obj['recorded_at'], page.tz, today)}",
            "reason": obj["reason"], "lines": "; ".join(lines) if lines else "no stock moved"}


def _fresh(page: Page) -> dict[str, Any]:
    return {"form_key": new_form_key()}


def _page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
          result: dict | None = None, notes: dict | None = None) -> Response:
    values = values or _fresh(page)
    chosen = None
    seq = whole_number(str(values.get("corrects_seq", "")).strip())
    if seq is not None:
        obj = _entry(page, seq)
        chosen = summary(page, obj) if obj else None
    recent = recent_entries(page)
    known = [*FIELDS, "lines", "approver_username", "approver_password", "approver_totp"]
    if chosen:
        known += [f"lines-{i}-{k}" for i in range(len(chosen["vials"])) for k in ("direction", "ml")]
    return page.render("corrections_new.html", status=status, active="tasks", values=values, errors=errors or Errors(),
                       recent=recent, chosen=chosen, in_recent=any(r["seq"] == seq for r in recent),
                       directions=DIRECTIONS, known=known, result=result, notes=notes or {})


@router.get("/ui/{dea}/corrections/new", name="web_correction")
async def correction_form(request: Request, dea: Dea,
                          saved: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                          entry: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> Response:
    """The correction form; ``entry`` (a number) picks the entry to correct, ``saved`` shows the
    correction just recorded."""
    page = await open_page(request, dea, "corrections")
    result = await run_in_threadpool(confirmation, page, saved) if saved is not None else None
    values = {**_fresh(page), **({"corrects_seq": str(entry)} if entry is not None else {})}
    return await run_in_threadpool(_page, page, values=values, result=result)


def _record(page: Page, form: Form) -> Response:
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.services import request_fields

    values: dict[str, Any] = {k: form.get(k, "") for k in FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "approver")
    errors = Errors()
    if form.get("action") == "show":
        # the number typed, shown back with its summary (nothing is recorded)
        seq = whole_number(values["seq_typed"].strip())
        if seq is None:
            errors.add("seq_typed", "type the entry's number (digits)")
        elif _entry(page, seq) is None:
            errors.add("seq_typed", f"there is no entry #{seq} here")
        else:
            values["corrects_seq"] = str(seq)
        return _page(page, values=values, errors=errors, status=422 if errors else 200)
    if (done := again(page, values["form_key"], "correct_entry", "corrections/new")) is not None:
        return done
    seq = whole_number(values["corrects_seq"].strip())
    obj = _entry(page, seq) if seq is not None else None
    if obj is None:
        errors.add("corrects_seq", "pick the entry to correct, or type its number and press Show entry")
    if not values["reason"].strip():
        errors.add("reason", "say what was wrong and what is right (e.g. 0.20 mL typed as 2.00 mL)")
    vials = summary(page, obj)["vials"] if obj else []
    lines, used = [], []
    for i, v in enumerate(vials):
        values[f"lines-{i}-direction"] = d = form.text(f"lines-{i}-direction")
        values[f"lines-{i}-ml"] = ml = form.text(f"lines-{i}-ml")
        if not d:
            if ml:
                errors.add(f"lines-{i}-direction", "choose add or remove for this vial, or clear its mL")
            continue
        if form.get(f"lines-{i}-vial", "") != v["vial_id"]:
            errors.add(f"lines-{i}-direction", "this row's vial changed; pick the entry again")
            continue
        if d not in dict(DIRECTIONS):
            errors.add(f"lines-{i}-direction", "choose add or remove")
            continue
        try:
            parse_volume(ml, field=f"lines-{i}-ml")
        except InvalidInput as exc:
            errors.add(f"lines-{i}-ml", exc.reason if ml else "enter the mL to correct")
            continue
        used.append(i)
        lines.append(CorrectionLineInput(v["vial_id"], d, ml))
    removes = any(ln.direction == "remove" for ln in lines)
    if removes and not form.text("approver_username"):
        errors.add("approver_username", "a line removes stock: a manager or pharmacist approves it with their own login")
    if errors:
        notes = {}
        if form.get("approver_password", "") and "approver_password" not in errors:
            notes["approver_password"] = ("The approver's password was not checked yet (nothing was recorded): fix "
                                          "what is marked, then the approver types their password again.")
        return _page(page, values=values, errors=errors, status=422, notes=notes)
    cmd = CorrectEntry(seq, values["reason"].strip(), tuple(lines))
    approver = None
    if removes:
        approver = witness_from_form(page, form, request_fields(cmd), errors, prefix="approver",
                                     idempotency_key=values["form_key"])
        if approver is None:
            return _page(page, values=values, errors=errors, status=422)
    try:
        res = services.correct_entry(page.request.app.state.ledger, page.principal, cmd,
                                     approver=approver.principal if approver else None,
                                     idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)
        if status is not None:
            return _page(page, values=values, errors=errors, status=status)
        name, msg = error_of(exc, {"approver": "approver_username"})
        if name.startswith("lines-"):
            k = int(name.split("-")[1])
            row = used[k] if k < len(used) else 0
            name = f"lines-{row}-ml" if name.endswith("-ml") else f"lines-{row}-direction"
        errors.add(name, msg)
        return _page(page, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}corrections/new?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/corrections/new", name="web_correction_post")
async def record_correction(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "corrections")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_record, page, form)

