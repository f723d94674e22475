"""Dynamic micro-batching: many concurrent requests, one model call per batch.

Contract (list in, list out): the batch function takes a list of items and returns a list of
results of the same length and order. The batcher knows nothing about images or HTTP.

Requests are queued in a bounded queue. One worker thread per batcher takes the first waiting
request, waits up to ``max_wait_s`` (counted from that request's arrival) for up to
``max_batch - 1`` companions, and calls the batch function off the event loop. A full queue
refuses at once (:class:`QueueFullError`); a request whose deadline passed or whose caller gave up
(its future cancelled, e.g. the client disconnected) is dropped before it reaches the model, so
it costs the other requests nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

logger = logging.getLogger("attnzoo.batching")

class QueueFullError(Exception):
    """The queue holds ``queue_size`` requests already; retry after ``retry_after_s`` seconds."""

    def __init__(self, name: str, queue_size: int, retry_after_s: int) -> None:
        super().__init__(f"{name}: {queue_size} requests are already waiting; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class DeadlineExceededError(Exception):
    """The request's deadline passed before the model reached it."""


class BatcherClosedError(Exception):
    """The batcher was shut down (service stopping)."""


@dataclass(frozen=True)
class BatchOutcome(Generic[Result]):
    """What one request gets back: its result and how its time was spent (seconds)."""

    result: Result
    queue_s: float  # enqueue → start of the batch function
    model_s: float  # duration of the batch function (shared by the whole batch)
    batch_size: int


@dataclass
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
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1, queue_size >= 1, max_wait_s >= 0; got {max_batch}, {queue_size}, {max_wait_s}")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.name = name
        self.on_batch = on_batch
        self._waiting: deque[_Pending[Item]] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._mean_batch_s = 0.0  # exponential moving average, for Retry-After
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def qsize(self) -> int:
        """Requests waiting for the model (not counting the batch running now)."""
        with self._cond:
            return len(self._waiting)

    def submit(self, item: Item, deadline: float) -> "Future[BatchOutcome[Result]]":
        """Queue ``item``; ``deadline`` is a ``time.monotonic()`` instant.

        Cancel the returned future to withdraw the request; that works until its batch starts.
        """
        return self._enqueue(_Pending(item, Future(), time.monotonic(), deadline))

    def _enqueue(self, pending: _Pending[Item]) -> Future:
        future = pending.future
        with self._cond:
            if self._stop:
                raise BatcherClosedError(f"{self.name}: shutting down")
            if len(self._waiting) >= self.queue_size:
                raise QueueFullError(self.name, self.queue_size, self.retry_after_s())
            self._waiting.append(pending)
            self._cond.notify()
        future.add_done_callback(lambda done: self._withdraw(pending) if done.cancelled() else None)
        return future

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has likely drained (at least 1)."""
        batches = math.ceil(self.queue_size / self.max_batch) + 1
        return max(1, math.ceil(batches * self._mean_batch_s))

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

    def _withdraw(self, pending: _Pending[Item]) -> None:
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
                self._execute(batch)

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
        """Wait for a first live request, then gather companions until full or max_wait passed.

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
            if self._claim(pending):
                if not batch:
                    wait_until = pending.enqueued_at + self.max_wait_s
                batch.append(pending)
        return batch

    @staticmethod
    def _claim(pending: _Pending[Item]) -> bool:
        """Mark a request as running; False (drop it) when cancelled or past its deadline."""
        if not pending.future.set_running_or_notify_cancel():
            return False  # the caller gave up (client disconnected, timed out)
        if time.monotonic() >= pending.deadline:
            pending.future.set_exception(DeadlineExceededError("deadline passed while queued"))
            return False
        return True

    def _execute(self, batch: list[_Pending[Item]]) -> None:
        started = time.monotonic()
        try:
            results = list(self.batch_fn([p.item for p in batch]))
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
        self._mean_batch_s = seconds if self._mean_batch_s == 0 else 0.8 * self._mean_batch_s + 0.2 * seconds
        if self.on_batch is not None:
            try:
                self.on_batch(size, seconds)
            except Exception:  # noqa: BLE001 - a metrics hook must never stop the worker
                logger.exception("%s: on_batch hook failed", self.name)
