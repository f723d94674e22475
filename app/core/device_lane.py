"""One forward at a time per device, whichever model it belongs to, oldest work first.

Two forwards at once on one CPU share its cores and each takes about twice as long; on one GPU
they share its stream. Taking turns gives each forward the whole device, which keeps every model's
measured cost (``forward_cost``) true whatever the others do, and lets admission see the whole
device's backlog: the forward running now (charged once, for its predicted remaining time) and the
work every other model on the device has queued (:meth:`DeviceLane.work_ahead`).

Turns go to the forward whose oldest request arrived first, not to the model that asked first:
admission counts, for a request, only the work queued before it, so work admitted later (on any
model of the device) must not run before it. A forward also waits while another model has older
requests that its worker has not yet brought to a turn (queued, or in a batch being formed, while
it delivers its last answers): asking order alone would make two busy models alternate, and a
model's later batches would push back a request another model admitted earlier.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Iterator, Protocol


class LaneMember(Protocol):
    """What the lane reads of a model that takes turns on it (a batcher)."""

    def queued_work_s(self) -> float:
        """Seconds admission counts for the work it has waiting: queued, admitted, or formed into a
        batch that waits for its turn; 0 when it has none."""
        ...

    def has_work(self) -> bool:
        """Whether anything of it waits: queued, admitted, or formed into a batch."""
        ...

    def oldest_queued_at(self) -> float | None:
        """When its oldest request not yet in a forward's turn (queued, or in the batch being
        formed) arrived (``time.monotonic()``); None when there is none, or when it is closing."""
        ...


# how often a forward that waits for another model's older queued work looks again: that model's
# worker asks for its turn (and wakes the waiters) as soon as it has formed its batch, but a queued
# request that is withdrawn wakes nobody here
OLDER_WORK_RECHECK_S = 0.02


@dataclass(frozen=True)
class RunningForward:
    owner: object  # the member whose forward it is
    started: float  # time.monotonic()
    predicted_s: float | None  # its owner's prediction when it started (None: nothing measured yet)


class DeviceLane:
    """The turn-taking of one device's forwards (``name``: the device, e.g. ``cpu`` or ``cuda:0``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        # the forwards waiting: (their oldest request's arrival, then the order they asked, token, owner)
        self._turns: list[tuple[float, int, object, object]] = []
        self._asked = itertools.count()
        self.running: RunningForward | None = None
        self._members: weakref.WeakSet[LaneMember] = weakref.WeakSet()

    def join(self, member: LaneMember) -> None:
        with self._cond:
            self._members.add(member)

    def leave(self, member: LaneMember) -> None:
        with self._cond:
            self._members.discard(member)

    @contextlib.contextmanager
    def turn(self, owner: object, predicted_s: float | None, since: float | None = None) -> Iterator[None]:
        """Wait for this forward's turn, then hold the device for the ``with`` block. ``since``: when
        its oldest request arrived (``time.monotonic()``; default now); older work goes first, and
        forwards of the same age in the order they ask."""
        token = object()
        with self._cond:
            waiting = (time.monotonic() if since is None else since, next(self._asked), token, owner)
            heapq.heappush(self._turns, waiting)
            while self._turns[0][2] is not token or self.running is not None:
                self._cond.wait()  # woken when a turn ends or another forward asks
            while self._older_elsewhere(owner, waiting[0]):
                # queued requests arrive without a word to the lane: look again shortly
                self._cond.wait(OLDER_WORK_RECHECK_S)
                while self._turns[0][2] is not token or self.running is not None:
                    self._cond.wait()
            heapq.heappop(self._turns)
            self.running = RunningForward(owner, time.monotonic(), predicted_s)
        try:
            yield
        finally:
            with self._cond:
                self.running = None
                self._cond.notify_all()

    def older_work_elsewhere(self, owner: object, since: float) -> bool:
        """Whether another model on the device has work older than ``since`` waiting: a forward
        waiting for its turn, or requests not yet in a turn. A batch takes no companion younger
        than that work: it would run before it, longer than admission counted."""
        with self._cond:
            if any(waiting[0] < since and waiting[3] is not owner for waiting in self._turns):
                return True
            return self._older_elsewhere(owner, since)

    def _older_elsewhere(self, owner: object, since: float) -> bool:
        """Whether another member has requests older than ``since`` that are not yet in a turn."""
        for member in list(self._members):
            if member is owner:
                continue
            oldest = member.oldest_queued_at()
            if oldest is not None and oldest < since:
                return True
        return False

    def running_remaining_s(self, now: float) -> float:
        """Predicted seconds until the forward running now ends: its prediction less its time so far
        (0 when nothing runs, when nothing was predicted, or once it has run past its prediction)."""
        running = self.running
        if running is None or running.predicted_s is None:
            return 0.0
        return max(0.0, running.predicted_s - (now - running.started))

    def work_ahead(self, member: LaneMember, now: float) -> float:
        """Seconds the device has to work before ``member``'s queue could be served, besides that
        queue: the rest of the running forward (its own included) and every other member's queued
        work. Read without the members' locks (a prediction, not a count)."""
        others = sum(other.queued_work_s() for other in list(self._members) if other is not member)
        return self.running_remaining_s(now) + others

    def idle(self) -> bool:
        """Nothing runs on the device and no member has work waiting."""
        return self.running is None and not any(member.has_work() for member in list(self._members))
