"""The clinic-floor web interface: server-rendered pages (Jinja2) on the same FastAPI app and the
same services as the HTTP API. ``router`` is included by ``api.app.create_app``; pages live under
``/ui/`` and each location (DEA registration) under ``/ui/<DEA>/``."""

from __future__ import annotations

from fastapi import APIRouter

from api.web import (
    routes_clinic,
    routes_disposal,
    routes_loss,
    routes_me,
    routes_pages,
    routes_session,
)

router = APIRouter(include_in_schema=False)
for _m in (routes_session, routes_pages, routes_clinic, routes_disposal, routes_loss, routes_me):
    router.include_router(_m.router)

from api.web import routes_downtime  # noqa: E402  (issue 21: downtime forms, beyond-use labels)

router.include_router(routes_downtime.router)

from api.web import routes_inventory  # noqa: E402  (issue 20: inventories, witnessed, compared with the book)

router.include_router(routes_inventory.router)


from api.web import routes_overview  # noqa: E402  (issue 21: charts a manager reads at a glance)

router.include_router(routes_overview.router)

from api.web import (  # noqa: E402  (issue 21: a page for every task of the API)
    routes_backfill,
    routes_corrections,
    routes_patients,
    routes_preparations,
    routes_reference,
    routes_staff,
    routes_stock_events,
    routes_tasks,
)

for _m in (routes_tasks, routes_staff, routes_reference, routes_patients, routes_stock_events,
           routes_preparations, routes_corrections, routes_backfill):
    router.include_router(_m.router)

# After routes_backfill: its /documents/new must be matched before /documents/{sha256}.
from api.web import routes_documents  # noqa: E402  (issue 20: the documents entries cite)

router.include_router(routes_documents.router)

__all__ = ["router"]
