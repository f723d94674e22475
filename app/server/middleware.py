"""Pure ASGI middleware: the request context (id, access log, metrics, tickets) and the body's
size, time and rate limits.

Every HTTP request gets a :class:`~app.server.context.RequestContext` (made at its head when the
head hook saw it): an id (the client's ``X-Request-ID`` when it is a sane token, else a new one),
echoed as the ``X-Request-ID`` response header, and a record that the dependencies, the core and
the error handlers fill in. When the response is done, the record becomes one access-log line and
the request metrics (:class:`~app.server.access_log.AccessLog`), and the request's tickets close.

A request body sent with ``Content-Encoding: gzip`` or ``deflate`` (a zlib stream, as HTTP defines
it and Triton's clients send it) reaches the app inflated, and the body limit applies to what it
inflates to (:class:`BodyLimitMiddleware`).
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.metrics import ServiceMetrics
from ..error_bodies import REQUEST_ID_HEADER
from .access_log import AccessLog
from .context import CONTEXT_KEY, FrontDoors, RequestContext, context_of, new_context

UNMATCHED_ENDPOINT = "unmatched"  # one label value for every path no route or mount serves
PREFLIGHT_ENDPOINT = "cors_preflight"  # CORS preflights, answered by CORSMiddleware before routing
# Content-Encoding of a request body → zlib's wbits for its stream (gzip: its header; deflate: zlib's)
CONTENT_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
INFLATE_STEP = 64 * 1024  # bytes inflated per step: a body's inflated size is checked as it grows


class BodyTooLargeError(ValueError):
    """The request body is (or announces itself) longer than the limit."""

    def __init__(self, max_bytes: int, announced: int | None = None) -> None:
        size = f"announces {announced} bytes" if announced is not None else "is longer"
        super().__init__(f"the request body {size}; the limit is {max_bytes} bytes (ATTNZOO_MAX_BODY_BYTES)")


class RequestBodyTimeoutError(Exception):
    """The request body did not arrive within the request deadline, or far slower than the minimum rate."""


class UnsupportedContentEncodingError(ValueError):
    """A request body in a content coding the service does not inflate (RFC 9110: 415, naming the
    codings it takes in ``Accept-Encoding``)."""

    headers = {"Accept-Encoding": ", ".join(CONTENT_CODINGS)}

    def __init__(self, coding: str) -> None:
        super().__init__(f"Content-Encoding {coding!r} is not supported; send the body uncompressed, gzip or deflate (zlib)")


class ContentDecodingError(ValueError):
    """A request body that does not inflate as its ``Content-Encoding`` says."""


class _Inflater:
    """Inflates one request body step by step, never holding more than ``max_bytes`` of it."""

    def __init__(self, coding: str, max_bytes: int) -> None:
        self.coding = coding
        self.max_bytes = max_bytes
        self.inflated = 0
        self._stream = zlib.decompressobj(CONTENT_CODINGS[coding])

    def feed(self, data: bytes, final: bool) -> bytes:
        """What ``data`` (the next bytes of the body as sent) inflates to.

        Raises:
            BodyTooLargeError: the body inflates past ``max_bytes`` (found before inflating more
            than ``INFLATE_STEP`` past it).
            ContentDecodingError: not a stream of the coding, data after its end, or cut short.
        """
        pieces = []
        pending = data
        try:
            while pending:
                if self._stream.eof:
                    raise ContentDecodingError(f"the request body has data after the end of its {self.coding} stream")
                piece = self._stream.decompress(pending, INFLATE_STEP)
                pending = self._stream.unconsumed_tail
                self._count(piece)
                pieces.append(piece)
            if final:
                piece = self._stream.flush()
                self._count(piece)
                pieces.append(piece)
        except zlib.error as exc:
            raise ContentDecodingError(f"the request body is not a valid {self.coding} stream ({exc})") from None
        if self._stream.unused_data:
            raise ContentDecodingError(f"the request body has data after the end of its {self.coding} stream")
        if final and not self._stream.eof:
            raise ContentDecodingError(f"the request body ends before its {self.coding} stream does")
        return b"".join(pieces)

    def _count(self, piece: bytes) -> None:
        self.inflated += len(piece)
        if self.inflated > self.max_bytes:
            raise BodyTooLargeError(self.max_bytes)


class RequestContextMiddleware:
    """Gives each request its context (or adopts the one its head got), and ends it: the
    ``X-Request-ID`` header, the access-log line and metrics, its tickets closed."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, doors: FrontDoors) -> None:
        self.app = app
        self.access_log = AccessLog(metrics)
        self.doors = doors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = context_of(scope)
        if context is None:
            context = new_context(scope.get("headers", ()), scope.get("path", ""), self.doors)
            scope.setdefault("state", {})[CONTEXT_KEY] = context
        status = 500  # if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = context.record.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            context.close()
            self._log(scope, context, status, time.perf_counter() - started)

    def _log(self, scope: Scope, context: RequestContext, status: int, seconds: float) -> None:
        client = scope.get("client")
        endpoint = endpoint_label(scope)
        if endpoint == UNMATCHED_ENDPOINT:
            self.access_log.unknown(context.door.protocol, f"{scope.get('method')} {scope.get('path')}", context.record.request_id)
        self.access_log.finish(
            context.record,
            protocol=context.door.protocol,
            endpoint=endpoint,
            method=scope.get("method"),
            path=scope.get("path"),
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
        return str(label)
    return PREFLIGHT_ENDPOINT if _is_preflight(scope) else UNMATCHED_ENDPOINT


def _plain_route_serving(scope: Scope) -> BaseRoute | None:
    # A mount that answered has moved root_path to its prefix; match from the app's own root.
    probe = {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    routes: list[BaseRoute] = getattr(scope.get("app"), "routes", [])
    for route in routes:
        if getattr(route, "path_format", None) and route.matches(probe)[0] is not Match.NONE:
            return route
    return None


def _is_preflight(scope: Scope) -> bool:
    return scope.get("method") == "OPTIONS" and any(name == b"access-control-request-method" for name, _ in scope.get("headers", ()))


@dataclass
class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, without reading them whole; bodies not in
    within ``timeout_s`` of the request's start, or arriving slower than ``min_rate``, with 408.

    A ``Content-Length`` over the limit is answered at once (in its front door's error body),
    before any body byte is read; a body without one (chunked) is counted while it streams in, and
    the read that crosses the limit raises :class:`BodyTooLargeError` (413 through the error
    handlers). A compressed body (:data:`CONTENT_CODINGS`) is inflated as it streams in and counted
    as inflated: a small body that inflates past the limit (a decompression bomb) is refused so,
    having inflated no more than the limit; one that does not inflate raises
    :class:`ContentDecodingError` (400), another coding :class:`UnsupportedContentEncodingError`
    (415), both when the app reads the body. The app sees the inflated body, without the
    ``Content-Encoding`` and ``Content-Length`` of the one sent.

    While the app waits for the body, the body must average ``min_rate`` bytes per
    second of that waiting once ``grace_s`` seconds of it have passed (time the app spends not
    reading does not count: the client cannot be blamed for it): a read that falls behind, or is
    still waiting at the deadline, raises :class:`RequestBodyTimeoutError` (408, connection closed),
    so a stalled upload ends its request long before its deadline. Once the body is in, reads (the
    app waiting for a disconnect) are not limited.
    """

    app: ASGIApp
    max_bytes: int
    timeout_s: float
    min_rate: float
    grace_s: float
    doors: FrontDoors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _content_length(scope)
        if announced is not None and announced > self.max_bytes:
            await self._refuse_too_large(scope, send, BodyTooLargeError(self.max_bytes, announced))
            return
        coding = _content_coding(scope)
        inflater = _Inflater(coding, self.max_bytes) if coding in CONTENT_CODINGS else None
        if inflater is not None:  # the request's own scope, which the outer middleware reads at the end too
            skipped = (b"content-encoding", b"content-length")
            scope["headers"] = [(name, value) for name, value in scope.get("headers", ()) if name not in skipped]
        loop = asyncio.get_running_loop()
        received = 0
        waited_s = 0.0  # time the app spent waiting for body bytes
        body_done = False
        deadline = loop.time() + self.timeout_s

        async def receive_within_limits() -> Message:
            nonlocal received, waited_s, body_done
            if body_done:
                return await receive()
            if coding is not None and inflater is None:
                raise UnsupportedContentEncodingError(coding)
            began = loop.time()
            limit = deadline - began
            if self.min_rate > 0:
                limit = min(limit, max(self.grace_s, received / self.min_rate) - waited_s)
            try:
                message = await asyncio.wait_for(receive(), max(0.0, limit))
            except asyncio.TimeoutError:
                raise RequestBodyTimeoutError(self._timeout_reason(received, waited_s + loop.time() - began)) from None
            waited_s += loop.time() - began
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
                body_done = not message.get("more_body", False)
                if inflater is not None:
                    message = {**message, "body": inflater.feed(message.get("body", b""), final=body_done)}
            else:
                body_done = True
            return message

        await self.app(scope, receive_within_limits, send)

    def _timeout_reason(self, received: int, waited_s: float) -> str:
        if self.min_rate > 0 and waited_s < self.timeout_s:
            return (
                f"the request body arrived too slowly: {received} bytes in {waited_s:.1f} s, under the minimum of "
                f"{self.min_rate:g} bytes/s (ATTNZOO_MIN_BODY_RATE)"
            )
        return f"the request body did not arrive within {self.timeout_s:g} s (ATTNZOO_REQUEST_TIMEOUT_S)"

    async def _refuse_too_large(self, scope: Scope, send: Send, error: BodyTooLargeError) -> None:
        context = context_of(scope)
        door = context.door if context is not None else self.doors.of(scope.get("path", ""))
        request_id = context.record.request_id if context is not None else None
        if context is not None:
            context.record.error = "body_too_large"
        body = json.dumps(door.error_body("body_too_large", str(error), request_id), separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_coding(scope: Scope) -> str | None:
    """The request body's content coding, lower-case (None: none, or ``identity``)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-encoding":
            coding = value.decode("latin-1").strip().lower()
            return None if coding in ("", "identity") else coding
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
