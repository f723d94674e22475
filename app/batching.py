"""Dynamic micro-batching: many concurrent requests, one model call per batch.

Contract (list in, list out): the batch function takes a list of items and returns a list of
results of the same length and order. The batcher knows nothing about images or HTTP.

Requests are queued in a bounded queue. One worker thread per batcher takes the first waiting
request, waits up to ``max_wait_s`` (counted from that request's arrival) for up to
``max_batch - 1`` companions, and calls the batch function off the event loop.

Admission is deadline-aware. The batcher keeps the measured duration of its recent batches (an
exponential moving average per batch size, and one of their deviation from it), so it can predict
when a newly queued request would be answered: the rest of the running batch, then the batches of
the requests ahead of it, then its own, each counted as its average plus ``spread_allowance`` mean
deviations (a request admitted on the average alone would miss its deadline whenever the batches
ahead ran a little slow, and wait for a 504 instead of a 429 at once). A request is refused at
once, with a ``retry_after_s`` computed from those same figures, when the queue is full
(:class:`QueueFullError`) or when that prediction lands past its deadline
(:class:`DeadlineUnreachableError`); both are :class:`OverloadedError`. :meth:`MicroBatcher.admit`
makes the same check before the request has an item to queue (before its upload is read and
decoded) and holds its place (:class:`Admission`) until :meth:`MicroBatcher.submit` takes it over:
held places count as waiting requests, so that requests admitted together see one another.
A queued request whose deadline passed, whose batch would end past its deadline (checked when
its batch forms, and as soon as it is left for the next batch), or whose caller gave up (its
future cancelled, e.g. the client disconnected) is dropped before it reaches the model, so it
costs the other requests nothing.
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
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger("attnzoo.batching")

class OverloadedError(Exception):
    """The batcher cannot take the request now; retry after ``retry_after_s`` (whole seconds, >= 1)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(OverloadedError):
    """The queue holds ``queue_size`` requests already."""

    def __init__(self, name: str, queue_size: int, retry_after_s: int) -> None:
        super().__init__(f"{name}: {queue_size} requests are already waiting; retry in {retry_after_s} s", retry_after_s)


class DeadlineUnreachableError(OverloadedError):
    """The requests already queued would keep this one past its deadline."""

    def __init__(self, name: str, waiting: int, predicted_s: float, budget_s: float, retry_after_s: int) -> None:
        super().__init__(
            f"{name}: with {waiting} requests waiting the answer would take about {predicted_s:.1f} s, "
            f"past the deadline in {budget_s:.1f} s; retry in {retry_after_s} s",
            retry_after_s,
        )


class DeadlineExceededError(Exception):
    """The request's deadline passed before the model reached it."""


class BatcherClosedError(Exception):
    """The batcher was shut down (service stopping)."""


class Admission:
    """A request's place in a batcher's queue, held from its admission (:meth:`MicroBatcher.admit`)
    until it is queued (:meth:`MicroBatcher.submit` takes the place over) or gives up
    (:meth:`release`, or the end of a ``with`` block; both are no-ops once the place is gone).

    Held places count as waiting requests in every admission check. Without them a burst is
    admitted whole while the queue is still empty (every request of it is still reading and
    decoding its upload), and refused only later, one by one, after that work (issue 12: 640
    requests at once, refusals 1-3 s late).
    """

    __slots__ = ("batcher", "held")

    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher
        self.held = True  # guarded by the batcher's lock

    def release(self) -> None:
        self.batcher._release(self)

    def __enter__(self) -> Admission:
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
class _Pending(Generic[Item]):
    item: Item
    future: Future
    enqueued_at: float  # time.monotonic()
    deadline: float  # time.monotonic()


class MicroBatcher(Generic[Item, Result]):
    """Queue + worker thread around ``batch_fn(list[Item]) -> list[Result]``.

    Args:
        batch_fn: called from the worker thread only, one call at a time.
        max_batch: most items per call.
        max_wait_s: longest wait for companions after the first item of a batch arrived.
        queue_size: most items waiting; :meth:`submit` beyond it raises :class:`QueueFullError`.
            A withdrawn (cancelled) request leaves the queue at once and frees its place.
        smoothing: weight of the newest batch in the moving averages of batch durations and of
            their deviation.
        spread_allowance: admission counts each batch as its average duration plus this many
            mean deviations.
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
        on_batch: Callable[[int, float], None] | None = None,
        smoothing: float = 0.2,
        spread_allowance: float = 2.0,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0 or spread_allowance < 0:
            raise ValueError(
                "need max_batch >= 1, queue_size >= 1, max_wait_s >= 0, spread_allowance >= 0; "
                f"got {max_batch}, {queue_size}, {max_wait_s}, {spread_allowance}"
            )
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.name = name
        self.on_batch = on_batch
        self._waiting: deque[_Pending[Item]] = deque()
        self._held = 0  # places held by admitted requests not queued yet (Admission)
        self._cond = threading.Condition()
        self._stop = False
        self.smoothing = smoothing
        self.spread_allowance = spread_allowance
        # seconds of a batch of n items (index n), moving average of measured batches; 0: none yet
        self._batch_s = [0.0] * (max_batch + 1)
        # moving average of |a measured batch - the average before it|, seconds, per size
        self._batch_dev_s = [0.0] * (max_batch + 1)
        self._running: tuple[float, int] | None = None  # (time.monotonic() at its start, size)
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def qsize(self) -> int:
        """Requests waiting for the model (not counting the batch running now)."""
        with self._cond:
            return len(self._waiting)

    def submit(self, item: Item, deadline: float, admission: Admission | None = None) -> "Future[BatchOutcome[Result]]":
        """Queue ``item``; ``deadline`` is a ``time.monotonic()`` instant. ``admission``: the place
        the request was given by :meth:`admit`, which the queued item takes over (a place of
        another batcher, one whose variant was reloaded meanwhile, is released).

        Cancel the returned future to withdraw the request; that works until its batch starts.

        Raises:
            QueueFullError, DeadlineUnreachableError (both OverloadedError), BatcherClosedError.
        """
        if admission is not None and admission.batcher is not self:
            admission.release()
            admission = None
        return self._enqueue(_Pending(item, Future(), time.monotonic(), deadline), admission)

    def admit(self, deadline: float) -> Admission:
        """Admit a request with this deadline before it has an item to queue, and hold its place.

        Cheap (no model work): call it before expensive preparation such as reading and decoding
        an upload, so that an overloaded service refuses at once; then pass the place to
        :meth:`submit` (which checks again), or release it when the request ends otherwise.

        Raises:
            QueueFullError, DeadlineUnreachableError (both OverloadedError), BatcherClosedError.
        """
        with self._cond:
            self._check_admission(deadline, time.monotonic())
            self._held += 1
        return Admission(self)

    def _release(self, admission: Admission) -> None:
        with self._cond:
            self._unhold(admission)

    def _unhold(self, admission: Admission) -> None:
        """Give up ``admission``'s place, if it still holds one (call with the lock held)."""
        if admission.held:
            admission.held = False
            self._held -= 1

    def predicted_batch_s(self, size: int) -> float | None:
        """Seconds a batch of ``size`` items is predicted to take (see :meth:`_predicted_batch_s`)."""
        with self._cond:
            return self._predicted_batch_s(size, time.monotonic())

    def predicted_wait_s(self, position: int | None = None) -> float | None:
        """Seconds until a request queued now at ``position`` (default: behind every waiting and
        every admitted request) would have its result, as admission counts them (allowing for
        the batches' spread); None until a batch has been measured (or is running)."""
        with self._cond:
            ahead = len(self._waiting) + self._held if position is None else position
            return self._seconds_to_serve(ahead + 1, time.monotonic())

    def _enqueue(self, pending: _Pending[Item], admission: Admission | None) -> Future:
        future = pending.future
        with self._cond:
            if admission is not None:
                self._unhold(admission)  # the queued item takes the place over
            self._check_admission(pending.deadline, pending.enqueued_at)
            self._waiting.append(pending)
            self._cond.notify()
        # a weak reference: a callback holding the request would make request → future → callback
        # a reference cycle, and its image would stay in memory until a full garbage collection
        # (long after the request; the heap grows meanwhile: issue 12's 1000-request soak)
        pending_ref = weakref.ref(pending)
        future.add_done_callback(lambda done: self._withdraw_if_cancelled(pending_ref(), done))
        return future

    def _check_admission(self, deadline: float, now: float) -> None:
        """Raise if a request with ``deadline`` cannot be queued at ``now`` (call with the lock held)."""
        if self._stop:
            raise BatcherClosedError(f"{self.name}: shutting down")
        waiting = len(self._waiting) + self._held
        if waiting >= self.queue_size:
            # a place frees up once the requests over the limit have been taken by the worker
            raise QueueFullError(self.name, self.queue_size, _whole_seconds(self._seconds_to_serve(waiting + 1 - self.queue_size, now)))
        predicted = self._seconds_to_serve(waiting + 1, now)
        budget = deadline - now
        if predicted is not None and predicted > budget:
            # by then the queue ahead has shrunk by the excess, and a request with the same budget fits
            retry = _whole_seconds(predicted - max(budget, 0.0))
            raise DeadlineUnreachableError(self.name, waiting, predicted, max(budget, 0.0), retry)

    def _seconds_to_serve(self, items: int, now: float) -> float | None:
        """Seconds from ``now`` until the first ``items`` queued requests have their results, as
        admission counts them: the rest of the running batch, then full batches, then the
        remainder, each allowing for ``spread_allowance`` mean deviations.

        None when nothing has been measured yet and no batch is running.
        """
        allowance = self.spread_allowance
        full, rest = divmod(items, self.max_batch)
        full_batch_s = self._predicted_batch_s(self.max_batch, now, allowance)
        rest_batch_s = self._predicted_batch_s(rest, now, allowance) if rest else 0.0
        if full_batch_s is None or rest_batch_s is None:
            return None
        remaining_s = 0.0
        running = self._running
        if running is not None:
            started, size = running
            remaining_s = max(0.0, (self._predicted_batch_s(size, now, allowance) or 0.0) - (now - started))
        return remaining_s + full * full_batch_s + rest_batch_s

    def _predicted_batch_s(self, size: int, now: float, allowance: float = 0.0) -> float | None:
        """Seconds a batch of ``size`` items takes: its moving average (plus ``allowance`` mean
        deviations); else scaled from the nearest measured size (linearly up, since a CPU's cost
        per image is about constant; as is down, since a smaller batch takes no longer); else a
        lower bound from the running batch."""
        def measured_s(n: int) -> float:
            return self._batch_s[n] + allowance * self._batch_dev_s[n]

        if self._batch_s[size] > 0:
            return measured_s(size)
        smaller = [n for n in range(size - 1, 0, -1) if self._batch_s[n] > 0]
        if smaller:
            return measured_s(smaller[0]) * size / smaller[0]
        larger = [n for n in range(size + 1, self.max_batch + 1) if self._batch_s[n] > 0]
        if larger:
            return measured_s(larger[0])
        running = self._running
        if running is not None:  # nothing finished yet: it has taken at least this long
            started, running_size = running
            return (now - started) * size / running_size
        return None

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker after its current batch; waiting requests fail with BatcherClosedError."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            left, self._waiting = list(self._waiting), deque()
        for pending in left:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(BatcherClosedError(f"{self.name}: shutting down"))

    def _withdraw_if_cancelled(self, pending: _Pending[Item] | None, future: Future) -> None:
        """Take a cancelled request out of the queue (``pending`` None: it is gone already)."""
        if pending is None or not future.cancelled():
            return
        with self._cond:
            try:
                self._waiting.remove(pending)
            except ValueError:
                pass  # already taken by the worker, which will skip it

    # -- worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            if batch:
                try:
                    self._execute(batch)
                finally:
                    batch.clear()  # answered: do not keep the batch's items while waiting for the next one

    def _next(self, until: float | None) -> _Pending[Item] | None:
        """Pop the oldest waiting request, waiting for one until ``until`` (None: until stopped)."""
        with self._cond:
            while not self._waiting and not self._stop:
                remaining = None if until is None else until - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._stop:
                return None
            return self._waiting.popleft()

    def _collect(self) -> list[_Pending[Item]] | None:
        """Wait for a first live request, then gather companions until full, max_wait passed, or
        one more would make the batch end past the deadline of one of its requests.

        Returns None when the batcher is stopping.
        """
        first = self._next(None)
        if first is None:
            return None
        batch = [first] if self._claim(first) else []
        # the wait for companions is counted from the arrival of the batch's first live request
        wait_until = first.enqueued_at + self.max_wait_s
        while len(batch) < self.max_batch:
            pending = self._next(wait_until)
            if pending is None:
                break
            if batch and not self._fits(batch, pending):
                self._defer(batch, pending)
                break
            if self._claim(pending):
                if not batch:
                    wait_until = pending.enqueued_at + self.max_wait_s
                batch.append(pending)
        return batch

    def _fits(self, batch: list[_Pending[Item]], pending: _Pending[Item]) -> bool:
        """Whether ``batch`` plus ``pending`` is predicted to end before each of their deadlines."""
        now = time.monotonic()
        predicted = self._predicted_batch_s(len(batch) + 1, now)
        return predicted is None or now + predicted <= min(p.deadline for p in (*batch, pending))

    def _defer(self, batch: list[_Pending[Item]], pending: _Pending[Item]) -> None:
        """``pending`` does not fit in ``batch``: it heads the next batch, unless even that batch
        is predicted to end past its deadline; then it is dropped now, and its caller learns so a
        batch earlier than when its turn would have come."""
        now = time.monotonic()
        ahead_s = self._predicted_batch_s(len(batch), now)
        own_s = self._predicted_batch_s(1, now)
        if ahead_s is not None and own_s is not None and now + ahead_s + own_s > pending.deadline:
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(
                    DeadlineExceededError(
                        f"the model would answer in {ahead_s + own_s:.1f} s (after the batch ahead), "
                        f"past the deadline in {max(0.0, pending.deadline - now):.1f} s"
                    )
                )
            return
        with self._cond:
            self._waiting.appendleft(pending)

    def _claim(self, pending: _Pending[Item]) -> bool:
        """Mark a request as running; False (drop it) when cancelled, past its deadline, or when
        even a batch of it alone is predicted to end past its deadline."""
        if not pending.future.set_running_or_notify_cancel():
            return False  # the caller gave up (client disconnected, timed out)
        now = time.monotonic()
        if now >= pending.deadline:
            pending.future.set_exception(DeadlineExceededError("deadline passed while queued"))
            return False
        predicted = self._predicted_batch_s(1, now)
        if predicted is not None and now + predicted > pending.deadline:
            pending.future.set_exception(
                DeadlineExceededError(f"the model would answer in {predicted:.1f} s, past the deadline in {pending.deadline - now:.1f} s")
            )
            return False
        return True

    def _execute(self, batch: list[_Pending[Item]]) -> None:
        started = time.monotonic()
        self._running = (started, len(batch))
        try:
            try:
                results = list(self.batch_fn([p.item for p in batch]))
            finally:
                # done running before any caller has its answer: a caller that predicts right
                # after its answer must not count the rest of a batch that has ended
                self._running = None
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: batch function returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - every failure must reach the callers
            elapsed = time.monotonic() - started
            self._record(len(batch), elapsed)
            if len(batch) > 1:
                # one bad item must not fail its companions: run them one by one
                logger.warning("%s: batch of %d failed (%r); retrying items one by one", self.name, len(batch), exc)
                for pending in batch:
                    self._execute_one(pending)
                return
            batch[0].future.set_exception(exc)
            return
        elapsed = time.monotonic() - started
        self._record(len(batch), elapsed)
        for pending, result in zip(batch, results):
            pending.future.set_result(BatchOutcome(result, started - pending.enqueued_at, elapsed, len(batch)))

    def _execute_one(self, pending: _Pending[Item]) -> None:
        started = time.monotonic()
        try:
            (result,) = self.batch_fn([pending.item])
        except Exception as exc:  # noqa: BLE001
            pending.future.set_exception(exc)
            result = None
        elapsed = time.monotonic() - started
        self._record(1, elapsed)
        if not pending.future.done():
            pending.future.set_result(BatchOutcome(result, started - pending.enqueued_at, elapsed, 1))

    def _record(self, size: int, seconds: float) -> None:
        previous = self._batch_s[size]
        if previous == 0:
            self._batch_s[size] = seconds
        else:
            self._batch_dev_s[size] = (1 - self.smoothing) * self._batch_dev_s[size] + self.smoothing * abs(seconds - previous)
            self._batch_s[size] = (1 - self.smoothing) * previous + self.smoothing * seconds
        if self.on_batch is not None:
            try:
                self.on_batch(size, seconds)
            except Exception:  # noqa: BLE001 - a metrics hook must never stop the worker
                logger.exception("%s: on_batch hook failed", self.name)


def _whole_seconds(seconds: float | None) -> int:
    """A Retry-After value: whole seconds, at least 1 (1 when nothing is measured yet)."""
    return max(1, math.ceil(seconds)) if seconds is not None else 1
