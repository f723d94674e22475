"""Each HTTP request's context: its id and record, the front door that serves it, its tickets.

The context is made when the request's head is complete (by the head hook, :mod:`head_admission`,
or else by ``RequestContextMiddleware``) and kept in the ASGI scope's ``state`` (Starlette's
``request.state``), where the routes' dependencies, the error handlers and the middleware find it.
When the request ends, the middleware logs it and closes its tickets.

A :class:`FrontDoor` is a protocol spoken over HTTP on its own path prefix: the HTTP API on ``/``,
the Open Inference Protocol on ``/v2``. It names the ``protocol`` label of its requests and the
body of its error answers, also for requests no route of it serves (404, 413 before routing).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from starlette.types import Scope

from ..core.record import RequestRecord
from ..core.ticket import Ticket
from ..error_bodies import ErrorBody

CONTEXT_KEY = "context"  # scope["state"][CONTEXT_KEY]
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class FrontDoor:
    """A protocol on a path prefix (``""``: every path no other door claims)."""

    prefix: str
    protocol: str  # the `protocol` label of its requests' metrics and log lines
    error_body: ErrorBody

    def serves(self, path: str) -> bool:
        return not self.prefix or path == self.prefix or path.startswith(self.prefix + "/")


class FrontDoors:
    """The service's front doors over HTTP; the longest prefix that serves a path wins."""

    def __init__(self, doors: Sequence[FrontDoor]) -> None:
        self.doors = sorted(doors, key=lambda door: len(door.prefix), reverse=True)

    def of(self, path: str) -> FrontDoor:
        return next(door for door in self.doors if door.serves(path))


@dataclass
class RequestContext:
    """One request as the service tracks it."""

    record: RequestRecord
    door: FrontDoor
    tickets: list[Ticket] = field(default_factory=list)

    @property
    def ticket(self) -> Ticket | None:
        """The ticket opened at the request's head, if it was."""
        return self.tickets[0] if self.tickets else None

    def close(self) -> None:
        """Close every ticket of the request (its places and leases go back)."""
        for ticket in self.tickets:
            ticket.close()


def request_id_from(value: str | None) -> str:
    """The client's request id when it is a sane token, else a new one."""
    return value if value is not None and _SANE_ID.match(value) else uuid.uuid4().hex


def incoming_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The client's ``X-Request-ID`` among a request's ``headers`` (ASGI's: lower-case names), if any."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode("latin-1")
    return None


def new_context(headers: Iterable[tuple[bytes, bytes]], path: str, doors: FrontDoors) -> RequestContext:
    return RequestContext(RequestRecord(request_id_from(incoming_request_id(headers))), doors.of(path))


def context_in(state: Mapping[str, Any]) -> RequestContext | None:
    """The context kept in a request's scope ``state``, if it has one yet."""
    context = state.get(CONTEXT_KEY)
    return context if isinstance(context, RequestContext) else None


def context_of(scope: Scope) -> RequestContext | None:
    return context_in(scope.get("state", {}))
