"""The overview page (issue 21): what a manager reconciling stock reads at a glance. Stock per
product over the last 12 weeks (steps), administered mL and waste share per week, open
discrepancies by age and the deadlines coming up, each as an SVG drawn here and followed by a
table of the same numbers. Read-only: it records nothing."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from markupsafe import Markup

from api.web import overview as model
from api.web import svg
from api.web.core import DEA_PATTERN, PageRoute, open_page

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Dea = Annotated[str, Path(pattern=DEA_PATTERN)]


def _day(t: datetime) -> str:
    return f"{t.day} {t:%b}"


def _seconds(t: datetime, start: datetime) -> Decimal:
    return Decimal(int((t - start).total_seconds()))


def charts(data: dict[str, Any]) -> dict[str, Any]:
    """The figures with their SVG markup (``Markup``: svg.py escaped every text already)."""
    starts, now = data["starts"], data["now"]
    start, end = starts[0], now
    span = _seconds(end, start)
    ticks = [(_seconds(s, start), _day(s)) for s in starts[::3]]
    for p in data["stock"]:
        steps = [(Decimal(0), p["opening"])] + [(_seconds(s["at"], start), s["balance"]) for s in p["steps"]]
        p["svg"] = Markup(svg.step_chart(
            f"{p['name']}: stock in mL from {_day(start)} to {_day(now)}, now {p['balance']} mL",
            Decimal(0), span, steps, unit="mL", ticks=ticks))
    weeks = data["weeks"]
    data["use_svg"] = Markup(svg.bar_chart(
        "Administered mL per week, last 12 weeks: " + ", ".join(
            f"week of {_day(w['start'])} {w['administered']} mL" for w in weeks),
        # every other week named under its bar (twelve dates do not fit a phone); the table names each
        [(_day(w["start"]) if i % 2 == 0 else "", w["administered"]) for i, w in enumerate(weeks)], unit="mL",
        marks=[f"{w['waste_pct']}%" if w["waste_pct"] is not None else "" for w in weeks]))
    ages = data["ages"]
    data["ages_svg"] = Markup(svg.bar_chart(
        "Open discrepancies by age: " + ", ".join(f"{b['label']} {b['count']}" for b in ages),
        [(b["label"], Decimal(b["count"])) for b in ages], unit=""))
    return data


@router.get("/ui/{dea}/overview", name="web_overview")
async def overview(request: Request, dea: Dea) -> Response:
    """The charts and their tables, for the location's managers and those who review it."""
    page = await open_page(request, dea, "overview")
    data = await run_in_threadpool(model.overview, request.app.state.ledger, dea, page.local_now(), page.tz)
    return page.render("overview.html", **charts(data))
