"""The "More tasks" page (issue 21): every task page that is not in the navigation, grouped in
the clinic's words, each listed only to a login whose roles may use it. Read-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api.web.core import DEA_PATTERN, TASK_INDEX, PageRoute, open_page

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]


@router.get("/ui/{dea}/tasks", name="web_tasks")
async def tasks(request: Request, dea: Dea) -> Response:
    """The task index: groups of (label, link) this login may open; an empty group is left out."""
    page = await open_page(request, dea, "tasks")
    groups: dict[str, list[tuple[str, str]]] = {}
    for group, key, label, href in TASK_INDEX:
        if page.may(key):
            groups.setdefault(group, []).append((label, href))
    return page.render("tasks.html", groups=groups)
