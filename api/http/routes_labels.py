"""Beyond-use labels over the API (issue 21): ``GET /v1/registrants/{dea}/containers/{id}/label``.

The label PDF of a vial once first punctured, or of a bag or syringe once prepared
(``ledger.services.labels.container_label`` reads it, ``reports.labels.render_label`` draws it,
``api.web.labels.label_pdf`` names the vial as the pages do),
for those who draw and prepare (the ``get_container_label`` row of the role table). The id is
the container's as the ledger has it (``V12-3``, ``P40``, a GS1 ``(01)...(21)...``; quote the
parentheses in a URL or not, both arrive the same).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from api.http.deps import LedgerDep, actor
from api.http.schemas import PROBLEM_RESPONSES
from api.web.labels import label_pdf
from ledger.domain.principal import Principal
from ledger.services.labels import CONTAINER_ID

router = APIRouter(prefix="/v1/registrants/{dea}", tags=["stock"], responses=PROBLEM_RESPONSES)
LABEL_RESPONSE = {200: {"content": {"application/pdf": {}},
                        "description": "A 2 x 1 inch label PDF: product, short id, a QR code of the full container "
                                       "id, first puncture or preparation time, beyond-use date or time, and who "
                                       "punctured or prepared it (from the entry's signature)"}}


@router.get("/containers/{container_id}/label", name="get_container_label", response_class=Response,
            responses=LABEL_RESPONSE)
def get_container_label(ledger: LedgerDep, who: Annotated[Principal, actor("get_container_label")],
                        container_id: Annotated[str, Path(pattern=CONTAINER_ID, max_length=64,
                                                          description="V12-3, P40 or (01)<GTIN>(21)<serial>")],
                        ) -> Response:
    """The beyond-use label of one container, as a PDF to print on 2 x 1 inch label stock. A
    sealed vial has no label yet (its clock starts at the first puncture), nor has a container no
    longer on hand or a preparation already infused or wasted: 409 naming ``container_id``; an id
    of nothing: 404."""
    pdf, _ = label_pdf(ledger, who.registrant, container_id)
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in container_id)
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="label-{name}.pdf"', "Cache-Control": "no-store"})
