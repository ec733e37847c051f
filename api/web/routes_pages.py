"""Today's work, receiving stock (with GS1 scans), stock on hand, reports and ledger status."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse, Response

from api.http import queries as api_queries
from api.http.routes_stock import note_stock_read
from api.web import queries
from api.web.core import (
    DEA_PATTERN,
    HERE,
    Page,
    PageRoute,
    error_of,
    local_input,
    new_form_key,
    open_page,
    parse_local_time,
)
from api.web.forms import Errors, Form, read_form, whole_number
from api.web.gs1 import parse_scan
from api.web.security import check_session_csrf, location_path
from ledger import services
from ledger.domain.commands import ReceivedLineInput, ReceiveStock
from ledger.domain.errors import InvalidInput, LedgerError, NotFound
from ledger.integrity.canonical import format_time

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]
STATIC = {"app.css": "text/css", "app.js": "text/javascript", "passkey.js": "text/javascript"}


@router.get("/ui/static/{name}", name="web_static")
def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFound("no such file", field="name")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})


# --- today -------------------------------------------------------------------------------------

ENTRY_LABELS = {
    "stock_received": "Stock received", "inventory_taken": "Inventory", "dose_administered": "Infusion",
    "dose_wasted": "Waste", "stock_counted": "Count", "discrepancy_resolved": "Discrepancy resolved",
    "stock_destroyed": "Destruction", "stock_transferred": "Transfer", "loss_reported": "Loss",
}


def _today(page: Page) -> dict[str, Any]:
    now = page.local_now()
    start = datetime.combine(now.date(), time(0), tzinfo=page.tz)
    f = api_queries.EntryFilter(staff_id=page.principal.staff_id, occurred_from=format_time(start),
                                occurred_to=format_time(start + timedelta(days=1)))
    items, _ = api_queries.entries(page.request.app.state.ledger, page.dea, f, cursor=None, limit=50)
    rows = []
    for it in items:
        e = it["entry"]
        mine = [s["meaning"] for s in e.get("signatures", []) if s.get("staff_id") == page.principal.staff_id]
        rows.append({"seq": it["seq"], "kind": ENTRY_LABELS.get(it["kind"], it["kind"].replace("_", " ").capitalize()),
                     "at": datetime.fromisoformat(it["occurred_at"].replace("Z", "+00:00")).astimezone(page.tz)
                     .strftime("%H:%M"), "as": ", ".join(mine)})
    counts = queries.vial_counts(page.request.app.state.ledger, page.dea)
    return {"today": rows, "date": now.strftime("%A %d %B %Y"), "vial_counts": counts, "alerts": _open_alerts(page)}


def _open_alerts(page: Page) -> list[dict[str, Any]] | None:
    """Open alerts for a manager or compliance officer (None: this login may not see alerts)."""
    if not page.may("alerts"):
        return None
    from ledger.services import alerts as alert_service

    return alert_service.list_alerts(page.request.app.state.ledger, page.dea, status="open")


@router.get("/ui/{dea}/", name="web_home")
async def home(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "home")
    data = await run_in_threadpool(_today, page)
    return page.render("home.html", **data)


# --- receive stock -----------------------------------------------------------------------------

LINE_FIELDS = ("ndc", "containers", "lot", "expiry", "serials", "gtin", "invoiced")
_LINE_INPUT_FIELDS = {f.name for f in dataclasses.fields(ReceivedLineInput)}
_RECEIPT_FIELDS = {f.name for f in dataclasses.fields(ReceiveStock)}


def _lines(form: Form) -> list[dict[str, str]]:
    n = whole_number(form.get("line_count", "1"))
    n = min(1 if n is None else n, 200)
    return [{f: form.get(f"lines-{i}-{f}", "").strip() for f in LINE_FIELDS} for i in range(n)]


def _receive_page(page: Page, *, values: dict, lines: list[dict], errors: Errors | None = None,
                  status: int = 200, focus_scan: bool = True, notice: str | None = None) -> Response:
    ledger = page.request.app.state.ledger
    known = ["supplier_id", "invoice_number", "occurred_at", "late_reason", "notes", "scan", "dscsa_reference"]
    known += [f"lines-{i}-{f}" for i in range(len(lines)) for f in LINE_FIELDS]
    return page.render("receive.html", status=status, values=values, lines=lines, errors=errors or Errors(),
                       product_options=[(p["ndc"], f"NDC {p['ndc']} · {p['strength_mg_per_ml']} mg/mL, "
                                                    f"{p['container_ml']} mL {p['form']}")
                                        for p in api_queries.products(ledger, page.dea)],
                       supplier_options=[(s["supplier_id"], s["name"]) for s in api_queries.suppliers(ledger, page.dea)],
                       focus_scan=focus_scan, known=known, notice=notice,
                       has_invoiced="invoiced_containers" in _LINE_INPUT_FIELDS,
                       has_dscsa="dscsa_reference" in _RECEIPT_FIELDS)


@router.get("/ui/{dea}/receipts/new", name="web_receive")
async def receive_form(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "receive")
    values = {"occurred_at": local_input(page.local_now(), page.tz), "form_key": new_form_key()}
    return await run_in_threadpool(_receive_page, page, values=values, lines=[dict.fromkeys(LINE_FIELDS, "")])


def _add_scan(page: Page, form: Form, lines: list[dict], notice: list[str]) -> Errors:
    """Add one scanned carton: a line with the same product, lot and expiry counts one more."""
    errors = Errors()
    ledger = page.request.app.state.ledger
    try:
        scan = parse_scan(form.get("scan", ""), api_queries.products(ledger, page.dea))
    except LedgerError as exc:
        errors.add("scan", exc.reason)
        return errors
    if scan.serial and any(scan.serial in ln["serials"].split() for ln in lines):
        errors.add("scan", f"serial {scan.serial} is already scanned on this receipt")
        return errors
    for ln in lines:
        if ln["ndc"] == scan.ndc and ln["lot"] == (scan.lot or "") and ln["expiry"] == (scan.expiry or ""):
            ln["gtin"] = ln["gtin"] or scan.gtin
            ln["containers"] = str((whole_number(ln["containers"]) or 0) + 1)
            ln["serials"] = " ".join(filter(None, [ln["serials"], scan.serial]))
            notice.append(f"Carton added: NDC {scan.ndc}, lot {scan.lot}, now {ln['containers']} on that line.")
            return errors
    new = {"ndc": scan.ndc, "containers": "1", "lot": scan.lot or "", "expiry": scan.expiry or "",
           "serials": scan.serial or "", "gtin": scan.gtin, "invoiced": ""}
    notice.append(f"Carton added: NDC {scan.ndc}, lot {scan.lot}, expiry {scan.expiry}.")
    empty = [i for i, ln in enumerate(lines) if not any(ln[f] for f in ("ndc", "lot", "expiry", "containers"))]
    if empty:
        lines[empty[0]] = new
    else:
        lines.append(new)
    return errors


def _receive(page: Page, form: Form) -> Response:
    values = {k: form.get(k, "") for k in ("supplier_id", "invoice_number", "occurred_at", "late_reason", "notes",
                                           "form_key", "dscsa_reference")}
    values["form_key"] = values["form_key"] or new_form_key()
    lines = _lines(form)
    action = form.get("action", "record")
    if action == "scan":
        notice: list[str] = []
        errors = _add_scan(page, form, lines, notice)
        values["scan"] = form.get("scan", "") if errors else ""
        return _receive_page(page, values=values, lines=lines, errors=errors, status=422 if errors else 200,
                             notice=notice[0] if notice else None)
    if action == "add_line":
        lines.append(dict.fromkeys(LINE_FIELDS, ""))
        return _receive_page(page, values=values, lines=lines, focus_scan=False)
    errors = Errors()
    if not values["supplier_id"]:
        errors.add("supplier_id", "choose the supplier on the invoice")
    occurred = parse_local_time(values["occurred_at"], page.tz, field="occurred_at", errors=errors)
    kept = [(i, ln) for i, ln in enumerate(lines) if any(ln[f] for f in ("ndc", "lot", "expiry", "containers"))]
    if not kept:
        errors.add("scan", "scan each carton, or type a line below")
    cmd_lines = []
    for i, ln in kept:
        # issue 19: what the page counts are packages (a scanned carton is one package of its
        # units, not one vial); a product with one unit per package receives that unit
        packages = whole_number(ln["containers"])
        if packages is None:
            errors.add(f"lines-{i}-containers", "enter a whole number of packages (cartons, kits)")
        extra = {}
        if "serials" in _LINE_INPUT_FIELDS and ln["serials"]:  # issue 3: DSCSA serials on receipts
            extra["serials"] = tuple(ln["serials"].split())
        if "gtin" in _LINE_INPUT_FIELDS and ln.get("gtin"):
            extra["gtin"] = ln["gtin"]
        if "invoiced_containers" in _LINE_INPUT_FIELDS and ln.get("invoiced"):
            invoiced = whole_number(ln["invoiced"])
            if invoiced is not None:
                extra["invoiced_packages"] = invoiced
            else:
                errors.add(f"lines-{i}-invoiced", "enter the number of packages on the invoice")
        cmd_lines.append(ReceivedLineInput(ln["ndc"], None, ln["lot"], ln["expiry"], packages=packages or 0, **extra))
    if errors:
        return _receive_page(page, values=values, lines=lines, errors=errors, status=422)
    more = {}
    if "dscsa_reference" in _RECEIPT_FIELDS and values["dscsa_reference"].strip():
        more["dscsa_reference"] = values["dscsa_reference"].strip()
    cmd = ReceiveStock(values["supplier_id"], values["invoice_number"], occurred, tuple(cmd_lines),
                       late_reason=values["late_reason"].strip() or None, notes=values["notes"], **more)
    try:
        res = services.receive_stock(page.request.app.state.ledger, page.principal, cmd,
                                     idempotency_key=values["form_key"])
    except LedgerError as exc:
        name, msg = error_of(exc)
        # the service numbers the lines it was given; map back to the form's line numbers
        if name.startswith("lines-"):
            k = int(name.split("-")[1])
            if k < len(kept):
                name = f"lines-{kept[k][0]}-" + "-".join(name.split("-")[2:])
            name = name.replace("-invoiced_packages", "-invoiced").replace("-invoiced_containers", "-invoiced")
            name = name.replace("-packages", "-containers")  # the form's field for the packages
        errors.add(name, msg)
        return _receive_page(page, values=values, lines=lines, errors=errors, status=exc.status)
    return saved_redirect(page, res)


@router.post("/ui/{dea}/receipts/new", name="web_receive_post")
async def receive(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "receive")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    return await run_in_threadpool(_receive, page, form)


def saved_redirect(page: Page, res: dict[str, Any]) -> Response:
    """After a form is recorded, show its (first) entry with its sequence number (post/redirect/get)."""
    seq = res["entries"][0]["seq"]
    return RedirectResponse(f"{location_path(page.dea)}entries/{seq}?saved={len(res['entries'])}", status_code=303)


# --- stock -------------------------------------------------------------------------------------


@router.get("/ui/{dea}/stock", name="web_stock")
async def stock(request: Request, dea: Dea, received: int | None = None) -> Response:
    page = await open_page(request, dea, "stock")
    ledger = request.app.state.ledger
    await run_in_threadpool(note_stock_read, request, ledger, page.principal, "stock page")
    vials = await run_in_threadpool(queries.usable_vials, ledger, dea, page.local_now().date())
    totals = await run_in_threadpool(api_queries.stock, ledger, dea)
    return page.render("stock.html", vials=vials, totals=totals, received=received,
                       can_label=page.may("labels"))  # issue 21: beyond-use labels of punctured vials


# --- reports -----------------------------------------------------------------------------------


def _report_kinds(roles: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(name, title) of the report kinds; with ``roles``, only those they may read (a kind's
    ``readers``, issue 20: the patient-access log is the compliance officer's)."""
    from reports.base import KINDS, kind_named

    try:
        kind_named("receiving")  # registers the kinds
    except LedgerError:
        pass
    return [(k.name, k.title) for k in KINDS.values()
            if roles is None or k.readers is None or roles & k.readers]


@router.get("/ui/{dea}/reports", name="web_reports")
async def reports(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "reports")
    today = page.local_now().date()
    values = {"start": today.replace(day=1).isoformat(), "end": today.isoformat(), "paper": "letter"}
    # An offered count (issue 20) or a link from the audit fills the form: days, kind, window only
    q = request.query_params
    for name in ("start", "end"):
        if _DAY.match(q.get(name, "")):
            values[name] = q[name]
    if q.get("kind") in dict(_report_kinds(page.roles)):
        values["kind"] = q["kind"]
    if q.get("window") == "audit":
        values["window"] = "audit"
    return page.render("reports.html", kinds=_report_kinds(page.roles), values=values, offers=None,
                       signing=await run_in_threadpool(_has_report_key, request.app.state.ledger, dea),
                       vial_options=_vial_options(await run_in_threadpool(queries.all_vials, request.app.state.ledger, dea)))


def _vial_options(vials: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The vial history's pick list: each vial by its short label, product, lot and state."""
    from api.web.gs1 import short_vial_labels

    labels = short_vial_labels(vials)
    return [(v["vial_id"], f"{labels[v['vial_id']]} · {v['name']} · lot {v['lot']} · {v['state']}") for v in vials]


_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _offer_choices(offers: dict[str, list[dict[str, Any]]] | None, tz: str) -> list[dict[str, str]] | None:
    """The counts an audit could run between (issue 20), as choices for the reports page: each
    with its local day (what the form takes) and a label naming the count and its entry."""
    if not offers:
        return None
    from reports.fmt import local

    seen, out = set(), []
    for c in sorted(offers.get("from", []) + offers.get("to", []), key=lambda c: (c["occurred_at"], c["seq"])):
        if c["seq"] in seen:
            continue
        seen.add(c["seq"])
        what = f"{c['inventory_type']} inventory" if c["kind"] == "inventory_taken" else "count"
        when = local(c["occurred_at"], tz)
        out.append({"day": when[:10], "label": f"the {what} of {when}, entry {c['seq']}"})
    return out


def _kind_readers(name: str) -> frozenset[str] | None:
    """The roles a report kind is narrowed to (``ReportKind.readers``), None for any reader of
    reports (and for a kind that does not exist: building it names that)."""
    from reports.base import kind_named

    try:
        return kind_named(name).readers
    except LedgerError:
        return None


def _has_report_key(ledger: Any, dea: str) -> bool:
    """Whether reports of ``dea`` will be signed (issue 18): its report key file is in the key
    folder (a key file nobody certified is refused when a report is made, with the reason)."""
    from ledger.services.report_key import load_report_key

    key_dir = getattr(ledger, "report_key_dir", None)
    try:
        return key_dir is not None and load_report_key(key_dir, dea) is not None
    except LedgerError:
        return True  # present but unreadable: building a report names the problem


@router.post("/ui/{dea}/reports", name="web_reports_post")
async def report_download(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "reports")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    values = {k: form.text(k) for k in ("kind", "start", "end", "paper", "window", "vial")}
    vials = _vial_options(await run_in_threadpool(queries.all_vials, request.app.state.ledger, dea))
    readers = _kind_readers(values["kind"])
    if readers is not None and not page.roles & readers:  # issue 20: the patient-access log, as on /v1
        errors = Errors()
        errors.add("kind", f"the {values['kind']} report is for the roles {', '.join(sorted(readers))}")
        return page.render("reports.html", status=403, kinds=_report_kinds(page.roles), values=values, errors=errors,
                           signing=True, vial_options=vials)
    # Reports print the book (the audit's ending figures, the stock chart): a read of the book.
    await run_in_threadpool(note_stock_read, request, request.app.state.ledger, page.principal, "report download")
    from reports.base import build_report, kind_named

    params = None
    try:
        if values["vial"] and values["vial"] not in dict(vials):  # only a vial the pick list offers, whatever the kind
            raise InvalidInput("pick one of the vials listed", field="vial")
        if "vial" in kind_named(values["kind"]).params:  # the vial history: of the vial picked
            if not values["vial"]:
                raise InvalidInput("pick the vial whose history to print", field="vial")
            params = {"vial": values["vial"]}
        pdf, data = await run_in_threadpool(
            build_report, request.app.state.ledger, values["kind"], dea, values["start"], values["end"],
            generated_by=f"{page.principal.printed_name} ({page.principal.staff_id})", paper=values["paper"] or "letter",
            reader=page.principal.staff_id,  # the patient access log names who downloaded patient names
            audit_window=values["window"] == "audit", params=params)
    except LedgerError as exc:
        name, msg = error_of(exc, {"period": "start", "from": "start", "to": "end", "registrant": "form",
                                   "window": "window", "vial": "vial"})
        errors = Errors()
        errors.add(name if name in values and name != "window" else "form", msg)
        # Issue 20: an audit with no count to run between offers the nearest ones as choices
        offers = _offer_choices(getattr(exc, "offers", None), page.location["time_zone"])
        return page.render("reports.html", status=exc.status if exc.status < 500 else 422, kinds=_report_kinds(page.roles),
                           values=values, errors=errors, signing=True, offers=offers, vial_options=vials)
    filename = f"csledger-{values['kind']}-{dea}-{values['start']}-to-{values['end']}.pdf"
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# --- ledger status -----------------------------------------------------------------------------


def _status(page: Page) -> dict[str, Any]:
    st = queries.checkpoint_status(page.request.app.state.ledger, page.dea)
    last = getattr(page.request.app.state, "web_verifications", {}).get(page.dea)
    return {"st": st, "last_verification": last}


@router.get("/ui/{dea}/status", name="web_status")
async def status(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "status")
    return page.render("status.html", **await run_in_threadpool(_status, page))


def _verify(page: Page) -> None:
    from ledger.services.verify import verify

    started = page.local_now()
    report = verify(page.request.app.state.ledger, registrant=page.dea)
    results = getattr(page.request.app.state, "web_verifications", None)
    if results is None:
        results = {}
        page.request.app.state.web_verifications = results
    results[page.dea] = {
        "at": started.strftime("%Y-%m-%d %H:%M:%S %Z"), "by": page.principal.printed_name, "ok": report.ok,
        "entries": report.registrants.get(page.dea, 0), "root": report.roots.get(page.dea),
        "problems": [str(p) for p in report.problems[:5]],
    }


@router.post("/ui/{dea}/status", name="web_status_verify")
async def status_verify(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "status")
    form = await read_form(request)
    check_session_csrf(request, form, page.token)
    await run_in_threadpool(_verify, page)
    return RedirectResponse(f"{location_path(dea)}status", status_code=303)


# --- one entry (what a form just saved) ----------------------------------------------------------


@router.get("/ui/{dea}/entries/{seq}", name="web_entry")
async def entry(request: Request, dea: Dea, seq: Annotated[int, Path(ge=0, le=2**62)], saved: int = 0) -> Response:
    """The entry a form just recorded, by its sequence number: a signer sees their own entries;
    managers, compliance officers and auditors see any."""
    page = await open_page(request, dea, "home")
    e = await run_in_threadpool(api_queries.entry, request.app.state.ledger, dea, seq)
    if e is None:
        raise NotFound(f"no entry {seq} here", field="seq")
    import json

    obj = json.loads(e["canonical"])
    signed = any(s.get("staff_id") == page.principal.staff_id for s in obj.get("signatures", []))
    if not signed and not page.roles & {"manager", "compliance_officer", "auditor"}:
        from api.http.problems import AccessDenied

        raise AccessDenied("you may see the entries you signed; this one is not yours")
    also = list(range(seq + 1, seq + min(saved, 20))) if saved > 1 else []
    # issue 20: a receipt short of its invoice says whose loss in transit it is (21 CFR 1301.74(c))
    from ledger.domain.form106 import transit_shortages

    notes = ([s["note"] for s in transit_shortages(obj["invoice_number"], obj["supplier"]["name"], obj["lines"])]
             if obj.get("kind") == "stock_received" else [])
    from api.web.readable import entry_result  # issue 21: a saved count in the clinic's words

    plain = entry_result(obj, page.tz, page.local_now().date()) if saved else None
    # issue 20: the documents the entry cites, linked for the roles that read them
    documents = (await run_in_threadpool(queries.cited_documents, request.app.state.ledger, dea, obj)
                 if page.may("documents") else [])
    return page.render("entry.html", e=e, obj=obj, saved=bool(saved), summary=_summary(obj), also=also, notes=notes,
                       plain=plain, documents=documents)


def _summary(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """An entry's fields as readable rows, nested ones by path (``lines 1 product name``)."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix} {k.replace('_', ' ')}".strip(), x)
        elif isinstance(v, list):
            if v and all(not isinstance(x, dict | list) for x in v):
                out.append((prefix, ", ".join(str(x) for x in v)))
            for i, x in enumerate(v):
                if isinstance(x, dict | list):
                    walk(f"{prefix} {i + 1}", x)
            if not v:
                out.append((prefix, "none"))
        else:
            out.append((prefix, "—" if v is None or v == "" else str(v)))

    for k, v in obj.items():
        if k not in ("registrant", "prev", "schema_version", "signatures", "kind", "seq"):
            walk(k.replace("_", " "), v)
    return out
