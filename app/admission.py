"""Where a request takes its place in its variant's queue: at its head when it names its variant,
else in its route.

A request that names its variant (``POST /detect`` or ``/attention`` with ``?variant=<name>``,
``POST /v2/models/<name>/infer``, also under ``/versions/1``) is admitted by that variant's queue as
soon as its head is complete, before uvicorn starts the app for it and before its body is read
(:class:`HeadAdmission`, the HTTP protocol's ``HeadHook``):

- refused (the queue is full, or the queue ahead would keep it past its deadline): the protocol
  writes the 429 the route would have answered (same body, ``Retry-After``, ``X-Request-ID``, log
  line, access-log line and metrics) and closes the connection, its body unread;
- admitted: its :class:`Place` waits in ``scope["state"]`` for the route, which takes it instead of
  admitting again (:func:`place_for`); a place the route never took (the request failed before,
  e.g. on a bad parameter) is given back when the request ends (:class:`GiveBackPlaceMiddleware`).

Every other request runs the app, which admits it in its route as before: other paths, pipelined
requests, ``variant=auto`` (chosen by the route), a variant that is unknown, not served or not loaded
(the route answers 404/503), a service shutting down, and a browser's cross-origin request when
CORS is on (its answer needs the CORS headers).

Why at the head: a refusal that runs through the web stack (the request's task, the middleware,
routing, FastAPI's dependencies, the error handler, two writes) costs the event loop about 0.8 ms,
and under a burst the last refusal waits behind all the others (issue 12: 640 requests at once,
refusals up to 1.4 s late on a slowed 2-core machine). ``BENCHMARKS.md`` has the figures.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from types import TracebackType

from fastapi import FastAPI
from model_zoo import UnknownVariantError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .batching import Admission, BatcherClosedError, OverloadedError
from .errors import REQUEST_ID_HEADER, answer_for, error_payload
from .http_protocol import Answer, RequestHead
from .metrics import PROTOCOL_HTTP, PROTOCOL_V2_HTTP
from .middleware import AccessLog, RequestRecord, incoming_request_id, request_id_from
from .model_pool import VariantNotReadyError, VariantNotServedError
from .oip.metadata import MODEL_VERSION
from .variant_choice import AUTO_VARIANT
from .variant_core import VariantCore

PLACE_STATE_KEY = "queue_place"  # scope["state"][...]: the Place taken at the head
# the routes whose variant is a query parameter, by path (the path is also their endpoint label)
_QUERY_VARIANT_PATHS = frozenset({"/detect", "/attention"})
_V2_INFER = re.compile(r"^/v2/models/(?P<model>[^/]+)/(?:versions/(?P<version>[^/]+)/)?infer$")
_V2_INFER_ENDPOINT = "/v2/models/{model}/infer"
_V2_VERSIONED_INFER_ENDPOINT = "/v2/models/{model}/versions/{version}/infer"


@dataclass(frozen=True)
class Place:
    """A request's place in its variant's queue (``admission``) and its deadline; a context
    manager that gives the place back at its end unless the queue took it over."""

    admission: Admission
    started: float  # time.monotonic() when it was admitted: at the head, or in the route
    deadline: float  # time.monotonic(): ``started`` + the request timeout

    @classmethod
    def admitted(cls, core: VariantCore, timeout_s: float) -> Place:
        """A place in ``core``'s queue for a request that starts now, with ``timeout_s`` to run.

        Raises:
            OverloadedError (429, with Retry-After), BatcherClosedError (503).
        """
        started = time.monotonic()
        return cls(core.admit(started + timeout_s), started, started + timeout_s)

    def __enter__(self) -> Place:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.admission.release()


def place_for(request: Request, core: VariantCore, timeout_s: float) -> Place:
    """The request's place in ``core``'s queue: the one taken at its head, else admitted now.

    A place taken at the head for a core since replaced (the variant reloaded) is handed on all
    the same: the new core's queue gives it back and checks the request again when it is queued.

    Raises:
        OverloadedError (429, with Retry-After), BatcherClosedError (503).
    """
    place = request.scope.get("state", {}).get(PLACE_STATE_KEY)
    return place if place is not None else Place.admitted(core, timeout_s)


@dataclass
class HeadAdmission:
    """The service's ``http_protocol.HeadHook``: admits a request that names its variant from its
    head alone (see the module's docstring). ``app``: the service (its pool, settings, metrics)."""

    app: FastAPI
    access_log: AccessLog = field(init=False)

    def __post_init__(self) -> None:
        self.access_log = AccessLog(self.app.state.metrics)

    def __call__(self, head: RequestHead) -> Answer | None:
        """The 429 that refuses the request, or None: the app answers it (holding its place in
        ``head.state`` when it was admitted here)."""
        if head.method != "POST":
            return None
        named = _variant_named(head)
        pool = self.app.state.pool
        if named is None or pool is None:
            return None
        variant, endpoint = named
        settings = self.app.state.settings
        if settings.cors_origins and any(name == b"origin" for name, _ in head.headers):
            return None
        try:
            core = pool.core(variant)
        except (UnknownVariantError, VariantNotServedError, VariantNotReadyError):
            return None
        try:
            head.state[PLACE_STATE_KEY] = Place.admitted(core, settings.request_timeout_s)
        except OverloadedError as exc:
            return self._refuse(head, core, endpoint, exc)
        except BatcherClosedError:
            pass
        return None

    def _refuse(self, head: RequestHead, core: VariantCore, endpoint: str, exc: OverloadedError) -> Answer:
        """The route's answer to ``exc``, logged and counted as the route's would be."""
        began = time.perf_counter()
        request_id = request_id_from(incoming_request_id(head.headers))
        answer = answer_for(exc, request_id)  # logs the one line of an expected condition
        body = error_payload(head.path, answer.code, answer.message, request_id)
        self.access_log.finish(
            RequestRecord(request_id, variant=core.variant, error=answer.code),
            protocol=PROTOCOL_V2_HTTP if endpoint.startswith("/v2/") else PROTOCOL_HTTP,
            endpoint=endpoint,
            method=head.method,
            path=head.path,
            query=head.query_string.decode("latin-1"),
            status=answer.status,
            seconds=time.perf_counter() - began,
            client=f"{head.client[0]}:{head.client[1]}" if head.client else None,
        )
        return Answer(
            answer.status,
            # as Starlette's JSONResponse renders it
            json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(),
            [
                (b"content-type", b"application/json"),
                (b"retry-after", str(answer.retry_after_s).encode()),
                (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
            ],
        )


def _variant_named(head: RequestHead) -> tuple[str, str] | None:
    """The variant a ``POST`` names and its route's endpoint label; None for ``auto``, a route
    that names none, or a path the app would answer otherwise (a wrong model version: 404)."""
    if head.path in _QUERY_VARIANT_PATHS:
        # Starlette's reading of a query: latin-1, blank values kept, the last of a repeated name wins
        values = [value for name, value in urllib.parse.parse_qsl(head.query_string.decode("latin-1"), keep_blank_values=True) if name == "variant"]
        variant, endpoint = (values[-1] if values else None), head.path
    elif (match := _V2_INFER.match(head.path)) is not None:
        if match["version"] not in (None, MODEL_VERSION):
            return None
        variant = match["model"]
        endpoint = _V2_INFER_ENDPOINT if match["version"] is None else _V2_VERSIONED_INFER_ENDPOINT
    else:
        return None
    if not variant or variant == AUTO_VARIANT:
        return None
    return variant, endpoint


class GiveBackPlaceMiddleware:
    """Gives back, when its request ends, the place its head took that its route never took over
    (the request failed before it, e.g. a bad parameter: 422). A no-op for every other request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            place = scope.get("state", {}).get(PLACE_STATE_KEY)
            if place is not None:
                place.admission.release()
