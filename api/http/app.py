"""The FastAPI application: HTTP adapter over the ledger services.

Routes parse, authenticate, call one service and render; they never validate stock, open
transactions or commit. Errors are RFC 9457 ``application/problem+json`` with a stable ``type``,
a readable ``detail`` and the offending fields; bad input is a 422, never a 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pwdlib import PasswordHash
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.http.auth import Authenticator
from api.http.auth_store import AuthStore
from api.http.deps import refuse_nul
from api.http.middleware import ApiMiddleware, access_log
from api.http.problems import problem_title
from ledger.domain.errors import LedgerError, SignatureNeeded
from ledger.settings import Settings
from ledger.storage.store import Ledger, durability_settings

PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://csledger.local/problems/"
log = logging.getLogger("csledger.api")

_HTTP_TYPES = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
               406: "not-acceptable", 413: "payload-too-large", 415: "unsupported-media-type"}


def _database_outage_errors() -> tuple[type[Exception], ...]:
    """SQLAlchemy's wrapped errors and the drivers' own (``RawSql`` runs on the DBAPI connection)."""
    import sqlite3

    found: list[type[Exception]] = [sa_exc.DBAPIError, sqlite3.OperationalError]
    try:
        import psycopg

        found.append(psycopg.OperationalError)
        found.append(psycopg.errors.ReadOnlySqlTransaction)  # a standby, or a fenced old primary
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    return tuple(found)


def _lifespan(threads: int):
    """Widen the thread pool that runs the (synchronous) routes. Password checks queue for a
    hashing slot inside their thread; with the stock 40 threads a burst of witness sign-offs
    would hold every thread while waiting, and a nurse's stock lookup would wait behind them."""

    @asynccontextmanager
    async def lifespan(_app) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    return lifespan


def problem(status: int, type_: str, detail: str, *, headers: dict | None = None, **extra) -> JSONResponse:
    """An RFC 9457 problem response; its title is the type's one title (``problem_title``)."""
    return JSONResponse(
        {"type": PROBLEM_BASE + type_, "title": problem_title(type_), "status": status, "detail": detail, **extra},
        status_code=status, media_type=PROBLEM, headers=headers,
    )


def _field_path(loc: tuple) -> str:
    """pydantic's ``("body", "lines", 0, "ndc")`` as the services name fields: ``lines[0].ndc``."""
    parts = list(loc)
    where = parts.pop(0) if parts and parts[0] in ("body", "query", "path", "header") else None
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    if where in ("query", "path", "header"):
        return out or where
    return out or "body"


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for the path template matching ``path``."""
    patterns = getattr(app.state, "path_patterns", None)
    if patterns is None:
        patterns = [(re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(t)) + "$"), sorted(m.upper() for m in ops))
                    for t, ops in app.openapi()["paths"].items()]
        app.state.path_patterns = patterns
    return sorted({m for rx, methods in patterns if rx.match(path) for m in methods})


def create_app(ledger: Ledger, settings: Settings, *, clock: Callable[[], datetime] | None = None,
               password_hasher: PasswordHash | None = None) -> FastAPI:
    """The API over ``ledger``. ``clock`` (default: the ledger's) times sessions and assertions;
    ``password_hasher`` defaults to argon2id with pwdlib's recommended parameters."""
    from api.http import (
        routes_alerts,
        routes_clinical,
        routes_credentials,
        routes_prescribers,
        routes_records,
        routes_reference,
        routes_session,
        routes_stock,
    )

    app = FastAPI(title="csledger", version="0.1.0", lifespan=_lifespan(getattr(settings, "request_threads", 100)),
                  description="Controlled-substance ledger for ketamine infusion clinics. Log in at "
                              "`POST /v1/registrants/{dea}/sessions`; send the token as a bearer token.",
                  responses={422: {"description": "Malformed input (problem+json)"}},
                  dependencies=[Depends(refuse_nul)],
                  docs_url=None, redoc_url=None)  # /docs is served from the app's own files (docs_page)
    app.state.ledger = ledger
    app.state.settings = settings
    app.state.auth = Authenticator(AuthStore(ledger), settings, clock=clock or ledger.clock, hasher=password_hasher)

    @app.exception_handler(LedgerError)
    async def ledger_error(_: Request, exc: LedgerError):
        fields = [{"field": exc.field, "reason": exc.reason}] if exc.field else []
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status >= 500 and not getattr(exc, "expose", False):
            log.error("ledger error %s", type(exc).__name__)
            return problem(500, exc.type, "the server could not complete the request", errors=[])
        extra = {"signature_needed": exc.challenge} if isinstance(exc, SignatureNeeded) else {}
        # An error may carry more for the client (issue 20: the counts an audit could run between)
        extra.update(getattr(exc, "problem_extra", None) or {})
        return problem(exc.status, exc.type, str(exc), headers=headers, errors=fields, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        fields = []
        for e in exc.errors():
            loc = tuple(e.get("loc", ()))
            reason = str(e.get("msg", "invalid"))
            if e.get("type") == "json_invalid":
                reason, loc = "the body is not valid JSON", ("body",)
            fields.append({"field": _field_path(loc), "reason": reason})
        detail = "; ".join(f"{f['field']}: {f['reason']}" for f in fields[:5]) or "the request is malformed"
        return problem(422, "invalid-input", detail, errors=fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body": malformed input
            return problem(422, "invalid-input", "body: the body could not be read as JSON",
                           errors=[{"field": "body", "reason": "the body could not be read as JSON"}])
        type_ = _HTTP_TYPES.get(exc.status_code, f"http-{exc.status_code}")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # list every method of the path, not only the first route's
            headers["Allow"] = ", ".join(_allowed_methods(app, request.url.path)) or headers.get("Allow", "")
        return problem(exc.status_code, type_, str(exc.detail), errors=[],
                       headers=headers or None)

    async def database_unavailable(_: Request, exc: Exception):
        # The database server restarting, a dropped connection, a disk error: the client cannot
        # know whether a command in flight committed, so it is told to retry with the same
        # Idempotency-Key (a replay never records twice) rather than handed a bare 500.
        # A server in recovery or fenced after a failover answers "read-only transaction"
        # (SQLSTATE 25006): the command did not commit, and a retry reaches the promoted primary.
        read_only = "25006" in (getattr(exc, "sqlstate", None), getattr(getattr(exc, "orig", None), "sqlstate", None))
        if isinstance(exc, sa_exc.DBAPIError) and not (exc.connection_invalidated or read_only
                                                       or isinstance(exc, sa_exc.OperationalError)):
            return await unexpected(_, exc)
        log.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
        return problem(503, "database-unavailable",
                       "the database did not answer; retry the same request with the same Idempotency-Key "
                       "(a retry never records twice)", headers={"Retry-After": "1"}, errors=[])

    for cls in _database_outage_errors():
        app.add_exception_handler(cls, database_unavailable)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        log.exception("unexpected error: %s", type(exc).__name__)
        return problem(500, "internal-error", "the server could not complete the request; "
                       "nothing was recorded unless a later read shows it", errors=[])

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness and durability: the database answers and runs with durable commits. ``refused``
        names each registrant whose appends are refused (chain unverified, rollback) and why."""
        tlog = getattr(ledger, "transparency_log", None)
        refused = tlog.refused() if tlog is not None else {}
        return {"status": "degraded" if refused else "ok", "database": ledger.dialect,
                "durability": durability_settings(ledger.engine), "refused": refused}

    for module in (routes_session, routes_credentials, routes_reference, routes_prescribers, routes_stock, routes_clinical,
                   routes_records, routes_alerts):
        app.include_router(module.router)

    from api.http import routes_esketamine  # issue 19: esketamine (Spravato) nasal-spray sessions

    app.include_router(routes_esketamine.router)

    from api.http import routes_preparations  # issue 19: diluted infusions (bags, syringe pumps)

    app.include_router(routes_preparations.router)

    from api.http import routes_packages  # issue 19: cartons opened before a witness

    app.include_router(routes_packages.router)

    from api.http import routes_reports  # issue 20: report PDFs over /v1

    app.include_router(routes_reports.router)

    from api.http import routes_labels  # issue 21: beyond-use labels

    app.include_router(routes_labels.router)

    # issue 4: checkpoint, keys, proofs (public). Included after the routers above so that
    # the role-gated GET .../entries/{seq} of routes_records answers that path.
    from api.http.integrity import router as integrity_router

    app.include_router(integrity_router)

    from api.http import routes_documents  # issue 20: document upload and download

    app.include_router(routes_documents.router)

    # issue 21: /docs without a CDN, /favicon.ico
    from api.http.docs_page import router_for as docs_router

    app.include_router(docs_router(app))

    from api.web import router as web_router  # issue 9: the clinic-floor pages under /ui/

    app.include_router(web_router)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Witness-Assertion"])
    app.add_middleware(ApiMiddleware, max_body_bytes=settings.max_body_bytes)
    _ensure_access_log_output()
    return app


def _ensure_access_log_output() -> None:
    """The access log goes to stderr as one JSON object per line unless logging is configured."""
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
