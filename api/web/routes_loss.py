"""Form 106 follow-up page (issue 20): for each open theft or loss report, record that the written
notice went to the DEA field office (when, how, to whom) and that Form 106 was filed (when, DEA's
confirmation number). Each is recorded once per report and signed by the person signed in (a
manager or compliance officer); the page then says plainly what was recorded, on time or late.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from api.http import queries as api_queries
from api.web.core import (
    Page,
    PageRoute,
    error_of,
    local_input,
    new_form_key,
    open_page,
    parse_local_time,
)
from api.web.forms import Errors, Form, read_form, whole_number
from api.web.readable import local_time
from api.web.routes_clinic import Dea
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain.commands import RecordDeaNotice, RecordForm106Filing
from ledger.domain.errors import InvalidInput, LedgerError
from ledger.domain.form106 import NOTICE_METHODS, follow_ups
from ledger.integrity.canonical import decode
from ledger.storage.store import entries_t

router = APIRouter(route_class=PageRoute, include_in_schema=False)

NOTICE_FIELDS = ("notice_report", "sent_at", "method", "recipient")
FILING_FIELDS = ("filing_report", "filed_at", "confirmation_number")
METHOD_WORDS = {"email": "e-mail", "fax": "fax", "phone": "telephone", "letter": "letter", "online": "DEA online"}


def open_reports(page: Page) -> list[dict[str, Any]]:
    """The location's theft or loss reports still missing their notice or their filing, oldest
    first, as the page lists them (few: one per loss)."""
    ledger = page.request.app.state.ledger
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.canonical).where(
            entries_t.c.registrant == page.dea,
            entries_t.c.kind.in_(("theft_or_loss_reported", "dea_notice_sent", "form_106_filed")))
            .order_by(entries_t.c.seq)).scalars().all()
    entries = [decode(bytes(r)) for r in rows]
    done = follow_ups(entries)
    out = []
    for e in entries:
        if e["kind"] != "theft_or_loss_reported":
            continue
        have = done.get(e["seq"], {})
        if "notice" in have and "filing" in have:
            continue
        out.append({"seq": e["seq"], "type": e["loss_type"].replace("_", " "),
                    "discovered": local_time(e["discovered_at"], page.tz),
                    "notice_due": local_time(e["notice_due_at"], page.tz),
                    "form_due": local_time(e["form_106_due_at"], page.tz),
                    "notice": _said(have.get("notice"), page, "sent_at"),
                    "filing": _said(have.get("filing"), page, "filed_at")})
    return out


def _said(f: dict[str, Any] | None, page: Page, at: str) -> str | None:
    if f is None:
        return None
    return f"{local_time(f[at], page.tz)}{' (late)' if f['late'] else ''}, entry #{f['seq']}"


def confirmation(page: Page, seq: int) -> str | None:
    """What the entry ``seq`` just recorded, in plain words (None if it is not a follow-up)."""
    e = api_queries.entry(page.request.app.state.ledger, page.dea, seq)
    if e is None:
        return None
    obj = decode(e["canonical"].encode("utf-8"))
    when = "late: it was due " + local_time(obj.get("due_at", ""), page.tz) if obj.get("late") else "on time"
    if obj["kind"] == "dea_notice_sent":
        return (f"Recorded as entry #{seq}: the notice of theft or loss report #{obj['loss_report_seq']} was sent "
                f"{local_time(obj['sent_at'], page.tz)} by {METHOD_WORDS.get(obj['method'], obj['method'])} to "
                f"{obj['recipient']}, {when}.")
    if obj["kind"] == "form_106_filed":
        return (f"Recorded as entry #{seq}: Form 106 for theft or loss report #{obj['loss_report_seq']} was filed "
                f"{local_time(obj['filed_at'], page.tz)}, DEA confirmation {obj['confirmation_number']}, {when}.")
    return None


def _page(page: Page, *, values: dict, errors: Errors | None = None, status: int = 200,
          saved: str | None = None) -> Response:
    reports = open_reports(page)
    return page.render("loss_followup.html", status=status, active="loss", values=values, errors=errors or Errors(),
                       saved=saved,
                       notice_options=[(str(r["seq"]), f"#{r['seq']} {r['type']}, discovered {r['discovered']}")
                                       for r in reports if r["notice"] is None],
                       filing_options=[(str(r["seq"]), f"#{r['seq']} {r['type']}, discovered {r['discovered']}")
                                       for r in reports if r["filing"] is None],
                       methods=[(m, METHOD_WORDS[m]) for m in NOTICE_METHODS], reports=reports)


def _fresh_values(page: Page) -> dict[str, Any]:
    now = local_input(page.local_now(), page.tz)
    return {"notice_key": new_form_key(), "filing_key": new_form_key(), "sent_at": now, "filed_at": now}


@router.get("/ui/{dea}/losses/follow-up", name="web_loss_followup")
async def followup_form(request: Request, dea: Dea,
                        saved: Annotated[int | None, Query(ge=0, le=2**62)] = None) -> Response:
    """Open theft or loss reports, with the forms for their notice and their Form 106 filing."""
    page = await open_page(request, dea, "loss")
    said = await run_in_threadpool(confirmation, page, saved) if saved is not None else None
    return await run_in_threadpool(_page, page, values=_fresh_values(page), saved=said)


def _record(page: Page, form: Form) -> Response:
    action = form.get("action", "")
    values: dict[str, Any] = {**_fresh_values(page),
                              **{k: form.get(k, "") for k in NOTICE_FIELDS + FILING_FIELDS},
                              "notice_key": form.get("notice_key", "") or new_form_key(),
                              "filing_key": form.get("filing_key", "") or new_form_key()}
    errors = Errors()
    ledger = page.request.app.state.ledger
    if action not in ("notice", "filing"):
        raise InvalidInput("send one of the page's two forms", field="action")
    report_field = "notice_report" if action == "notice" else "filing_report"
    report = whole_number(values[report_field].strip())
    if report is None:
        errors.add(report_field, "choose the theft or loss report")
    at_field = "sent_at" if action == "notice" else "filed_at"
    at = parse_local_time(values[at_field], page.tz, field=at_field, errors=errors)
    if action == "notice" and values["method"] not in NOTICE_METHODS:
        errors.add("method", "choose how the notice was sent")
    if errors:
        return _page(page, values=values, errors=errors, status=422)
    try:
        if action == "notice":
            res = services.record_dea_notice(ledger, page.principal, RecordDeaNotice(
                report, at, values["method"], form.text("recipient")), idempotency_key=values["notice_key"])
        else:
            res = services.record_form_106_filing(ledger, page.principal, RecordForm106Filing(
                report, at, form.text("confirmation_number")), idempotency_key=values["filing_key"])
    except LedgerError as exc:
        name, msg = error_of(exc, {"loss_report_seq": report_field, "principal": "form"})
        offered = {r["seq"] for r in open_reports(page) if r["notice" if action == "notice" else "filing"] is None}
        if name == report_field and report not in offered:
            name = "form"  # its choice is no longer on the page (e.g. already recorded): said above the forms
        errors.add(name, msg)
        return _page(page, values=values, errors=errors, status=exc.status)
    return RedirectResponse(f"{location_path(page.dea)}losses/follow-up?saved={res['entries'][0]['seq']}",
                            status_code=303)


@router.post("/ui/{dea}/losses/follow-up", name="web_loss_followup_post")
async def followup(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "loss")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_record, page, form)
