"""Pure ASGI middleware: request context (id, access log, metrics) and the body size and time limits.

Every HTTP request gets an id (the client's ``X-Request-ID`` when it is a sane token, else a new
one), stored in ``scope["state"]["request_id"]`` for handlers and echoed as the ``X-Request-ID``
response header. When the response is done, one JSON line goes to the ``attnzoo.access`` logger
and ``attnzoo_requests_total`` / ``attnzoo_request_duration_seconds`` are updated. The route may
put the resolved variant in ``scope["state"]["variant"]`` to label them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import REQUEST_ID_HEADER, BodyTooLargeError, RequestBodyTimeoutError, error_response
from .metrics import ServiceMetrics

ACCESS_LOGGER = "attnzoo.access"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED_ENDPOINT = "unmatched"  # one label value for every path no route serves
CLIENT_CLOSED = 499  # nginx's status for "client closed the request"


def configure_access_log() -> logging.Logger:
    """The access logger, writing bare JSON lines to stderr (idempotent)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(getattr(h, "_attnzoo_access", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._attnzoo_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, state, request_id, status, time.perf_counter() - started)

    def _record(self, scope: Scope, state: dict, request_id: str, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or UNMATCHED_ENDPOINT
        variant = state.get("variant", "")
        self.metrics.requests.labels(variant, endpoint, str(status)).inc()
        self.metrics.request_duration.labels(variant, endpoint).observe(seconds)
        client = scope.get("client")
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "query": scope.get("query_string", b"").decode("latin-1"),
            "status": status,
            "duration_ms": round(seconds * 1000.0, 3),
            "variant": variant or None,
            "client": f"{client[0]}:{client[1]}" if client else None,
        }
        for key in ("batch_size", "error"):
            if key in state:
                record[key] = state[key]
        self.logger.info(json.dumps(record, separators=(",", ":")))


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_ID.match(text) else None
    return None


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, without reading them whole, and bodies
    not in within ``timeout_s`` of the request's start with 408.

    A ``Content-Length`` over the limit is answered at once, before any body byte is read; a body
    without one (chunked) is counted while it streams in, and the read that crosses the limit
    raises :class:`BodyTooLargeError` (mapped to 413 by the error handlers). A read of the body
    still waiting at the deadline raises :class:`RequestBodyTimeoutError` (408, connection closed),
    so a stalled upload ends its request like any other error. Once the body is in, reads (the
    app waiting for a disconnect) are not limited.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            error = BodyTooLargeError(self.max_bytes, announced)
            response = error_response(Request(scope), 413, "body_too_large", str(error))
            await response(scope, receive, send)
            return
        received = 0
        body_done = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def receive_within_limit() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                raise RequestBodyTimeoutError(self.timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, receive_within_limit, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
