"""One forward at a time per device, whichever model it belongs to, in the order they ask.

Two forwards at once on one CPU share its cores and each takes about twice as long; on one GPU
they share its stream. Taking turns gives each forward the whole device, which keeps every model's
measured cost (``forward_cost``) true whatever the others do, and lets admission see the whole
device's backlog: the forward running now (charged once, for its predicted remaining time) and the
work every other model on the device has queued (:meth:`DeviceLane.work_ahead`).
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections import deque
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
        self._turns: deque[object] = deque()  # tokens of the forwards waiting, first come first served
        self.running: RunningForward | None = None
        self._members: weakref.WeakSet[LaneMember] = weakref.WeakSet()

    def join(self, member: LaneMember) -> None:
        with self._cond:
            self._members.add(member)

    def leave(self, member: LaneMember) -> None:
        with self._cond:
            self._members.discard(member)

    @contextlib.contextmanager
    def turn(self, owner: object, predicted_s: float | None) -> Iterator[None]:
        """Wait for this forward's turn, then hold the device for the ``with`` block."""
        token = object()
        with self._cond:
            self._turns.append(token)
            while self._turns[0] is not token or self.running is not None:
                self._cond.wait()
            self._turns.popleft()
            self.running = RunningForward(owner, time.monotonic(), predicted_s)
        try:
            yield
        finally:
            with self._cond:
                self.running = None
                self._cond.notify_all()

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
