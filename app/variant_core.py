"""One loaded variant, as every front door sees it: detect images, attention for a query point.

A :class:`VariantCore` owns the variant's :class:`~model_zoo.Detector` and its
:class:`~app.batching.MicroBatcher`; the pool builds one only for a variant that loaded, so neither
is ever missing. Front doors (``/detect``, ``/compare``, ``/attention``, and any other protocol)
parse their protocol's input, call the core, and render its typed results; the core knows nothing
of HTTP. The stages of one detection, each timed::

    preprocess   decode + checks + keep-ratio resize    (a worker thread, per image)
    queue        waiting for the variant's batcher        (bounded; deadline; cancellable)
    model        ``Detector.infer`` on the batch          (the batcher's thread, shared by the batch)
    postprocess  score / class / count filter             (per image)

Cancelling a coroutine of the core (the client went away) withdraws its images from the queue.
Front doors hold a core through the pool's lease while they use it; a core that the pool has
replaced or unloaded is retired once its last lease ends: its queue is served to the end first.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from model_zoo import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    LABEL_BY_CATEGORY_ID,
    LABEL_BY_NAME,
    AttentionMap,
    DetectionResult,
    Detector,
    PreparedImage,
    VariantEntry,
    WeightsSource,
    attention_map,
)

from .batching import Admission, BatcherClosedError, BatchOutcome, DeadlineExceededError, MicroBatcher
from .decode import decode_upload
from .latency import LatencyWindow

DEFAULT_SCORE_THR = 0.3  # the service's default filter (the test config's own threshold is 0.05)

T = TypeVar("T")
ImageData = bytes | np.ndarray  # an upload's bytes, or an image decode_upload already made of them


class InvalidParameterError(ValueError):
    """A request parameter with a value the service does not accept; the message names valid ones."""


class ImageUnprocessableError(ValueError):
    """A decoded image that the model's pre-processing cannot take."""


class ModelExecutionError(RuntimeError):
    """The model failed on a batch holding this request (logged with the request id)."""


@dataclass(frozen=True)
class DetectParams:
    """What a request asks for: ``score > score_thr``, at most ``max_dets``, labels in ``labels``."""

    score_thr: float = DEFAULT_SCORE_THR
    max_dets: int | None = None
    labels: frozenset[int] | None = None  # contiguous labels 0..79; None: every class


@dataclass(frozen=True)
class DetectOutcome:
    """One image's answer: its detections after the request's filters, and how time was spent."""

    result: DetectionResult  # width/height of the original image, detections by descending score
    image: np.ndarray  # (H, W, 3) BGR uint8: the decoded original the detections refer to
    seconds: dict[str, float]  # stage → seconds, keys = metrics.STAGES
    batch_size: int  # images that shared the model call


@dataclass(frozen=True)
class AttentionOutcome:
    attention: AttentionMap
    image: np.ndarray  # (H, W, 3) BGR uint8
    seconds: dict[str, float]  # "preprocess" (decoding) and "model" (the forward that recorded it)


def parse_classes(values: Iterable[str] | None) -> frozenset[int] | None:
    """Class names (``person``) or COCO category ids (``1``), repeated or comma-separated → labels.

    Raises:
        InvalidParameterError: naming the unknown value and the valid names and ids.
    """
    if values is None:
        return None
    labels: set[int] = set()
    for value in values:
        for token in (t.strip() for t in value.split(",")):
            if not token:
                continue
            if not token.isascii():  # names and ids are ASCII; so no Unicode case folding or digits
                label = None
            else:
                label = LABEL_BY_CATEGORY_ID.get(int(token)) if token.isdigit() else LABEL_BY_NAME.get(token.lower())
            if label is None:
                raise InvalidParameterError(
                    f"unknown class {token!r} in 'classes'; valid: COCO class names ({', '.join(COCO_CLASSES)}) "
                    f"or COCO category ids ({', '.join(map(str, COCO_CATEGORY_IDS))})"
                )
            labels.add(label)
    return frozenset(labels) if labels else None


async def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """An upload → (H, W, 3) BGR uint8, in a worker thread. Raises decode.UploadError."""
    return (await run_in_threadpool(decode_upload, data, max_pixels=max_pixels)).pixels


class VariantCore:
    """A loaded variant: its detector, its batcher, and the operations the protocols need.

    Args:
        detector: loaded and warmed up; owned from now on.
        batcher: runs ``detector.infer`` on batches of :class:`PreparedImage`.
        max_pixels: image width × height limit, checked before decoding.
        load_seconds: how long loading, verifying and warming up took.
        latency: the window of recent in-service latencies (``variant=auto`` reads it).
        weights_source: "official", "synthetic" (a ``--demo`` stand-in) or "custom".
    """

    def __init__(
        self,
        detector: Detector,
        batcher: MicroBatcher[PreparedImage, DetectionResult],
        *,
        max_pixels: int,
        load_seconds: float,
        latency: LatencyWindow,
        weights_source: WeightsSource,
    ) -> None:
        self.detector = detector
        self.batcher = batcher
        self.max_pixels = max_pixels
        self.load_seconds = load_seconds
        self.latency = latency
        self.weights_source = weights_source
        self._leases = 0
        self._idle = threading.Condition()

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

    def close(self) -> None:
        """Stop the batcher; images still waiting fail with BatcherClosedError."""
        self.batcher.close()

    def acquire(self) -> None:
        """A front door starts using this core (see ``ModelPool.lease``)."""
        with self._idle:
            self._leases += 1

    def release(self) -> None:
        with self._idle:
            self._leases -= 1
            if self._leases == 0:
                self._idle.notify_all()

    def retire(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no front door uses this core, then close it.

        Requests that hold a lease finish on this core; returns False when the wait timed out
        (the stragglers then get 503 shutting_down).
        """
        with self._idle:
            idle = self._idle.wait_for(lambda: self._leases == 0, timeout)
        self.close()
        return idle

    def admit(self, deadline: float) -> Admission:
        """Refuse now, before any work on the request (reading or decoding its image), what the
        batcher would refuse: a full queue, or a queue ahead that would keep it past ``deadline``;
        else hold the request's place in the queue. Give the place to :meth:`detect`, or use it as
        a context manager that releases it when the request ends.

        Raises:
            OverloadedError (429, with Retry-After), BatcherClosedError.
        """
        return self.batcher.admit(deadline)

    async def detect(
        self, image: ImageData, params: DetectParams, deadline: float, admission: Admission | None = None
    ) -> DetectOutcome:
        """Detections of one image; ``deadline`` is a ``time.monotonic()`` instant; ``admission``:
        the request's place from :meth:`admit` (default: admitted here, before decoding).

        Raises:
            decode.UploadError, ImageUnprocessableError, batching errors (overloaded, deadline,
            shutting down), ModelExecutionError.
        """
        with admission or self.admit(deadline) as place:  # released if the request ends before it is queued
            started = time.perf_counter()
            pixels, prepared = await run_in_threadpool(self._prepare, image)
            preprocess_s = time.perf_counter() - started
            if time.monotonic() >= deadline:
                raise DeadlineExceededError("deadline passed during decoding")
            queued = self.batcher.submit(prepared, deadline, place)
        outcome = await _wait(queued, deadline)
        post_started = time.perf_counter()
        result = outcome.result.filter(params.score_thr, params.max_dets, params.labels)
        seconds = {
            "queue": outcome.queue_s,
            "preprocess": preprocess_s,
            "model": outcome.model_s,
            "postprocess": time.perf_counter() - post_started,
        }
        self.latency.observe(sum(seconds.values()))
        return DetectOutcome(result, pixels, seconds, outcome.batch_size)

    async def detect_all(
        self, images: Sequence[ImageData], params: DetectParams, deadline: float, admission: Admission | None = None
    ) -> list[DetectOutcome]:
        """Detections of several images of one request, queued together (they may share batches).
        ``admission``: the request's place from :meth:`admit`, which its first image takes.

        The first failure fails the request; the other images are withdrawn.
        """
        tasks = [
            asyncio.ensure_future(self.detect(image, params, deadline, admission if index == 0 else None))
            for index, image in enumerate(images)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            if admission is not None:
                admission.release()  # its image was cancelled before it started (a no-op once queued)

    async def attention(
        self, image: ImageData, *, stage: int, block: int, x: float, y: float, deadline: float
    ) -> AttentionOutcome:
        """Block ``block`` of ``stage``'s attention for the query at (x, y), original-image pixels.

        Runs in a worker thread beside the batcher's forwards (the attention map is computed
        without touching the shared model's state). Raises AttentionQueryError for a point
        outside the image, and the errors of :meth:`detect`.
        """
        started = time.perf_counter()
        pixels = image if isinstance(image, np.ndarray) else await decode_image(image, max_pixels=self.max_pixels)
        decoded = time.perf_counter()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceededError("deadline passed during decoding")
        job = functools.partial(attention_map, self.detector, pixels, stage=stage, block=block, x=x, y=y)
        try:
            amap = await asyncio.wait_for(run_in_threadpool(job), remaining)
        except asyncio.TimeoutError:
            raise DeadlineExceededError("deadline passed while computing the attention map") from None
        seconds = {"preprocess": decoded - started, "model": time.perf_counter() - decoded}
        return AttentionOutcome(amap, pixels, seconds)

    def _prepare(self, image: ImageData) -> tuple[np.ndarray, PreparedImage]:
        """Decode (unless already decoded) and resize: (original BGR image, prepared image)."""
        pixels = image if isinstance(image, np.ndarray) else decode_upload(image, max_pixels=self.max_pixels).pixels
        try:
            return pixels, self.detector.prepare(pixels)
        except Exception as exc:  # noqa: BLE001 - the image decoded, so its shape is what the resize refused
            height, width = pixels.shape[:2]
            raise ImageUnprocessableError(f"a {width}x{height} image cannot be resized for the model: {exc}") from exc


async def _wait(future: "Future[BatchOutcome[T]]", deadline: float) -> BatchOutcome[T]:
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
