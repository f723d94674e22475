"""Pure ASGI middleware: request context (id, access log, metrics) and the body size and time limits.

Every HTTP request gets an id (the client's ``X-Request-ID`` when it is a sane token, else a new
one), echoed as the ``X-Request-ID`` response header, and a :class:`RequestRecord` in
``scope["state"]["record"]`` that the dependencies and error handlers fill in (the variant that
answered, the batch size, the error code). When the response is done, the record becomes one JSON
line on the ``attnzoo.access`` logger and updates ``attnzoo_requests_total`` /
``attnzoo_request_duration_seconds`` (:class:`AccessLog`, which the gRPC front door's requests
end in too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import REQUEST_ID_HEADER, RequestBodyTimeoutError, error_response, speaks_v2
from .metrics import PROTOCOL_HTTP, PROTOCOL_V2_HTTP, ServiceMetrics
from .upload import BodyTooLargeError

ACCESS_LOGGER = "attnzoo.access"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED_ENDPOINT = "unmatched"  # one label value for every path no route or mount serves
PREFLIGHT_ENDPOINT = "cors_preflight"  # CORS preflights, answered by CORSMiddleware before routing


@dataclass
class RequestRecord:
    """What the access log and the request metrics say of one request."""

    request_id: str
    variant: str = ""  # the variant that answered ("" when none)
    batch_size: int | None = None  # images that shared the model call
    error: str | None = None  # the error code of an error response
    budget_met: bool | None = None  # variant=auto: whether the chosen variant fits the budget


def record_of(scope: Scope) -> RequestRecord | None:
    return scope.get("state", {}).get("record")


def request_id_from(value: str | None) -> str:
    """The client's request id when it is a sane token, else a new one."""
    return value if value is not None and _SANE_ID.match(value) else uuid.uuid4().hex


class AccessLog:
    """Where every request ends, whatever its front door: the request metrics and one JSON line."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def finish(
        self,
        record: RequestRecord,
        *,
        protocol: str,
        endpoint: str,
        method: str | None,
        path: str | None,
        query: str,
        status: int,
        seconds: float,
        client: str | None,
        **fields: object,
    ) -> None:
        """Count the request and log it; ``fields`` are added to the line (e.g. ``grpc_status``)."""
        self.metrics.observe_request(record.variant, endpoint, status, protocol, seconds)
        line = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": record.request_id,
            "protocol": protocol,
            "method": method,
            "path": path,
            "query": query,
            "status": status,
            "duration_ms": round(seconds * 1000.0, 3),
            "variant": record.variant or None,
            "client": client,
            **fields,
        }
        if record.batch_size is not None:
            line["batch_size"] = record.batch_size
        if record.error is not None:
            line["error"] = record.error
        if record.budget_met is not None:
            line["budget_met"] = record.budget_met
        self.logger.info(json.dumps(line, separators=(",", ":")))


class AccessLogHandler(logging.StreamHandler):
    """Bare JSON lines on stderr."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))


def configure_access_log() -> logging.Logger:
    """The access logger, writing bare JSON lines to stderr (idempotent)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(handler, AccessLogHandler) for handler in logger.handlers):
        logger.addHandler(AccessLogHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.access_log = AccessLog(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        record = RequestRecord(request_id_from(incoming_request_id(scope.get("headers", ()))))
        scope.setdefault("state", {})["record"] = record
        status = 500  # if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = record.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._log(scope, record, status, time.perf_counter() - started)

    def _log(self, scope: Scope, record: RequestRecord, status: int, seconds: float) -> None:
        client = scope.get("client")
        path = scope.get("path")
        self.access_log.finish(
            record,
            protocol=PROTOCOL_V2_HTTP if speaks_v2(path or "") else PROTOCOL_HTTP,
            endpoint=endpoint_label(scope),
            method=scope.get("method"),
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            status=status,
            seconds=seconds,
            client=f"{client[0]}:{client[1]}" if client else None,
        )


def endpoint_label(scope: Scope) -> str:
    """The ``endpoint`` label of a finished request: the path template of the route or mount that
    served it (``/models/{variant}``, ``/static/{path}``, ``/metrics``); :data:`PREFLIGHT_ENDPOINT`
    for a CORS preflight (CORSMiddleware answers those itself, for any path); else
    :data:`UNMATCHED_ENDPOINT`.

    FastAPI records its own routes in ``scope["route"]``; Starlette routes and mounts (the page's
    files, the docs assets) leave none, so those are matched here against the app's routes.
    """
    route = scope.get("route") or _plain_route_serving(scope)
    label = getattr(route, "path_format", None)
    if label:
        return label
    return PREFLIGHT_ENDPOINT if _is_preflight(scope) else UNMATCHED_ENDPOINT


def _plain_route_serving(scope: Scope) -> BaseRoute | None:
    # A mount that answered has moved root_path to its prefix; match from the app's own root.
    probe = {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    for route in getattr(scope.get("app"), "routes", ()):
        if getattr(route, "path_format", None) and route.matches(probe)[0] is not Match.NONE:
            return route
    return None


def _is_preflight(scope: Scope) -> bool:
    return scope.get("method") == "OPTIONS" and any(name == b"access-control-request-method" for name, _ in scope.get("headers", ()))


def incoming_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The client's ``X-Request-ID`` among a request's ``headers`` (ASGI's: lower-case names), if any."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode("latin-1")
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
