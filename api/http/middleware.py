"""ASGI middleware: request size limit, request ids, no-store caching, structured access logs.

The access log is one JSON object per request on the ``csledger.access`` logger: time, request
id, method, the route *template* (``/v1/registrants/{dea}/vials/{vial_id}``, never the concrete
path or the query string), registrant, staff id, status and duration. Nothing from bodies, no
health data, no tokens.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http.problems import problem_title

access_log = logging.getLogger("csledger.access")
PROBLEM_BASE = "https://csledger.local/problems/"
#: Request bodies handed to the route as a stream (not read up front under ``max_body_bytes``).
#: The pages' uploads (issue 21: a document, the scanned downtime sheet) are read the same way
#: (api/web/routes_backfill.py), under the documents' limit, not the forms'.
_STREAMED = re.compile(r"^/(v1/registrants/[^/]+/documents|ui/[^/]+/documents/new|ui/[^/]+/backfill)$")


class ApiMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int):
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if scope["method"] == "POST" and _STREAMED.match(scope.get("path", "")):
                # a document upload: the route reads the stream and enforces its own, larger limit
                await self.app(scope, receive, send_wrapper)
                return
            declared = dict(scope.get("headers") or []).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                await self._too_large(send_wrapper)
                return
            # Read the body up front (bounded), then hand it to the app.
            chunks: list[bytes] = []
            size = 0
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                more = True
                while more:
                    msg = await receive()
                    if msg["type"] == "http.disconnect":
                        return
                    chunk = msg.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        await self._too_large(send_wrapper)
                        return
                    chunks.append(chunk)
                    more = msg.get("more_body", False)
                body = b"".join(chunks)
                duplicate = _duplicate_key(scope, body)
                if duplicate is not None:
                    await _problem(send_wrapper, 422, "invalid-input",
                                   f"{duplicate}: the key appears twice in the body; send each key once",
                                   [{"field": duplicate, "reason": "the key appears twice in the body"}])
                    return
                sent = False

                async def replay() -> Message:
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path_format", None) or getattr(route, "path", None) or "(no route)"
            params = scope.get("path_params") or {}
            state = scope.get("state") or {}
            access_log.info(json.dumps({
                "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "request_id": request_id, "method": scope.get("method"), "route": path,
                "registrant": params.get("dea") if isinstance(params.get("dea"), str) and len(params["dea"]) == 9 else None,
                "staff_id": state.get("staff_id"), "status": status_holder["status"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }, sort_keys=True))

    async def _too_large(self, send: Send) -> None:
        await _problem(send, 413, "payload-too-large",
                       f"the request body is larger than {self.max_body} bytes", [])


async def _problem(send: Send, status: int, type_: str, detail: str, errors: list) -> None:
    body = json.dumps({"type": PROBLEM_BASE + type_, "title": problem_title(type_), "status": status, "detail": detail,
                       "errors": errors}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _DuplicateKey(Exception):
    pass


def _duplicate_key(scope: Scope, body: bytes) -> str | None:
    """The first key a JSON body gives twice in one object (its name), else None.

    Python's parser keeps the last of two equal keys, another parser may keep the first: a
    witness shown one value could sign for a body the ledger reads with the other, so such a
    body is refused. Bodies that are not JSON are left to the route to refuse."""
    ctype = dict(scope.get("headers") or []).get(b"content-type", b"").split(b";")[0].strip().lower()
    if not body or not (ctype == b"application/json" or ctype.endswith(b"+json")) or body.count(b'"') < 4:
        return None

    def pairs(items: list) -> dict:
        seen: dict = {}
        for key, value in items:
            if key in seen:
                raise _DuplicateKey(key)
            seen[key] = value
        return seen

    try:
        json.loads(body, object_pairs_hook=pairs)
    except _DuplicateKey as dup:
        key = dup.args[0]
        return key if isinstance(key, str) and key.isprintable() and len(key) <= 64 else "body"
    except (ValueError, RecursionError):
        return None
    return None
