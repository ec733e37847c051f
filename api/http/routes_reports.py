"""Report PDFs over the API (issue 20): ``GET /v1/registrants/{dea}/reports/{kind}``.

The same signed PDF the reports page builds (``reports.base.build_report``, the one service the
pages and ``csledger report`` call), for the roles that may read reports on the pages
(``api.web.core.PAGE_ROLES["reports"]``, the ``get_report`` row of the role table); a kind may
narrow that further (``ReportKind.readers``: the patient-access log is the compliance officer's,
as ``GET .../patient-access-log`` is). The period is two inclusive local days in the registrant's
time zone, as on the command line and the pages; the audit runs over its window between two counts, and
``window=audit`` makes a log for that same window (issue 20, one period).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from api.http.auth import AccessDenied
from api.http.deps import LedgerDep, SessionDep, actor
from api.http.routes_stock import note_stock_read
from api.http.schemas import PROBLEM_RESPONSES
from ledger.domain.principal import Principal

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["reports"], responses=PROBLEM_RESPONSES)
#: A local calendar day; checked as a date by ``reports.fmt.parse_period`` (422 naming it).
DAY = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
PDF_RESPONSE = {200: {"content": {"application/pdf": {}},
                      "description": "The report PDF, signed with the registrant's certified report key; check it "
                                     "with `csledger verify-report FILE.pdf`"}}


@router.get("/reports/{kind}", name="get_report", response_class=Response, responses=PDF_RESPONSE)
def get_report(request: Request, ledger: LedgerDep, session: SessionDep,
               who: Annotated[Principal, actor("get_report")],
               kind: Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,39}$",
                                         description="receiving, administrations, waste, audit, transfers, ...")],
               start: Annotated[str, Query(alias="from", pattern=DAY, description="First day, inclusive (local).")],
               end: Annotated[str, Query(alias="to", pattern=DAY, description="Last day, inclusive (local).")],
               paper: Annotated[Literal["letter", "a4"], Query()] = "letter",
               vial: Annotated[str | None, Query(min_length=1, max_length=128,
                                                 description="The container, for the vial history.")] = None,
               window: Annotated[Literal["audit"] | None, Query(
                   description="administrations or waste: for the audit window of the same days (issue 20), "
                               "so the totals are the audit's figures.")] = None,
               ) -> Response:
    """One report as a signed PDF (the same the reports page and ``csledger report`` make).
    An unknown kind, a date that is not a day, ``to`` before ``from``: 422 naming the field; a
    period with nothing to report: the report's own 422 with its reason."""
    from reports.base import build_report, kind_named

    report_kind = kind_named(kind)  # 422 naming ``kind`` when there is none
    if report_kind.readers is not None and not session.roles & report_kind.readers:
        raise AccessDenied(f"the {kind} report needs one of the roles {', '.join(sorted(report_kind.readers))}",
                           type_="role-required", field="kind")
    # Reports print the book (the audit's ending figures, the stock chart): a read of the book,
    # noted as the pages note theirs.
    note_stock_read(request, ledger, who, f"report {kind} (API)")
    params = {"vial": vial} if vial is not None else None
    pdf, _ = build_report(ledger, kind, who.registrant, start, end,
                          generated_by=f"{who.printed_name} ({who.staff_id})", paper=paper, params=params,
                          reader=who.staff_id,  # the patient access log names who downloaded patient names
                          audit_window=window == "audit")
    filename = f"csledger-{kind}-{who.registrant}-{start}-to-{end}.pdf"
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})
