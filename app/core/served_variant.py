"""One loaded variant as the service holds it: its detector, its batcher, its recent latencies.

The stages of one image, each timed::

    preprocess   decode + checks + keep-ratio resize    (a worker thread, per image)
    queue        waiting for the variant's batcher        (bounded; deadline; cancellable)
    model        ``Detector.infer`` on the batch          (the batcher's thread, in the device's turn)
    postprocess  score / class / count filter             (per image)

Cancelling :meth:`ServedVariant.detect_image` (the client went away) withdraws its image from the
queue. Requests hold a served variant through a lease while they use it; one that the pool has
replaced or unloaded is retired once its last lease ends: its queue is served to the end first.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool

from model_zoo import AttentionMap, DetectionResult, Detector, PreparedImage, VariantEntry, WeightsSource, attention_map

from .batching import BatchOutcome, MicroBatcher, QueuePlace
from .decode import ImageHeader, decode_checked, read_header
from .errors import BatcherClosedError, DeadlineExceededError, ImageUnprocessableError, ModelExecutionError
from .requests import AttentionOutcome, AttentionQuery, DetectParams, ImageData, ImageDetections
from .statistics import InferenceStatistics
from .variant_choice import LatencyWindow

T = TypeVar("T")


@dataclass(eq=False)  # identity: a variant is itself, whatever its figures
class ServedVariant:
    """A loaded variant: its detector, its batcher, and the per-image work of a request.

    Args:
        detector: loaded and warmed up; owned from now on.
        batcher: runs ``detector.infer`` on batches of :class:`PreparedImage`.
        max_pixels: image width × height limit of a request (its images together).
        load_seconds: how long loading, verifying and warming up took.
        latency: the window of recent in-service latencies (``variant=auto`` reads it).
        weights_source: "official", "synthetic" (a ``--demo`` stand-in) or "custom".
        statistics: its inference statistics (the batcher's ``on_batch`` hook records its forwards).
    """

    detector: Detector
    batcher: MicroBatcher[PreparedImage, DetectionResult]
    max_pixels: int
    load_seconds: float
    latency: LatencyWindow
    weights_source: WeightsSource
    statistics: InferenceStatistics
    _leases: int = field(default=0, init=False)
    _idle: threading.Condition = field(default_factory=threading.Condition, init=False)

    @property
    def variant(self) -> str:
        return self.detector.variant

    @property
    def entry(self) -> VariantEntry:
        return self.detector.entry

    @property
    def sha256(self) -> str | None:
        return self.detector.sha256

    @property
    def weights_path(self) -> Path | None:
        return self.detector.weights_path

    @property
    def device(self) -> str:
        return str(self.detector.device)

    # -- leases ------------------------------------------------------------------------------

    def acquire(self) -> None:
        """A request starts using this variant (see ``VariantPool.lease``)."""
        with self._idle:
            self._leases += 1

    def release(self) -> None:
        with self._idle:
            self._leases -= 1
            if self._leases == 0:
                self._idle.notify_all()

    def close(self) -> None:
        """Stop the batcher; images still waiting fail with BatcherClosedError."""
        self.batcher.close()

    def retire(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no request uses this variant, then close it.

        Requests that hold a lease finish here; returns False when the wait timed out (the
        stragglers then get 503 shutting_down).
        """
        with self._idle:
            idle = self._idle.wait_for(lambda: self._leases == 0, timeout)
        self.close()
        return idle

    # -- work --------------------------------------------------------------------------------

    async def detect_image(
        self, image: ImageData, header: ImageHeader | None, params: DetectParams, deadline: float, place: QueuePlace
    ) -> ImageDetections:
        """Detections of one image of a request that holds ``place`` in this variant's queue;
        ``header``: the image's, read when the request was checked (None: ``image`` is decoded);
        ``deadline`` is a ``time.monotonic()`` instant.

        Raises:
            decode.UploadError, ImageUnprocessableError, batching errors (overloaded, deadline,
            shutting down), ModelExecutionError.
        """
        started = time.perf_counter()
        pixels, prepared = await run_in_threadpool(self._prepare, image, header)
        preprocess_s = time.perf_counter() - started
        if time.monotonic() >= deadline:
            raise DeadlineExceededError("deadline passed during decoding")
        outcome = await _wait(self.batcher.submit(prepared, deadline, place), deadline)
        post_started = time.perf_counter()
        result = outcome.result.filter(params.score_thr, params.max_dets, params.labels)
        seconds = {
            "queue": outcome.queue_s,
            "preprocess": preprocess_s,
            "model": outcome.model_s,
            "postprocess": time.perf_counter() - post_started,
        }
        self.latency.observe(sum(seconds.values()))
        return ImageDetections(result, pixels, seconds, outcome.batch_size)

    async def attention(self, image: ImageData, header: ImageHeader | None, query: AttentionQuery, deadline: float) -> AttentionOutcome:
        """The attention of ``query``'s block for its point, computed in the device's turn.

        Raises AttentionQueryError for a point outside the image, and the errors of :meth:`detect_image`.
        """
        started = time.perf_counter()
        pixels = image if isinstance(image, np.ndarray) else await run_in_threadpool(self._decode, image, header)
        decoded = time.perf_counter()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError("deadline passed during decoding")
        job = functools.partial(self._attention_in_turn, pixels, query)
        try:
            amap = await asyncio.wait_for(run_in_threadpool(job), remaining)
        except asyncio.TimeoutError:
            raise DeadlineExceededError("deadline passed while computing the attention map") from None
        seconds = {"preprocess": decoded - started, "model": time.perf_counter() - decoded}
        return AttentionOutcome(amap, pixels, seconds)

    def _attention_in_turn(self, pixels: NDArray[np.uint8], query: AttentionQuery) -> AttentionMap:
        with self.batcher.lane.turn(self, self.batcher.cost.seconds(1)):
            return attention_map(self.detector, pixels, stage=query.stage, block=query.block, x=query.x, y=query.y)

    def _decode(self, data: bytes, header: ImageHeader | None) -> NDArray[np.uint8]:
        """Decode an encoded image; ``header`` None: read and checked here."""
        checked = header if header is not None else read_header(data, max_pixels=self.max_pixels)
        return decode_checked(data, checked, max_pixels=self.max_pixels)

    def _prepare(self, image: ImageData, header: ImageHeader | None) -> tuple[NDArray[np.uint8], PreparedImage]:
        """Decode (unless already decoded) and resize: (original BGR image, prepared image)."""
        pixels = image if isinstance(image, np.ndarray) else self._decode(image, header)
        return pixels, prepare(self.detector, pixels)


def prepare(detector: Detector, pixels: NDArray[np.uint8]) -> PreparedImage:
    """``pixels`` (H, W, 3) BGR uint8, resized for ``detector``'s model.

    Raises:
        ImageUnprocessableError: a decoded image the resize refuses (e.g. a side that would be 0).
    """
    try:
        return detector.prepare(pixels)
    except Exception as exc:  # noqa: BLE001 - the image decoded, so its shape is what the resize refused
        height, width = pixels.shape[:2]
        raise ImageUnprocessableError(f"a {width}x{height} image cannot be resized for the model: {exc}") from exc


async def _wait(future: Future[BatchOutcome[T]], deadline: float) -> BatchOutcome[T]:
    """Wait for a batcher's future until ``deadline``; withdraw the request when the wait ends
    early (deadline, or this coroutine cancelled because the client left).

    Raises:
        DeadlineExceededError, BatcherClosedError, ModelExecutionError (any failure of the model).
    """
    waiting = asyncio.wrap_future(future)
    try:
        done, _ = await asyncio.wait({waiting}, timeout=max(0.0, deadline - time.monotonic()))
    finally:
        if not waiting.done():
            waiting.cancel()  # withdraws the request from the queue if its batch has not started
    if not done:
        raise DeadlineExceededError("deadline passed while waiting for the model")
    try:
        return waiting.result()
    except (DeadlineExceededError, BatcherClosedError):
        raise
    except Exception as exc:
        raise ModelExecutionError(f"model failed: {type(exc).__name__}: {exc}") from exc
