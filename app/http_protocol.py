"""The HTTP/1.1 connection the service runs: uvicorn's httptools protocol plus the limits it lacks.

uvicorn's default protocol (httptools, the fast C parser of ``uvicorn[standard]``) has no limit on
the size of a request head and no deadline for a request to arrive: a 64 MiB header is buffered and
accepted, and a client that sends half a request and stops holds its connection, and the app's
request, forever. :class:`LimitedHTTPProtocol` adds, per request:

- a head budget: request line + headers over ``max_header_bytes`` → 431. It is counted as the
  bytes arrive, so at most one socket read past the limit is ever buffered;
- a head deadline: the head must arrive within ``request_timeout_s`` of its first byte → 408;
- a body deadline: the app answers 408 itself when the body is not in within ``request_timeout_s``
  (``middleware.BodyLimitMiddleware``); if it has not answered ``BODY_GRACE_S`` later (it was not
  reading), the protocol answers 408, or closes the connection once a response has begun;
- malformed framing (what the parser refuses: a bad ``Content-Length``, both ``Content-Length`` and
  ``Transfer-Encoding``, a bad chunk size, an invalid request line, header or URL) → 400.

Refusals carry the service's JSON error body (``errors.error_body``) and ``Connection: close``,
and are logged as one line. After one, the connection reads and drops what the client still sends
for ``LINGER_S`` before closing, so that a client busy sending can still read the answer.

A refusal cannot be answered, and the connection is simply closed, when a response is already
being written on the connection: a framing error or a stall in the rest of a body the app chose
not to read (it answered first), or in the head of a request pipelined behind one being answered.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import REQUEST_ID_HEADER, error_body

logger = logging.getLogger("attnzoo.http")

LINGER_S = 2.0  # after a refusal: keep reading (and dropping) for this long before closing
BODY_GRACE_S = 2.0  # the app answers a stalled body at the deadline; the protocol acts this much later


@dataclass(frozen=True)
class HTTPLimits:
    max_header_bytes: int  # request line + header names and values, bytes
    request_timeout_s: float  # for the head (from its first byte) and for the body (from the head)


class _Phase(enum.Enum):
    IDLE = "idle"  # between requests: uvicorn's keep-alive timeout applies
    HEAD = "head"  # request line and headers arriving
    BODY = "body"  # the app has the request; its body is arriving


class _Refusal(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class LimitedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with :class:`HTTPLimits`; give uvicorn :meth:`with_limits`."""

    limits: ClassVar[HTTPLimits]

    @classmethod
    def with_limits(cls, limits: HTTPLimits) -> type[LimitedHTTPProtocol]:
        """The protocol class uvicorn instantiates per connection (``uvicorn.Config(http=...)``)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _Phase.IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._head_read_bytes = 0  # bytes of the reads that fell wholly inside the current head
        self._head_began_in_read = False
        self._refused = False

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        # a connection that never sends a byte is closed like an idle keep-alive one
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: drop what still arrives
        self._unset_keepalive_if_required()
        self._head_began_in_read = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the service has no WebSocket routes: an Upgrade request is served as plain HTTP
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, _Refusal) else _malformed(cause or exc))
            return
        except httptools.HttpParserError as exc:
            self._refuse(_malformed(exc))
            return
        if self._phase is _Phase.HEAD and not self._head_began_in_read:
            self._head_read_bytes += len(data)
            if self._head_read_bytes > self.limits.max_header_bytes:
                self._refuse(self._head_too_large())

    # -- parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEAD
        self._head_read_bytes = 0
        self._head_began_in_read = True  # this read also holds bytes before the head: not counted
        self._arm_deadline(self.limits.request_timeout_s, "the request head did not arrive")

    def on_headers_complete(self) -> None:
        head_bytes = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head_bytes > self.limits.max_header_bytes:
            raise self._head_too_large()
        self._phase = _Phase.BODY
        self._arm_deadline(self.limits.request_timeout_s + BODY_GRACE_S, "the request body did not arrive")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _Phase.IDLE
        self._cancel_deadline()
        super().on_message_complete()

    # -- refusals ------------------------------------------------------------------------------

    def _head_too_large(self) -> _Refusal:
        return _Refusal(
            431,
            "request_header_fields_too_large",
            f"the request line and headers are longer than {self.limits.max_header_bytes} bytes (ATTNZOO_MAX_HEADER_BYTES)",
        )

    def _arm_deadline(self, seconds: float, what: str) -> None:
        self._cancel_deadline()
        refusal = _Refusal(408, "request_timeout", f"{what} within {self.limits.request_timeout_s:g} s (ATTNZOO_REQUEST_TIMEOUT_S)")
        self._deadline = self.loop.call_later(seconds, self._refuse, refusal)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer ``refusal`` where the connection still can, then close it."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._cancel_deadline()
        cycle = self.cycle
        if self._phase is _Phase.BODY:
            answerable = not cycle.response_started  # the app has this request and has not answered
        else:
            answerable = cycle is None or cycle.response_complete  # nothing else is being answered
        client = "%s:%d" % self.client if self.client else "?"
        logger.warning("%s: %d %s: %s%s", client, refusal.status, refusal.code, refusal.detail, "" if answerable else " (connection closed)")
        if not answerable:
            self.transport.close()
            return
        if self._phase is _Phase.BODY:
            cycle.disconnected = True  # the app's request ends here: it reads a disconnect, and nothing it sends is written
            cycle.message_event.set()
        self.transport.write(self._error_message(refusal))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _error_message(self, refusal: _Refusal) -> bytes:
        request_id = uuid.uuid4().hex
        body = json.dumps(error_body(refusal.code, refusal.detail, request_id), separators=(",", ":")).encode()
        head = [STATUS_LINE[refusal.status]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
        ]:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"\r\n")
        return b"".join(head) + body


def _malformed(exc: BaseException) -> _Refusal:
    reason = str(exc) or type(exc).__name__
    return _Refusal(400, "bad_request", f"malformed HTTP request: {reason}")
