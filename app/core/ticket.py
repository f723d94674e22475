"""A request's ticket: the served variant that answers it, held for the request, its deadline, and
its places in that variant's queue.

A front door opens one ticket per variant a request runs on (``InferenceService.open_ticket``),
possibly from the request's head alone, and closes it when the request ends. Opening checks
admission without holding a place: a request whose body never arrives holds nothing another
request could miss. Its places count once its body is read (:meth:`Ticket.hold_for_body`, or
:meth:`Ticket.hold` for all of a request's images at once, before any is decoded).
"""

from __future__ import annotations

import time
from typing import Callable

from .batching import QueuePlace
from .errors import BatcherClosedError, OverloadedError
from .record import RequestRecord
from .served_variant import ServedVariant


class Ticket:
    """One request's claim on ``served``; close it (or use it as a context manager) when the
    request ends: that gives back its places and its lease.

    Args:
        served: the served variant, leased for the ticket's life.
        record: the request's record (the variant that answers is written there).
        started: ``time.monotonic()`` when the request started.
        timeout_s: the request's time limit: its deadline is ``started + timeout_s``.
        on_close: called once, when the ticket closes (gives back the lease).
    """

    def __init__(
        self, served: ServedVariant, record: RequestRecord, *, started: float, timeout_s: float, on_close: Callable[[], None]
    ) -> None:
        self.served = served
        self.record = record
        self.started = started
        self.deadline = started + timeout_s
        self.place: QueuePlace | None = None
        self._refusal: Exception | None = None
        self._on_close: Callable[[], None] | None = on_close
        self.closed = False

    @property
    def variant(self) -> str:
        return self.served.variant

    def shorten_deadline(self, timeout_s: float | None) -> None:
        """Apply a time limit the client set (counted from the request's start), when shorter."""
        if timeout_s is not None:
            self.deadline = min(self.deadline, self.started + timeout_s)

    def renew_deadline(self, timeout_s: float) -> None:
        """Start a new time limit now (each variant of a comparison gets a whole one)."""
        self.deadline = time.monotonic() + timeout_s

    def hold(self, count: int = 1) -> QueuePlace:
        """Hold ``count`` places in the variant's queue (those held already count): all, or none.

        Raises:
            QueueFullError, DeadlineUnreachableError (both OverloadedError), BatcherClosedError:
            now, or as found when the body was read (:meth:`hold_for_body`); RuntimeError once
            the ticket is closed.
        """
        if self.closed:
            raise RuntimeError(f"the ticket of request {self.record.request_id} is closed")
        if self._refusal is not None:
            raise self._refusal
        held = self.place.held if self.place is not None else 0
        if count > held:
            self.place = self.served.batcher.admit(self.deadline, count - held, more=self.place)
        assert self.place is not None
        return self.place

    def hold_for_body(self) -> None:
        """The request's body has been read: hold its first place now. A refusal is kept for the
        request's next :meth:`hold` (the request is answered by its front door, in turn). Nothing,
        when the request has ended already (its answer did not need the body)."""
        if self.closed:
            return
        try:
            self.hold(1)
        except (OverloadedError, BatcherClosedError) as exc:
            self._refusal = exc

    def close(self) -> None:
        """Give back the places still held and the lease (once)."""
        self.closed = True
        if self.place is not None:
            self.place.release()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
