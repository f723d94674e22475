"""Opening a request's ticket from its head, before the app runs and before its body is read.

A route that names its variant marks its endpoint with :func:`names_variant`, saying where the
name is (a path parameter, a query parameter). When the head of a ``POST`` to such a route is
complete, :class:`HeadAdmission` (the HTTP protocol's head hook) opens the request's ticket with
the core (``InferenceService.open_ticket``):

- refused (the variant's queue is full, or the work ahead would keep the request past its
  deadline): the protocol writes the 429 the route would have answered (its front door's body,
  ``Retry-After``, ``X-Request-ID``, the one log line, the access-log line and the metrics under
  the route's labels) and closes the connection, its body unread;
- admitted: the ticket waits in the request's context for the route, which uses it. Its place in
  the queue counts once the body has been read whole (:meth:`HeadAdmission.on_body`), so a client
  that sends a head and stalls holds nothing another request could miss.

Every other request runs the app, whose route opens its ticket itself: other routes, pipelined
requests, ``variant=auto`` (chosen with the request's budget), a variant that is unknown, not
served or not loaded (the route answers 404/503), a service shutting down, and a browser's
cross-origin request when CORS is on (its answer needs the CORS headers).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams
from starlette.routing import Match

from model_zoo import UnknownVariantError

from ..core.errors import BatcherClosedError, OverloadedError, ServiceNotStartedError, VariantNotReadyError, VariantNotServedError
from ..core.service import InferenceService
from ..core.variant_choice import AUTO_VARIANT
from ..error_bodies import REQUEST_ID_HEADER, RETRY_AFTER_HEADER
from ..error_table import answer_for
from .access_log import AccessLog
from .context import CONTEXT_KEY, FrontDoors, RequestContext, context_in, new_context
from .http_protocol import Answer, RequestHead

VariantOf = Callable[[Mapping[str, Any], QueryParams], str | None]
"""Where a route's request names its variant: (path parameters, query parameters) → the name,
or None when the request names none the route would serve (then the route answers it)."""

_VARIANT_OF = "__variant_of__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def names_variant(variant_of: VariantOf) -> Callable[[Endpoint], Endpoint]:
    """Mark a route's endpoint as one whose request names its variant as ``variant_of`` reads it."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _VARIANT_OF, variant_of)
        return endpoint

    return mark


def query_variant(path_params: Mapping[str, Any], query: QueryParams) -> str | None:
    """The ``variant`` query parameter (the last one, as the route reads it)."""
    return query.get("variant")


@dataclass(frozen=True)
class _VariantRoute:
    route: APIRoute
    variant_of: VariantOf


class HeadAdmission:
    """The service's head hook (see the module's docstring).

    Args:
        service: the core that opens tickets.
        routes: the routes of the app's routers; those whose endpoint is marked with
            :func:`names_variant` count.
        doors: the front doors, whose error body a refusal carries.
        access_log: where a refusal is counted and logged, as its route would.

    With CORS on (the service's ``cors_origins``), a request with ``Origin`` is left to the app.
    """

    def __init__(self, service: InferenceService, routes: Sequence[Any], doors: FrontDoors, access_log: AccessLog) -> None:
        self.service = service
        self.doors = doors
        self.access_log = access_log
        self.routes = [
            _VariantRoute(route, getattr(route.endpoint, _VARIANT_OF))
            for route in routes
            if isinstance(route, APIRoute) and "POST" in (route.methods or ()) and hasattr(route.endpoint, _VARIANT_OF)
        ]

    def on_head(self, head: RequestHead) -> Answer | None:
        """The 429 that refuses the request, or None: the app answers it (with its ticket in its
        context when it was opened here)."""
        if head.method != "POST" or not self.service.started:
            return None
        named = self._variant_named(head)
        if named is None:
            return None
        route, variant = named
        if self.service.settings.cors_origins and any(name == b"origin" for name, _ in head.headers):
            return None
        context = new_context(head.headers, head.path, self.doors)
        try:
            ticket = self.service.open_ticket(variant, record=context.record)
        except OverloadedError as exc:
            return self._refuse(head, context, route, exc)
        except (UnknownVariantError, VariantNotServedError, VariantNotReadyError, BatcherClosedError, ServiceNotStartedError):
            return None  # the route answers it
        context.tickets.append(ticket)
        head.state[CONTEXT_KEY] = context
        return None

    def on_body(self, state: dict[str, Any]) -> None:
        """The request's body is read: its place in the queue counts from now."""
        context = context_in(state)
        if context is not None and context.ticket is not None:
            context.ticket.hold_for_body()

    def _variant_named(self, head: RequestHead) -> tuple[APIRoute, str] | None:
        """The route a ``POST`` goes to and the variant it names; None for another route, ``auto``
        or no name."""
        probe = {"type": "http", "path": head.path, "root_path": "", "method": head.method}
        for candidate in self.routes:
            match, child = candidate.route.matches(probe)
            if match is Match.FULL:
                variant = candidate.variant_of(child.get("path_params", {}), QueryParams(head.query_string))
                if not variant or variant == AUTO_VARIANT:
                    return None
                return candidate.route, variant
        return None

    def _refuse(self, head: RequestHead, context: RequestContext, route: APIRoute, exc: OverloadedError) -> Answer:
        """The route's answer to ``exc``, logged and counted as the route's would be."""
        began = time.perf_counter()
        record = context.record
        answer = answer_for(exc, record.request_id)  # logs the one line of an expected condition
        record.error = answer.code
        body = context.door.error_body(answer.code, answer.message, record.request_id)
        self.access_log.finish(
            record,
            protocol=context.door.protocol,
            endpoint=route.path_format,
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
                (RETRY_AFTER_HEADER.lower().encode(), str(answer.retry_after_s).encode()),
                (REQUEST_ID_HEADER.lower().encode(), record.request_id.encode()),
            ],
        )
