"""Downtime backfill and document upload on the pages (issue 21).

"When the server is down or refuses appends, the clinic works on paper": the printable paper
logs are ``routes_downtime``; this module records what the paper holds afterwards.

- ``/ui/{dea}/documents/new``: upload a document (a scanned invoice, a signed paper sheet), the
  API's ``store_document`` task through the same service, the same media types (the file must
  begin as its type says) and the same 20 MB limit; the confirmation gives its SHA-256 and links
  ``/ui/{dea}/documents/{sha256}``.
- ``/ui/{dea}/backfill``: upload the scanned downtime sheet (or pick one stored already), then
  record from it the infusions (``administer_dose``, with waste and witness) and the later wastes
  (``record_waste``) the sheet lists, each at its paper time, as a late entry with its reason
  (prefilled, editable) and citing the sheet (``documents``). The late-entry rules are the
  service's: past the policy's limit a reason is required, and the late-entry alert follows.

The upload forms are ``multipart/form-data`` (a file), read here as a bounded stream: the HTTP
middleware hands these two paths over unread (``api.http.middleware._STREAMED``), as it does the
API's document upload, and the file is refused as soon as it passes the limit.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.http.auth import require_role
from api.web import queries
from api.web.core import (
    DEA_PATTERN,
    PAGE_ROLES,
    Page,
    PageRoute,
    error_of,
    new_form_key,
    open_page,
    parse_local_time,
)
from api.web.forms import Errors, Form, read_form
from api.web.infusion_form import draw_error_field, usable_vial_rows
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.services.documents import DOCUMENT_TYPES, MAX_DOCUMENT_BYTES
from ledger.storage.store import projection_tables

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]
Sha = Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")]
Seq = Annotated[int | None, Query(ge=0, le=2**62)]

#: The late reason the backfill forms start with (editable): the paper sheet is why it is late.
LATE_REASON = "Recorded from the downtime paper sheet"
#: The multipart body around the file: its boundaries, headers and the few text fields.
_OVERHEAD = 64 * 1024
#: What the file picker offers, in the clinic's words (the service's types, nothing else).
TYPE_WORDS = {"application/pdf": "PDF", "image/png": "PNG image", "image/jpeg": "JPEG image",
              "image/tiff": "TIFF image", "text/plain": "plain text"}


class TooLarge(InvalidInput):
    """The upload passed the limit while it was read (answered 413, nothing stored)."""

    status = 413


# --- the multipart body ------------------------------------------------------------------------


async def read_upload(request: Request) -> tuple[Form, dict[str, Any] | None]:
    """The upload form's text fields (a ``Form``) and its file (``{"filename", "media_type",
    "content"}``, or None when no file was chosen), parsed by Starlette's form parser
    (python-multipart) from a stream refused (``TooLarge``) as soon as the body passes the
    document limit plus the form around it: a body is never read whole before it is measured."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    ctype = request.headers.get("content-type", "")
    if not re.match(r"^\s*multipart/form-data\s*;.*\bboundary=", ctype, re.I):
        raise InvalidInput("this form sends a file: send it as the page's upload form (multipart/form-data)",
                           field="body")
    limit = MAX_DOCUMENT_BYTES + _OVERHEAD
    too_large = TooLarge(f"the file is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB; scan it at a lower "
                         "resolution or as a PDF", field="file")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    size = 0
    # the request's own stream (a body a route layer already read is served from its cache),
    # counted as it is handed to the parser
    chunks = request.stream()

    async def bounded() -> dict[str, Any]:
        nonlocal size
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        size += len(chunk)
        if size > limit:
            raise too_large
        return {"type": "http.request", "body": chunk, "more_body": True}

    try:
        # one file at most, a few short text fields (the page's): anything else is not this form
        parsed = await Request(request.scope, bounded).form(max_files=1, max_fields=20, max_part_size=4000)
    except MultiPartException as exc:
        raise InvalidInput(f"the form could not be read ({exc.message}); choose the file again and send the form",
                           field="body") from None
    pairs: list[tuple[str, str]] = []
    upload = None
    try:
        for name, value in parsed.multi_items():
            if isinstance(value, UploadFile):
                if name != "file":
                    raise InvalidInput("send one file, in the file field", field="file")
                content = await value.read()
                if value.filename or content:  # the file box left empty sends an empty part
                    upload = {"filename": (value.filename or "")[:200], "content": content,
                              "media_type": (value.content_type or "").split(";")[0].strip().lower()}
                continue
            if "\x00" in value:
                raise InvalidInput(f"the field {name[:40]} must not contain the NUL character", field=name[:40])
            pairs.append((name, value))
    finally:
        await parsed.close()
    return Form(pairs), upload


def _store(page: Page, form: Form, upload: dict[str, Any] | None, errors: Errors) -> str | None:
    """Every mistake of the upload at once (title, file, its type), then the store_document
    service, the same as the API's; the document's SHA-256, or None with the errors beside their
    fields. A document already stored here is that document (the same bytes, the same digest)."""
    from ledger.domain.commands import StoreDocument
    from ledger.services.documents import content_matches

    title = form.text("title")
    if not title:
        errors.add("title", "say what the document is (\"Downtime sheet, infusion chair 2, Dec 5\")")
    elif len(title) > 200:
        errors.add("title", "must be at most 200 characters")
    media = ""
    if upload is None:
        errors.add("file", "choose the scanned file")
    elif not upload["content"]:
        errors.add("file", "the file is empty; scan it again")
    elif len(upload["content"]) > MAX_DOCUMENT_BYTES:
        errors.add("file", f"the file is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB; scan it at a lower "
                           "resolution or as a PDF")
    else:
        media = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}.get(upload["media_type"], upload["media_type"])
        if media in ("", "application/octet-stream"):
            # a browser that names no type for the file (some do for .tif): the type its bytes
            # begin as, among the accepted ones (the service checks the bytes again)
            media = next((t for t in sorted(DOCUMENT_TYPES) if t != "text/plain" and content_matches(t, upload["content"])),
                         media)
        if media not in DOCUMENT_TYPES:
            errors.add("file", "must be a PDF, PNG, JPEG or TIFF scan (or plain text), not "
                               f"{(media or 'a file of unknown type')[:40]}")
        elif not content_matches(media, upload["content"]):
            errors.add("file", f"the file is not the {TYPE_WORDS[media]} it is named as; scan or save it again")
    if errors:
        return None
    import hashlib

    sha = hashlib.sha256(upload["content"]).hexdigest()
    try:
        res = services.store_document(page.request.app.state.ledger, page.principal,
                                      StoreDocument(content=upload["content"], media_type=media, title=title),
                                      idempotency_key=form.text("form_key") or None)
    except LedgerError as exc:
        if exc.status == 409 and exc.field == "content" and document(page, sha) is not None:
            return sha  # stored before (by anyone here): the same bytes, so the same document
        name, msg = error_of(exc, {"content": "file", "media_type": "file"})
        errors.add(name, msg)
        return None
    return res["sha256"]


def document(page: Page, sha: str | None) -> dict[str, Any] | None:
    """A document stored at this location (title, type, size, the entry that stored it and when,
    in local time), or None."""
    if not sha:
        return None
    t = projection_tables["documents"]
    with page.request.app.state.ledger.reading() as c:
        r = c.execute(sa.select(t).where(t.c.registrant == page.dea, t.c.sha256 == sha)).mappings().first()
    if r is None:
        return None
    d = dict(r)
    d["kind_words"] = TYPE_WORDS.get(d["media_type"], d["media_type"])
    d["size_words"] = f"{Decimal(d['size_bytes']) / 1024:.0f} KB" if d["size_bytes"] >= 1024 else f"{d['size_bytes']} bytes"
    d["stored"] = _entry_time(page, d["seq"])
    return d


def _entry(page: Page, seq: int) -> dict[str, Any] | None:
    e = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    return json.loads(e["canonical"]) if e else None


def _entry_time(page: Page, seq: int) -> str:
    from api.web.readable import clock_time

    e = _entry(page, seq) or {}
    return clock_time(e.get("recorded_at") or e.get("occurred_at") or "", page.tz, page.local_now().date())


def recent_documents(page: Page, limit: int = 20) -> list[dict[str, Any]]:
    """The documents stored here, newest first, to pick the sheet from (titles only, for the
    roles that read documents)."""
    t = projection_tables["documents"]
    with page.request.app.state.ledger.reading() as c:
        rows = c.execute(sa.select(t.c.sha256, t.c.title, t.c.media_type, t.c.seq).where(t.c.registrant == page.dea)
                         .order_by(t.c.seq.desc()).limit(limit)).mappings().all()
    return [{**dict(r), "kind_words": TYPE_WORDS.get(r["media_type"], r["media_type"])} for r in rows]


# --- upload a document -------------------------------------------------------------------------


def _document_page(page: Page, *, values: dict | None = None, errors: Errors | None = None, status: int = 200,
                   stored: str | None = None) -> Response:
    return page.render("backfill_document.html", status=status, active="tasks",
                       values=values or {"form_key": new_form_key()}, errors=errors or Errors(),
                       stored=document(page, stored), types=", ".join(TYPE_WORDS.values()),
                       max_mb=MAX_DOCUMENT_BYTES // (1024 * 1024), may_read=page.may("documents"))


@router.get("/ui/{dea}/documents/new", name="web_document_new")
async def document_form(request: Request, dea: Dea, stored: Sha = None) -> Response:
    """Upload a document; ``stored`` (a SHA-256, never a title) shows the one just stored."""
    page = await open_page(request, dea, "document_upload")
    return await run_in_threadpool(_document_page, page, stored=stored)


async def _upload(request: Request, page: Page) -> tuple[Form, dict[str, Any] | None, Errors, int]:
    """The upload form read and its CSRF token checked; a body too large or unreadable comes back
    as an error beside the file (nothing stored)."""
    errors = Errors()
    try:
        form, upload = await read_upload(request)
    except InvalidInput as exc:
        # the token could not be read either: this answer carries no values and stores nothing
        errors.add("file" if exc.field in ("file", "body") else exc.field, exc.reason)
        return Form([]), None, errors, exc.status
    check_session_csrf(request, form, page.token)
    return form, upload, errors, 200


@router.post("/ui/{dea}/documents/new", name="web_document_new_post")
async def store_document(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "document_upload")
    form, upload, errors, status = await _upload(request, page)
    values = {"title": form.get("title", ""), "form_key": form.text("form_key") or new_form_key()}
    if errors:
        return await run_in_threadpool(lambda: _document_page(page, values=values, errors=errors, status=status))
    sha = await run_in_threadpool(_store, page, form, upload, errors)
    if sha is None:
        return await run_in_threadpool(lambda: _document_page(page, values=values, errors=errors, status=422))
    return RedirectResponse(f"{location_path(dea)}documents/new?stored={sha}", status_code=303)


# --- backfill from the downtime paper ------------------------------------------------------------

#: The later-waste form's inputs (prefixed: the infusion form shares the page).
WASTE_FIELDS = ("lw_administration_id", "lw_ml", "lw_method", "lw_occurred_at", "lw_late_reason", "form_key")
WASTE_ERROR_NAMES = {"administration_id": "lw_administration_id", "ml": "lw_ml", "method": "lw_method",
                     "occurred_at": "lw_occurred_at", "late_reason": "lw_late_reason",
                     "witness": "waste_witness_username", "documents": "sheet", "documents[0]": "sheet"}


def open_administrations(page: Page) -> list[dict[str, Any]]:
    """The infusions not yet reconciled (drawn > given + wasted), to pick the one a later waste
    on the sheet belongs to: chart number, start in local time, mL still unaccounted for."""
    from api.web.readable import clock_time

    rows = queries.unreconciled_administrations(page.request.app.state.ledger, page.dea, limit=200)
    today = page.local_now().date()
    return [{"administration_id": r["administration_id"], "patient_id": r["patient_id"],
             "open_ml": r["ml_drawn"] - r["ml_given"] - r["ml_wasted"],
             "when": clock_time(r["occurred_at"], page.tz, today)} for r in rows]


def _late_limit(page: Page) -> timedelta:
    from ledger.services import stock

    return timedelta(hours=int(stock.policy(page.request.app.state.ledger, page.dea)["late_entry_limit_hours"]))


def _check_late(page: Page, occurred, reason: str, name: str, errors: Errors) -> None:
    """The late-entry rule said on the page with the rest (the service checks it again): past the
    policy's limit the entry needs its reason."""
    limit = _late_limit(page)
    if occurred is not None and not reason and page.local_now() - occurred > limit:
        errors.add(name, f"this entry is recorded more than {limit.total_seconds() / 3600:.0f} h after the event; "
                         "a late entry must give its reason")


def _sheet_error(page: Page, sha: str, errors: Errors) -> None:
    if not re.fullmatch(r"[0-9a-f]{64}", sha or ""):
        errors.add("sheet", "upload the scanned sheet first, or pick it from the stored documents")
    elif document(page, sha) is None:
        errors.add("sheet", f"no stored document {sha[:12]}... here; upload the scanned sheet first")


def _backfill_page(page: Page, *, sheet: str | None, values: dict | None = None, errors: Errors | None = None,
                   wvalues: dict | None = None, werrors: Errors | None = None, uerrors: Errors | None = None,
                   uvalues: dict | None = None, notes: dict | None = None, found: dict | None = None,
                   saved: dict | None = None, status: int = 200) -> Response:
    from api.web.routes_clinic import INFUSION_FIELDS, WASTE_METHODS, _find_patients
    from ledger.services.patients import RECENT_DAYS

    ledger = page.request.app.state.ledger
    today = page.local_now().date()
    doc = document(page, sheet)
    ctx: dict[str, Any] = {"sheet": doc, "saved": saved, "uerrors": uerrors or Errors(),
                           "uvalues": uvalues or {"form_key": new_form_key()},
                           "may_upload": page.may("document_upload"), "may_read": page.may("documents"),
                           "may_infuse": page.may("infusion"), "may_waste": page.may("waste"),
                           "max_mb": MAX_DOCUMENT_BYTES // (1024 * 1024), "types": ", ".join(TYPE_WORDS.values())}
    if doc is None:
        ctx["documents"] = recent_documents(page) if page.may("documents") else []
        return page.render("backfill.html", status=status, active="tasks", **ctx)
    values = values or {"form_key": new_form_key(), "late_reason": LATE_REASON, "waste_method": WASTE_METHODS[0][0]}
    wvalues = wvalues or {"form_key": new_form_key(), "lw_late_reason": LATE_REASON,
                          "lw_method": WASTE_METHODS[0][0]}
    vials = queries.usable_vials(ledger, page.dea, today) if ctx["may_infuse"] else []
    if found is None and values.get("patient_id"):
        found = _find_patients(page, Errors(), patient_id=values["patient_id"].strip(), log_action="read")
    known = [*INFUSION_FIELDS, "witness_username", "witness_password", "witness_totp", "draws", "sheet"]
    known += [f"vials-{i}-{k}" for i in range(len(vials)) for k in ("ml", "use")]
    return page.render("backfill_sheet.html", status=status, active="tasks", **ctx, values=values,
                       errors=errors or Errors(), wvalues=wvalues, werrors=werrors or Errors(), notes=notes or {},
                       found=found, vials=vials, waste_methods=WASTE_METHODS, known=known,
                       wknown=[*WASTE_FIELDS, "waste_witness_username", "waste_witness_password", "sheet"],
                       prescribers=queries.prescribers(ledger, page.dea, today) if ctx["may_infuse"] else [],
                       administrations=open_administrations(page) if ctx["may_waste"] else [],
                       recent_days=RECENT_DAYS)


def _saved(page: Page, seq: int) -> dict[str, Any] | None:
    """What was just recorded from the sheet (entry ``seq``, signed by this person), in the
    clinic's words: an infusion as the infusion page says it, a waste as "0.30 mL (15.00 mg)
    wasted ...", with the paper time, the late reason and the sheet it cites."""
    from api.web.readable import clock_time, method_words
    from api.web.routes_clinic import _saved_infusion

    e = _entry(page, seq)
    if e is None or not any(s.get("staff_id") == page.principal.staff_id for s in e.get("signatures", [])):
        return None
    today = page.local_now().date()
    if e.get("kind") == "dose_administered":
        out = _saved_infusion(page, seq)
        if out is None:
            return None
        out["paper_time"] = clock_time(e.get("started_at", ""), page.tz, today)
    elif e.get("kind") == "dose_wasted":
        witness = next((s.get("printed_name") for s in e["signatures"] if s.get("meaning") == "witnessed"), None)
        out = {"headline": f"Waste recorded: {e.get('ml')} mL ({e.get('mg')} mg) of "
                           f"{(e.get('product') or {}).get('name', '?')} from infusion {e.get('administration_id')}, "
                           f"{method_words(e.get('method'))}" + (f", witnessed by {witness}" if witness else "") + ".",
               "seq": seq, "late": e.get("late_reason"),
               "paper_time": clock_time(e.get("occurred_at", ""), page.tz, today)}
    else:
        return None
    out["kind"] = e["kind"]
    out["documents"] = list(e.get("documents") or ())  # entries before issue 21 lack the key
    return out


@router.get("/ui/{dea}/backfill", name="web_backfill")
async def backfill(request: Request, dea: Dea, sheet: Sha = None, saved: Seq = None) -> Response:
    """Step 1 (no ``sheet``): upload the scanned sheet or pick it; step 2 (``sheet``, its
    SHA-256): the forms that record the sheet's infusions and later wastes; ``saved`` (an entry's
    number) shows what was just recorded."""
    page = await open_page(request, dea, "backfill")

    def render() -> Response:
        return _backfill_page(page, sheet=sheet, saved=_saved(page, saved) if saved is not None else None)

    return await run_in_threadpool(render)


@router.post("/ui/{dea}/backfill", name="web_backfill_post")
async def backfill_upload(request: Request, dea: Dea) -> Response:
    """Upload the scanned sheet (store_document), then on to recording from it."""
    page = await open_page(request, dea, "backfill")
    # Those who both backfill and store documents: a prescriber records from a sheet a nurse uploaded.
    require_role(page.session, dea, PAGE_ROLES["backfill"] & PAGE_ROLES["document_upload"])
    form, upload, errors, status = await _upload(request, page)
    values = {"title": form.get("title", ""), "form_key": form.text("form_key") or new_form_key()}
    sha = None
    if not errors:
        sha = await run_in_threadpool(_store, page, form, upload, errors)
        status = 422
    if sha is None:
        return await run_in_threadpool(lambda: _backfill_page(page, sheet=None, uerrors=errors, uvalues=values,
                                                              status=status))
    return RedirectResponse(f"{location_path(dea)}backfill?sheet={sha}", status_code=303)


def _record_infusion(page: Page, form: Form) -> Response:
    from api.web.routes_clinic import (
        INFUSION_ERROR_NAMES,
        INFUSION_FIELDS,
        _check_infusion,
        _find_patients,
    )
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.domain.commands import AdministerDose
    from ledger.services import request_fields

    sheet = form.text("sheet")
    values: dict[str, Any] = {k: form.get(k, "") for k in INFUSION_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "witness")
    vials = usable_vial_rows(page, form, values)
    errors = Errors()
    _sheet_error(page, sheet, errors)
    if errors:  # no sheet to record from: back to step 1, saying so (nothing recorded)
        return _backfill_page(page, sheet=None, uerrors=errors, status=404 if sheet else 422)

    def again(status: int, **kw) -> Response:
        return _backfill_page(page, sheet=sheet, values=values, errors=errors, status=status, **kw)

    if form.get("action") == "search":  # find the patient, as on the infusion page (POST body only)
        found = _find_patients(page, errors, query=values["patient_query"].strip())
        return again(422 if errors else 200, found=found)
    notes: dict[str, str] = {}
    draws, used, waste, started, ended = _check_infusion(page, form, values, vials, errors, notes)
    # the start beside its own field too (the checks above mark the end): a sheet records the past
    if started is not None and started > page.local_now():
        errors.add("started_at", "is in the future: the sheet records an infusion that already happened")
    elif started is not None and ended is not None and ended - started > timedelta(hours=12):
        errors.add("started_at", "is more than 12 hours before the infusion ended: check the sheet's times")
    _check_late(page, started, values["late_reason"].strip(), "late_reason", errors)
    if errors:
        return again(422, notes=notes)
    cmd = AdministerDose(values["patient_id"].strip(), values["prescriber_dea_number"].strip(),
                         values["weight_kg"].strip(), values["ordered_mg_per_kg"].strip(), tuple(draws),
                         values["ml_given"].strip(), started, ended, waste=waste,
                         late_reason=values["late_reason"].strip() or None, documents=(sheet,))
    witness = None
    if waste is not None:
        witness = witness_from_form(page, form, request_fields(cmd), errors, idempotency_key=values["form_key"])
        if witness is None:
            return again(422, notes=notes)
    try:
        res = services.administer_dose(page.request.app.state.ledger, page.principal, cmd,
                                       witness=witness.principal if witness else None,
                                       idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)
        if status is not None:
            return again(status, notes=notes)
        name, msg = error_of(exc, {**INFUSION_ERROR_NAMES, "documents": "sheet", "documents[0]": "sheet"})
        errors.add(draw_error_field(name, used), msg)
        return again(exc.status, notes=notes)
    return RedirectResponse(f"{location_path(page.dea)}backfill?sheet={sheet}&saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/backfill/infusion", name="web_backfill_infusion_post")
async def backfill_infusion(request: Request, dea: Dea) -> Response:
    """An infusion from the sheet: administer_dose (with its waste and witness), at the paper's
    times, late, citing the sheet."""
    page = await open_page(request, dea, "infusion")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_record_infusion, page, form)


def _record_waste(page: Page, form: Form) -> Response:
    from api.web.routes_clinic import WASTE_METHODS
    from api.web.witness import keep_witness, passkey_outcome, witness_from_form
    from ledger.domain.commands import RecordWaste
    from ledger.domain.quantities import parse_volume
    from ledger.services import request_fields

    sheet = form.text("sheet")
    values: dict[str, Any] = {k: form.get(k, "") for k in WASTE_FIELDS}
    values["form_key"] = values["form_key"] or new_form_key()
    keep_witness(values, form, "waste_witness")
    errors = Errors()
    _sheet_error(page, sheet, errors)
    if errors:  # no sheet to record from: back to step 1, saying so (nothing recorded)
        return _backfill_page(page, sheet=None, uerrors=errors, status=404 if sheet else 422)

    def again(status: int) -> Response:
        return _backfill_page(page, sheet=sheet, wvalues=values, werrors=errors, status=status)

    admins = {a["administration_id"]: a for a in open_administrations(page)}
    aid = values["lw_administration_id"].strip()
    if not aid:
        errors.add("lw_administration_id", "pick the infusion the sheet's waste belongs to")
    elif aid not in admins:
        errors.add("lw_administration_id", f"infusion {aid[:32]} has nothing left to waste here; pick it from the list")
    ml = None
    if not values["lw_ml"].strip():
        errors.add("lw_ml", "enter the mL wasted, as on the sheet")
    else:
        try:
            ml = parse_volume(values["lw_ml"].strip(), field="lw_ml")
        except InvalidInput as exc:
            errors.add("lw_ml", exc.reason)
    if ml is not None and aid in admins and ml > admins[aid]["open_ml"]:
        errors.add("lw_ml", f"only {admins[aid]['open_ml']} mL of infusion {aid} is unaccounted for")
    if values["lw_method"] not in dict(WASTE_METHODS):
        errors.add("lw_method", "choose how it was wasted")
    occurred = parse_local_time(values["lw_occurred_at"], page.tz, field="lw_occurred_at", errors=errors)
    _check_late(page, occurred, values["lw_late_reason"].strip(), "lw_late_reason", errors)
    if not form.text("waste_witness_username"):
        errors.add("waste_witness_username", "the witness enters their own username")
    if errors:
        return again(422)
    cmd = RecordWaste(aid, values["lw_ml"].strip(), values["lw_method"], occurred,
                      late_reason=values["lw_late_reason"].strip() or None, documents=(sheet,))
    witness = witness_from_form(page, form, request_fields(cmd), errors, prefix="waste_witness",
                                idempotency_key=values["form_key"])
    if witness is None:
        return again(422)
    try:
        res = services.record_waste(page.request.app.state.ledger, page.principal, cmd, witness=witness.principal,
                                    idempotency_key=values["form_key"])
    except LedgerError as exc:
        status = passkey_outcome(page, exc, values, errors)
        if status is not None:
            return again(status)
        name, msg = error_of(exc, WASTE_ERROR_NAMES)
        errors.add(name, msg)
        return again(exc.status)
    return RedirectResponse(f"{location_path(page.dea)}backfill?sheet={sheet}&saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/backfill/waste", name="web_backfill_waste_post")
async def backfill_waste(request: Request, dea: Dea) -> Response:
    """A waste the sheet lists after its infusion: record_waste, witnessed, at the paper's time,
    late, citing the sheet."""
    page = await open_page(request, dea, "waste")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_record_waste, page, form)

