"""The FastAPI application: HTTP adapter over the ledger services.

Routes parse, authenticate, call one service and render; they never validate stock, open
transactions or commit. Errors are RFC 9457 ``application/problem+json``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..ledger.errors import LedgerError
from ..ledger.store import Ledger, durability_settings
from ..settings import Settings

PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://csledger.local/problems/"


def problem(status: int, type_: str, title: str, detail: str, **extra) -> JSONResponse:
    return JSONResponse(
        {"type": PROBLEM_BASE + type_, "title": title, "status": status, "detail": detail, **extra},
        status_code=status, media_type=PROBLEM,
    )


def create_app(ledger: Ledger, settings: Settings) -> FastAPI:
    app = FastAPI(title="csledger", version="0.1.0",
                  description="Controlled-substance ledger for ketamine infusion clinics.")
    app.state.ledger = ledger
    app.state.settings = settings

    @app.exception_handler(LedgerError)
    async def ledger_error(_: Request, exc: LedgerError):
        fields = [{"field": exc.field, "reason": exc.reason}] if exc.field else []
        return problem(exc.status, exc.type, type(exc).__name__, str(exc), errors=fields)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        fields = [{"field": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg", "")} for e in exc.errors()]
        return problem(422, "invalid-input", "Invalid input", "the request is malformed", errors=fields)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness and durability: the database answers and runs with durable commits."""
        return {"status": "ok", "database": ledger.dialect, "durability": durability_settings(ledger.engine)}

    return app
