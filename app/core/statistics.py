"""Inference statistics of one served variant, with the meaning Triton gives its model statistics.

Every front door's requests count (the core records them, not the doors): a :class:`ServedVariant`
holds one :class:`InferenceStatistics` for its life, so a variant loaded again starts from zero,
as a model reloaded by Triton does. The Open Inference Protocol door answers them as Triton's
``ModelStatistics``, and the metrics export them as Triton's ``nv_inference_*`` families.

What is counted (times in nanoseconds):

- per **request** that reached the variant (``InferenceService.detect``): ``success`` (its time in
  the core, end to end) or ``fail`` (by reason, :data:`FAILURE_REASONS`); for a success also its
  stages: ``compute_input`` (decoding and resizing its images), ``queue`` (waiting for the model),
  ``compute_infer`` (the forward of its batch, whole: requests that shared a forward are each
  charged all of it), ``compute_output`` (the score, class and count filter). A request of several
  images is charged the stages of its image that was answered last;
- ``inference_count``: images inferred (of successful requests); ``last_inference``: when the last
  request succeeded (milliseconds since the epoch);
- per **execution** of the model (the batcher's hook): ``execution_count`` and, per batch size
  (images in the forward), its count and the forward's time as ``compute_infer``. The batch
  itself has no input or output stage of its own (its images were prepared, and are filtered,
  per request), so a batch size's ``compute_input`` and ``compute_output`` count its executions
  with no time.

A request refused before it reached the variant's queue for what it asked (an unknown model, a
bad parameter or shape, too many images) counts nowhere, as in Triton.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Literal

FailureReason = Literal["OTHER", "BACKEND", "CANCELED", "REJECTED"]
# Triton's reasons: the model failed (BACKEND), the client went away (CANCELED), the queue refused
# the request (REJECTED), anything else after admission: a bad image, a deadline passed (OTHER).
FAILURE_REASONS: tuple[FailureReason, ...] = ("OTHER", "BACKEND", "CANCELED", "REJECTED")
_NS = 1_000_000_000


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * _NS))


@dataclass(frozen=True)
class Duration:
    """How many times something happened, and the nanoseconds it took in all."""

    count: int = 0
    ns: int = 0

    def plus(self, ns: int) -> Duration:
        return Duration(self.count + 1, self.ns + ns)


@dataclass(frozen=True)
class BatchStatistics:
    """The executions of the model with ``batch_size`` images."""

    batch_size: int
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()


@dataclass(frozen=True)
class RequestStages:
    """Nanoseconds a successful request spent per stage (see the module's docstring)."""

    compute_input: int
    queue: int
    compute_infer: int
    compute_output: int


@dataclass(frozen=True)
class StatisticsSnapshot:
    """The statistics at one moment."""

    last_inference_ms: int = 0  # milliseconds since the epoch; 0: no request has succeeded yet
    inference_count: int = 0  # images
    execution_count: int = 0  # forwards
    success: Duration = Duration()
    fail: Duration = Duration()
    queue: Duration = Duration()
    compute_input: Duration = Duration()
    compute_infer: Duration = Duration()
    compute_output: Duration = Duration()
    batches: tuple[BatchStatistics, ...] = ()  # by batch size, ascending
    failures: dict[FailureReason, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))


class InferenceStatistics:
    """The statistics of one served variant; thread-safe (requests record from the event loop,
    executions from the batcher's worker thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = StatisticsSnapshot()
        self._batches: dict[int, BatchStatistics] = {}

    def record_success(self, images: int, request_ns: int, stages: RequestStages) -> None:
        """A request of ``images`` images answered, ``request_ns`` after it reached the core."""
        with self._lock:
            now = self._now
            self._now = replace(
                now,
                last_inference_ms=time.time_ns() // 1_000_000,
                inference_count=now.inference_count + images,
                success=now.success.plus(request_ns),
                queue=now.queue.plus(stages.queue),
                compute_input=now.compute_input.plus(stages.compute_input),
                compute_infer=now.compute_infer.plus(stages.compute_infer),
                compute_output=now.compute_output.plus(stages.compute_output),
            )

    def record_failure(self, reason: FailureReason, request_ns: int) -> None:
        """A request that reached the variant and was not answered with detections."""
        with self._lock:
            now = self._now
            self._now = replace(now, fail=now.fail.plus(request_ns), failures={**now.failures, reason: now.failures[reason] + 1})

    def record_execution(self, batch_size: int, seconds: float) -> None:
        """One forward of ``batch_size`` images that took ``seconds``."""
        with self._lock:
            batch = self._batches.get(batch_size, BatchStatistics(batch_size))
            self._batches[batch_size] = BatchStatistics(
                batch_size,
                compute_input=batch.compute_input.plus(0),
                compute_infer=batch.compute_infer.plus(nanoseconds(seconds)),
                compute_output=batch.compute_output.plus(0),
            )
            self._now = replace(self._now, execution_count=self._now.execution_count + 1)

    def snapshot(self) -> StatisticsSnapshot:
        with self._lock:
            return replace(self._now, batches=tuple(self._batches[size] for size in sorted(self._batches)))
