"""Downtime forms and beyond-use labels (issue 21).

"Downtime forms" is the page to print before the server goes down, or from a server that still
reads but refuses appends: the paper log per vial (one page per vial that may be drawn from) and
the blank infusion record with the vials on hand, both prefilled from the book, stamped with the
time they were printed and the last entry (where paper begins), and saying they are blank forms,
not ledger records. It also lists the containers that have a beyond-use label to print (vials
punctured, bags and syringes prepared); the stock page links the same labels.

The label of a container is ``/ui/<DEA>/containers/<id>/label``; a GS1 id's parentheses are
quoted in the links (``%2801%29...``) and arrive decoded. A sealed vial has no label yet: the
error page names it (409).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.http.routes_stock import note_stock_read
from api.web.core import DEA_PATTERN, PageRoute, auth_of, open_page
from api.web.gs1 import short_vial_labels
from api.web.labels import PaperForm, label_pdf, paper_pdf
from api.web.readable import local_time
from ledger.services.labels import CONTAINER_ID, labelable

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]
ContainerId = Annotated[str, Path(pattern=CONTAINER_ID, max_length=64)]


def _pdf(pdf: bytes, filename: str, *, inline: bool = False) -> Response:
    how = "inline" if inline else "attachment"
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'{how}; filename="{filename}"', "Cache-Control": "no-store"})


@router.get("/ui/{dea}/downtime", name="web_downtime")
async def downtime(request: Request, dea: Dea) -> Response:
    page = await open_page(request, dea, "downtime")
    found = await run_in_threadpool(labelable, request.app.state.ledger, dea)
    names = short_vial_labels(found["vials"])
    vials = [{**v, "short": names[v["vial_id"]], "opened": local_time(v["opened_at"], page.tz)} for v in found["vials"]]
    preps = [{**p, "started": local_time(p["started_at"], page.tz), "until": local_time(p["beyond_use_at"], page.tz)}
             for p in found["preparations"]]
    tlog = getattr(request.app.state.ledger, "transparency_log", None)
    refused = (tlog.refused() if tlog is not None else {}).get(dea)  # appends refused now: paper it is
    return page.render("downtime.html", active="downtime", vials=vials, preparations=preps,
                       can_label=page.may("labels"), refused=refused)


async def _paper(request: Request, dea: str, form: PaperForm, vial: str | None) -> Response:
    page = await open_page(request, dea, "downtime")
    ledger = request.app.state.ledger
    # The forms print the book (mL left of each vial): a read of the book, noted as the stock page's.
    await run_in_threadpool(note_stock_read, request, ledger, page.principal, f"downtime {form}")
    pdf, _ = await run_in_threadpool(lambda: paper_pdf(ledger, dea, form, now=auth_of(request).now(), vial=vial))
    stamp = page.local_now().strftime("%Y%m%d-%H%M")
    return _pdf(pdf, f"csledger-downtime-{form}-{dea}-{stamp}.pdf")


@router.get("/ui/{dea}/downtime/vial-log.pdf", name="web_downtime_vial_log")
async def vial_log(request: Request, dea: Dea,
                   vial: Annotated[str | None, Query(pattern=CONTAINER_ID, max_length=64)] = None) -> Response:
    """The paper log per vial: every vial that may be drawn from, or the one ``vial``."""
    return await _paper(request, dea, "vial-log", vial)


@router.get("/ui/{dea}/downtime/infusion-form.pdf", name="web_downtime_infusion_form")
async def infusion_form(request: Request, dea: Dea) -> Response:
    """The blank infusion record, with the vials on hand."""
    return await _paper(request, dea, "infusion-form", None)


@router.get("/ui/{dea}/containers/{container_id}/label", name="web_container_label")
async def container_label(request: Request, dea: Dea, container_id: ContainerId) -> Response:
    """The beyond-use label of one container, opened in the browser to print."""
    await open_page(request, dea, "labels")
    pdf, _ = await run_in_threadpool(label_pdf, request.app.state.ledger, dea, container_id)
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in container_id)
    return _pdf(pdf, f"label-{name}.pdf", inline=True)
