"""Dynamic micro-batching: many concurrent requests, one model call per batch.

Contract (list in, list out): the batch function takes a list of items and returns a list of
results of the same length and order. The batcher knows nothing about images or HTTP.

Requests are queued in a bounded queue. One worker thread per batcher takes the first waiting
request, waits up to ``max_wait_s`` (counted from that request's arrival) for up to
``max_batch - 1`` companions, then waits for its turn on the device (:mod:`device_lane`: one
forward at a time per device, whichever model) and calls the batch function off the event loop.

Admission is deadline-aware. Every batch teaches the batcher's :class:`~forward_cost.ForwardCost`
what a forward of its size costs, so it can predict when a newly queued request would be answered:
the rest of the forward running on the device (charged once, at its predicted remaining time), the
work every other model on the device has queued, the batches ahead of it in its own queue, then the
batch it joins, each queued batch counted as its predicted time plus ``spread_allowance`` times its
typical deviation (slowdowns hit the batches of a queue alike, so their deviations add up rather
than cancel out). A request is refused at once, with a
``retry_after_s``, when the queue is full (:class:`QueueFullError`) or when that prediction lands
past its deadline (:class:`DeadlineUnreachableError`); both are :class:`OverloadedError`. The
Retry-After is the soonest it could get in by the same figures, longer when a crowd of refused
clients is already waiting to come back (:mod:`retry_pacing`). A device with nothing running and nothing waiting never refuses a
request whose deadline is longer than the fastest recent forward of one image: it runs, and what
it measures corrects the figures (a batch that ran slow for a passing reason cannot shut the model
out).

:meth:`MicroBatcher.admit` makes the same check before the request has items to queue (before its
images are decoded) and holds its places (:class:`QueuePlace`, one per image) until
:meth:`MicroBatcher.submit` takes them over one by one: held places count as waiting requests, so
requests admitted together see one another. A queued request whose deadline passed, whose batch
would end past its deadline (checked when its batch forms, and as soon as it is left for the next
batch), or whose caller gave up (its future cancelled, e.g. the client disconnected) is dropped
before it reaches the model, so it costs the other requests nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from .device_lane import DeviceLane
from .errors import BatcherClosedError, DeadlineExceededError, DeadlineUnreachableError, QueueFullError
from .forward_cost import ForwardCost
from .retry_pacing import RetryPacing

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger("attnzoo.batching")


class QueuePlace:
    """A request's places in a batcher's queue (``count``, one per image), held from its admission
    (:meth:`MicroBatcher.admit`) until its items are queued (:meth:`MicroBatcher.submit` takes a
    place over per item) or it gives up (:meth:`release`, or the end of a ``with`` block; both
    give back only the places still held)."""

    __slots__ = ("batcher", "held")

    def __init__(self, batcher: MicroBatcher[Any, Any], count: int) -> None:
        self.batcher = batcher
        self.held = count  # guarded by the batcher's lock

    def release(self) -> None:
        self.batcher._release(self)

    def __enter__(self) -> QueuePlace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@dataclass(frozen=True)
class BatchOutcome(Generic[Result]):
    """What one request gets back: its result and how its time was spent (seconds)."""

    result: Result
    queue_s: float  # enqueue → start of the batch function
    model_s: float  # duration of the batch function (shared by the whole batch)
    batch_size: int


@dataclass(eq=False)  # identity: withdrawing one must not compare items (numpy arrays)
class _Pending(Generic[Item, Result]):
    item: Item
    future: Future[BatchOutcome[Result]]
    enqueued_at: float  # time.monotonic()
    deadline: float  # time.monotonic()


class MicroBatcher(Generic[Item, Result]):
    """Queue + worker thread around ``batch_fn(list[Item]) -> list[Result]``.

    Args:
        batch_fn: called from the worker thread only, one call at a time, in its device's turn.
        max_batch: most items per call.
        max_wait_s: longest wait for companions after the first item of a batch arrived.
        queue_size: most items waiting; beyond it :meth:`submit` and :meth:`admit` raise
            :class:`QueueFullError`. A withdrawn (cancelled) request leaves the queue at once.
        lane: the device's turn-taking, shared with the other models on the device (default: a
            lane of its own).
        smoothing: weight of the newest batch in the learned cost (:class:`ForwardCost`).
        spread_allowance: admission counts a prediction as its mean plus this many deviations.
        min_spread: the relative deviation admission assumes at least (before the batches have
            shown their own).
        retry_window_s: how long a refusal counts toward the crowd a refused request's
            Retry-After allows for (:class:`RetryPacing`); about the requests' deadline.
        on_batch: optional hook ``(batch_size, seconds)`` after every call (metrics hang here).
    """

    def __init__(
        self,
        batch_fn: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        name: str = "batcher",
        lane: DeviceLane | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        smoothing: float = 0.2,
        spread_allowance: float = 2.0,
        min_spread: float = 0.0,
        retry_window_s: float = 30.0,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0 or spread_allowance < 0 or min_spread < 0:
            raise ValueError(
                "need max_batch >= 1, queue_size >= 1, max_wait_s >= 0, spread_allowance >= 0, min_spread >= 0; "
                f"got {max_batch}, {queue_size}, {max_wait_s}, {spread_allowance}, {min_spread}"
            )
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.name = name
        self.on_batch = on_batch
        self.cost = ForwardCost(smoothing=smoothing)
        self.spread_allowance = spread_allowance
        self.min_spread = min_spread
        self.retry_pacing = RetryPacing(retry_window_s)
        self.lane = lane if lane is not None else DeviceLane(name)
        self._waiting: deque[_Pending[Item, Result]] = deque()
        self._held = 0  # places held by admitted requests, not queued yet (QueuePlace)
        self._formed = 0  # items taken from the queue into a batch that has not started yet
        self._forming_since: float | None = None  # arrival of the first of them, until its turn
        self._cond = threading.Condition()
        self._stop = False
        self.lane.join(self)
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def qsize(self) -> int:
        """Requests waiting for the model (not counting the batch running now)."""
        with self._cond:
            return len(self._waiting)

    # -- admission ---------------------------------------------------------------------------

    def submit(self, item: Item, deadline: float, place: QueuePlace | None = None) -> Future[BatchOutcome[Result]]:
        """Queue ``item``; ``deadline`` is a ``time.monotonic()`` instant. ``place``: the request's
        places from :meth:`admit`, of which the queued item takes one over (no new check then).

        Cancel the returned future to withdraw the request; that works until its batch starts.

        Raises:
            QueueFullError, DeadlineUnreachableError (both OverloadedError), BatcherClosedError.
        """
        pending: _Pending[Item, Result] = _Pending(item, Future(), time.monotonic(), deadline)
        with self._cond:
            if self._stop:
                raise BatcherClosedError(f"{self.name}: shutting down")
            if place is not None and place.batcher is self and place.held > 0:
                place.held -= 1  # the queued item takes its place over
                self._held -= 1
            else:
                self._check_admission(1, pending.deadline, pending.enqueued_at)
            self._waiting.append(pending)
            self._cond.notify()
        # a weak reference: a callback holding the request would make request → future → callback
        # a reference cycle, and its image would stay in memory until a full garbage collection
        pending_ref = weakref.ref(pending)
        pending.future.add_done_callback(lambda done: self._withdraw_if_cancelled(pending_ref(), done))
        return pending.future

    def admit(self, deadline: float, count: int = 1, *, more: QueuePlace | None = None) -> QueuePlace:
        """Admit a request of ``count`` items with this deadline before it has them to queue, and
        hold their places: all of them, or none (``more``: the request's places so far, which
        then hold ``count`` more).

        Cheap (no model work): call it before expensive preparation such as decoding images, so
        that an overloaded service refuses at once; then pass the place to :meth:`submit` for each
        item, or release it when the request ends otherwise.

        Raises:
            QueueFullError, DeadlineUnreachableError (both OverloadedError), BatcherClosedError.
        """
        with self._cond:
            self._check_admission(count, deadline, time.monotonic())
            self._held += count
            if more is not None and more.batcher is self:
                more.held += count
                return more
        return QueuePlace(self, count)

    def check(self, deadline: float, count: int = 1) -> None:
        """Raise what :meth:`admit` would raise now, holding nothing."""
        with self._cond:
            self._check_admission(count, deadline, time.monotonic())

    def _release(self, place: QueuePlace) -> None:
        with self._cond:
            self._held -= place.held
            place.held = 0

    def _check_admission(self, count: int, deadline: float, now: float) -> None:
        """Raise if ``count`` items with ``deadline`` cannot be queued at ``now`` (lock held)."""
        if self._stop:
            raise BatcherClosedError(f"{self.name}: shutting down")
        waiting = len(self._waiting) + self._held + self._formed
        if waiting + count > self.queue_size:
            # a place frees up once the requests over the limit have been taken by the worker
            excess = waiting + count - self.queue_size
            retry = self._retry_after_s(self._seconds_to_serve(excess, now), deadline - now, now)
            raise QueueFullError(self.name, waiting, count, self.queue_size, retry)
        budget = deadline - now
        lone_s = self.cost.lone_floor_s()
        if lone_s is not None and budget > count * lone_s and self.lane.idle():
            return  # an idle device runs it: what it measures corrects the figures
        predicted = self._seconds_to_serve(waiting + count, now)
        if predicted is not None and predicted > budget:
            # by then the queue ahead has shrunk by the excess, and a request with the same budget fits
            retry = self._retry_after_s(predicted - max(budget, 0.0), budget, now)
            raise DeadlineUnreachableError(self.name, waiting, predicted, max(budget, 0.0), retry)

    def _retry_after_s(self, soonest_s: float | None, budget_s: float, now: float) -> int:
        """The Retry-After of a request refused at ``now``: at least ``soonest_s`` (when it could get
        in), more when a crowd was refused before it (:class:`RetryPacing`); whole seconds."""
        if soonest_s is None:
            return _whole_seconds(None)
        full_s = self.cost.seconds(self.max_batch)
        places_per_s = self.max_batch / full_s if full_s else None
        return _whole_seconds(self.retry_pacing.advise(soonest_s, max(budget_s, soonest_s), places_per_s, now))

    # -- predictions -------------------------------------------------------------------------

    def predicted_wait_s(self, position: int | None = None) -> float | None:
        """Seconds until a request of one item queued now at ``position`` (default: behind every
        waiting, formed and admitted request) would have its result, as admission counts them
        (allowing for the spread); None until a forward has been measured."""
        with self._cond:
            ahead = len(self._waiting) + self._held + self._formed if position is None else position
            return self._seconds_to_serve(ahead + 1, time.monotonic())

    def _seconds_to_serve(self, items: int, now: float) -> float | None:
        """Seconds from ``now`` until the first ``items`` of this queue have their results, as
        admission counts them: the device's work ahead (the rest of the running forward, the other
        models' queues), then this queue's batches (:meth:`_counted_s`). None before the first
        measured forward."""
        own_s = self._counted_s(items)
        return None if own_s is None else self.lane.work_ahead(self, now) + own_s

    def _counted_s(self, items: int) -> float | None:
        """Seconds admission counts for ``items`` queued items: full batches, then the batch of the
        last item, each at its predicted time plus ``spread_allowance`` typical deviations."""
        full, rest = divmod(items, self.max_batch)
        full_s, rest_s = self.cost.seconds(self.max_batch), self.cost.seconds(rest) if rest else 0.0
        if full_s is None or rest_s is None:
            return None
        spread = max(self.cost.relative_spread, self.min_spread)
        return (full * full_s + rest_s) * (1 + self.spread_allowance * spread)

    def queued_work_s(self) -> float:
        """Seconds admission counts for this queue's waiting, admitted and formed items: what
        another model on the device waits for (:meth:`DeviceLane.work_ahead`)."""
        items = len(self._waiting) + self._held + self._formed
        return (self._counted_s(items) or 0.0) if items else 0.0

    def has_work(self) -> bool:
        return bool(self._waiting) or self._held > 0 or self._formed > 0

    def oldest_queued_at(self) -> float | None:
        """When the oldest request not yet in a forward's turn arrived: queued, or taken into the
        batch being formed (:meth:`DeviceLane.turn` lets older work go first); None when there is
        none, or when closing (its worker forms no more batches). Read without the lock: the queue
        first, then the batch being formed, the reverse of the order :meth:`_next` writes them."""
        if self._stop:
            return None
        try:
            queued: float | None = self._waiting[0].enqueued_at
        except IndexError:
            queued = None
        forming = self._forming_since
        return min((t for t in (queued, forming) if t is not None), default=None)

    def _model_end_s(self, size: int, now: float) -> float | None:
        """Predicted seconds from ``now`` until a batch of ``size`` formed now would end: the rest of
        the forward running on the device, then its own; None before the first measured forward."""
        own = self.cost.seconds(size)
        return None if own is None else self.lane.running_remaining_s(now) + own

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker after its current batch; waiting requests fail with BatcherClosedError."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            left, self._waiting = list(self._waiting), deque()
        self.lane.leave(self)
        for pending in left:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(BatcherClosedError(f"{self.name}: shutting down"))

    def _withdraw_if_cancelled(self, pending: _Pending[Item, Result] | None, future: Future[BatchOutcome[Result]]) -> None:
        """Take a cancelled request out of the queue (``pending`` None: it is gone already)."""
        if pending is None or not future.cancelled():
            return
        with self._cond:
            try:
                self._waiting.remove(pending)
            except ValueError:
                pass  # already taken by the worker, which will skip it

    # -- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            try:
                if batch:
                    self._execute(batch)
            finally:
                batch.clear()  # answered: do not keep the batch's items while waiting for the next one
                with self._cond:
                    self._formed = 0
                    self._forming_since = None

    def _next(self, until: float | None) -> _Pending[Item, Result] | None:
        """Pop the oldest waiting request into the batch being formed, waiting for one until
        ``until`` (None: until stopped)."""
        with self._cond:
            while not self._waiting and not self._stop:
                remaining = None if until is None else until - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._stop:
                return None
            self._formed += 1
            if self._forming_since is None:  # set before the pop: the lane reads them in the other order
                self._forming_since = self._waiting[0].enqueued_at
            return self._waiting.popleft()

    def _unform(self, count: int = 1) -> None:
        with self._cond:
            self._formed -= count

    def _collect(self) -> list[_Pending[Item, Result]] | None:
        """Wait for a first live request, then gather companions until full, max_wait passed, one
        more would make the batch end past the deadline of one of its requests, or the next is
        younger than work another model on the device has waiting (the batch would run before that
        work, longer than admission counted for it).

        Returns None when the batcher is stopping.
        """
        first = self._next(None)
        if first is None:
            return None
        batch = [first] if self._claim(first) else []
        if not batch:
            self._unform()
        # the wait for companions is counted from the arrival of the batch's first live request
        wait_until = first.enqueued_at + self.max_wait_s
        while len(batch) < self.max_batch:
            pending = self._next(wait_until)
            if pending is None:
                break
            if batch and (not self._fits(batch, pending) or self.lane.older_work_elsewhere(self, pending.enqueued_at)):
                self._defer(batch, pending)
                break
            if self._claim(pending):
                if not batch:
                    wait_until = pending.enqueued_at + self.max_wait_s
                batch.append(pending)
            else:
                self._unform()
        return batch

    def _fits(self, batch: list[_Pending[Item, Result]], pending: _Pending[Item, Result]) -> bool:
        """Whether ``batch`` plus ``pending`` is predicted to end before each of their deadlines."""
        now = time.monotonic()
        end_s = self._model_end_s(len(batch) + 1, now)
        return end_s is None or now + end_s <= min(p.deadline for p in (*batch, pending))

    def _defer(self, batch: list[_Pending[Item, Result]], pending: _Pending[Item, Result]) -> None:
        """``pending`` does not fit in ``batch``: it heads the next batch, unless even that batch
        is predicted to end past its deadline; then it is dropped now, and its caller learns so a
        batch earlier than when its turn would have come."""
        now = time.monotonic()
        ahead_s = self._model_end_s(len(batch), now)
        own_s = self.cost.seconds(1)
        with self._cond:
            self._formed -= 1
            if ahead_s is None or own_s is None or now + ahead_s + own_s <= pending.deadline:
                self._waiting.appendleft(pending)
                return
        if pending.future.set_running_or_notify_cancel():
            pending.future.set_exception(
                DeadlineExceededError(
                    f"the model would answer in {ahead_s + own_s:.1f} s (after the batch ahead), "
                    f"past the deadline in {max(0.0, pending.deadline - now):.1f} s"
                )
            )

    def _claim(self, pending: _Pending[Item, Result]) -> bool:
        """Mark a request as running; False (drop it) when cancelled, past its deadline, or when
        even a batch of it alone is predicted to end past its deadline."""
        if not pending.future.set_running_or_notify_cancel():
            return False  # the caller gave up (client disconnected, timed out)
        now = time.monotonic()
        if now >= pending.deadline:
            pending.future.set_exception(DeadlineExceededError("deadline passed while queued"))
            return False
        end_s = self._model_end_s(1, now)
        if end_s is not None and now + end_s > pending.deadline:
            pending.future.set_exception(
                DeadlineExceededError(f"the model would answer in {end_s:.1f} s, past the deadline in {pending.deadline - now:.1f} s")
            )
            return False
        return True

    def _forward(self, items: list[Item], since: float) -> tuple[list[Result] | Exception, float, float]:
        """Run the batch function in the device's turn (``since``: when its oldest item was queued)
        and learn its cost: (its results, or its failure; its start; its seconds). The turn ends
        before any caller has its answer, so that a caller that predicts right after its answer
        does not count a forward that ended."""
        with self.lane.turn(self, self.cost.seconds(len(items)), since):
            with self._cond:
                self._formed = 0  # running now: the lane counts it
                self._forming_since = None
            started = time.monotonic()
            outcome: list[Result] | Exception
            try:
                outcome = list(self.batch_fn(items))
                if len(outcome) != len(items):
                    raise RuntimeError(f"{self.name}: batch function returned {len(outcome)} results for {len(items)} items")
            except Exception as exc:  # noqa: BLE001 - every failure must reach the callers
                outcome = exc
            elapsed = time.monotonic() - started
            self._record(len(items), elapsed)
        return outcome, started, elapsed

    def _execute(self, batch: list[_Pending[Item, Result]]) -> None:
        outcome, started, elapsed = self._forward([p.item for p in batch], min(p.enqueued_at for p in batch))
        if not isinstance(outcome, Exception):
            for pending, result in zip(batch, outcome):
                pending.future.set_result(BatchOutcome(result, started - pending.enqueued_at, elapsed, len(batch)))
            return
        if len(batch) == 1:
            batch[0].future.set_exception(outcome)
            return
        # one bad item must not fail its companions: run them one by one
        logger.warning("%s: batch of %d failed (%r); retrying items one by one", self.name, len(batch), outcome)
        for pending in batch:
            alone, started, elapsed = self._forward([pending.item], pending.enqueued_at)
            if isinstance(alone, Exception):
                pending.future.set_exception(alone)
            else:
                pending.future.set_result(BatchOutcome(alone[0], started - pending.enqueued_at, elapsed, 1))

    def _record(self, size: int, seconds: float) -> None:
        self.cost.observe(size, seconds)
        if self.on_batch is not None:
            try:
                self.on_batch(size, seconds)
            except Exception:  # noqa: BLE001 - a metrics hook must never stop the worker
                logger.exception("%s: on_batch hook failed", self.name)


def _whole_seconds(seconds: float | None) -> int:
    """A Retry-After value: whole seconds, at least 1 (1 when nothing is measured yet)."""
    return max(1, math.ceil(seconds)) if seconds is not None else 1
