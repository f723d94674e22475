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

It also lets the service answer a request from its head alone, before the app runs and before its
body is read: a :class:`HeadHook` (given to :meth:`LimitedHTTPProtocol.with_limits`) sees each
:class:`RequestHead` and returns the :class:`Answer` to write instead, or None to run the app; it
is told when that request's body has been read whole (before the app reads it). The service
refuses an overloaded variant's request so (:mod:`head_admission`): under a burst, a refusal that
runs through the web stack costs the event loop about three times more.

Refusals carry the HTTP API's JSON error body (``error_bodies.detail_body``) and ``Connection: close``,
and are logged as one line (the hook logs its own answers). After one, as after the hook's answer,
the connection reads and drops what the client still sends for ``LINGER_S`` before closing, so
that a client busy sending can still read the answer.

A refusal cannot be answered, and the connection is simply closed, when a response is already
being written on the connection: a framing error or a stall in the rest of a body the app chose
not to read (it answered first), or in the head of a request pipelined behind one being answered.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..error_bodies import REQUEST_ID_HEADER, detail_body

logger = logging.getLogger("attnzoo.http")

LINGER_S = 2.0  # after a refusal: keep reading (and dropping) for this long before closing
BODY_GRACE_S = 2.0  # the app answers a stalled body at the deadline; the protocol acts this much later


@dataclass(frozen=True)
class HTTPLimits:
    max_header_bytes: int  # request line + header names and values, bytes
    request_timeout_s: float  # for the head (from its first byte) and for the body (from the head)


@dataclass(frozen=True)
class RequestHead:
    """A request as its head says, before the app runs (the parts of its ASGI scope a hook needs)."""

    method: str
    path: str  # percent-decoded, as the scope's "path"
    query_string: bytes
    headers: list[tuple[bytes, bytes]]  # lower-case names, as the scope's "headers"
    client: tuple[str, int] | None
    state: dict[str, Any]  # the scope's "state": what the hook puts here, the app finds there


@dataclass(frozen=True)
class Answer:
    """A whole response the protocol writes itself; the connection is closed after it (the body
    was not read). Server, Date, Content-Length and Connection headers are added."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class HeadHook(Protocol):
    """What the protocol calls for each request it parses (not for one pipelined behind a response
    being written, which the app answers in turn)."""

    def on_head(self, head: RequestHead) -> Answer | None:
        """The answer to write instead of running the app, or None (the app runs)."""
        ...

    def on_body(self, state: dict[str, Any]) -> None:
        """The request whose scope ``state`` this is has its whole body read (the app has not read it yet)."""
        ...


class _Phase(enum.Enum):
    IDLE = "idle"  # between requests: uvicorn's keep-alive timeout applies
    HEAD = "head"  # request line and headers arriving
    BODY = "body"  # the app has the request; its body is arriving


class _Refusal(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class _Answered(Exception):
    """Raised from a parser callback to stop parsing: the hook answered the request."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


class LimitedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with :class:`HTTPLimits`; give uvicorn :meth:`with_limits`."""

    limits: ClassVar[HTTPLimits]
    head_hook: ClassVar[HeadHook | None] = None

    @classmethod
    def with_limits(cls, limits: HTTPLimits, head_hook: HeadHook | None = None) -> type[LimitedHTTPProtocol]:
        """The protocol class uvicorn instantiates per connection (``uvicorn.Config(http=...)``);
        ``head_hook``: called with every request's head (see the module's docstring)."""
        return type(cls.__name__, (cls,), {"limits": limits, "head_hook": head_hook})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _Phase.IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._head_read_bytes = 0  # bytes of the reads that fell wholly inside the current head
        self._head_began_in_read = False
        self._refused = False

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast(asyncio.Transport, transport))  # a socket's: uvicorn's own annotation
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
            if isinstance(cause, _Answered):
                self._answer_and_close(cause.answer)
            else:
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
        answer = self._head_answer()
        if answer is not None:
            raise _Answered(answer)  # caught in data_received: no app, no more parsing
        self._phase = _Phase.BODY
        self._arm_deadline(self.limits.request_timeout_s + BODY_GRACE_S, "the request body did not arrive")
        super().on_headers_complete()

    def _head_answer(self) -> Answer | None:
        """The hook's answer to the request whose head is complete, or None (then the app runs)."""
        if self.head_hook is None or not (self.cycle is None or self.cycle.response_complete):
            return None  # pipelined behind a response being written: the app answers it in turn
        try:
            url = httptools.parse_url(self.url)
            path = url.path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return None  # uvicorn refuses it as it parses it again
        head = RequestHead(
            method=self.parser.get_method().decode("ascii"),
            path=self.root_path + (urllib.parse.unquote(path) if "%" in path else path),  # as uvicorn's scope
            query_string=url.query or b"",
            headers=self.headers,
            client=self.client,
            state=self.scope["state"],
        )
        try:
            return self.head_hook.on_head(head)
        except Exception:  # a bug in the hook: the app still answers the request
            logger.exception("the head hook failed on %s %s", head.method, head.path)
            return None

    def on_message_complete(self) -> None:
        self._phase = _Phase.IDLE
        self._cancel_deadline()
        if self.head_hook is not None:
            try:
                self.head_hook.on_body(self.scope["state"])
            except Exception:  # a bug in the hook: the app still answers the request
                logger.exception("the head hook failed on a request's body")
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
        request_id = uuid.uuid4().hex
        body = json.dumps(detail_body(refusal.code, refusal.detail, request_id), separators=(",", ":")).encode()
        self._write_and_linger(
            Answer(refusal.status, body, [(b"content-type", b"application/json"), (REQUEST_ID_HEADER.lower().encode(), request_id.encode())])
        )

    def _answer_and_close(self, answer: Answer) -> None:
        """Write the hook's answer to the request whose head just arrived, then close."""
        self._refused = True
        self._cancel_deadline()
        self._write_and_linger(answer)

    def _write_and_linger(self, answer: Answer) -> None:
        """Write ``answer`` with ``Connection: close``; drop what still arrives for ``LINGER_S``, then close."""
        head = [STATUS_LINE[answer.status]]
        for name, value in [
            *self.server_state.default_headers,
            *answer.headers,
            (b"content-length", str(len(answer.body)).encode()),
            (b"connection", b"close"),
        ]:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"\r\n")
        self.transport.write(b"".join(head) + answer.body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def _malformed(exc: BaseException) -> _Refusal:
    reason = str(exc) or type(exc).__name__
    return _Refusal(400, "bad_request", f"malformed HTTP request: {reason}")
