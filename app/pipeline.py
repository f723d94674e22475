"""The /detect pipeline as named stages, each timed:

    preprocess   decode + checks + keep-ratio resize    (a worker thread, per request)
    queue        waiting for the variant's batcher        (bounded; deadline; cancellable)
    model        ``Detector.infer`` on the batch          (the batcher's thread, shared by the batch)
    postprocess  score / class / count filter, to dicts   (per request)

The stages know nothing about HTTP or metrics; the route turns the outcome into a response and the
timings into metric observations. :func:`await_batch` is the queue wait shared with other work
that goes through a variant's batcher (``/attention``'s exclusive jobs).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from model_zoo import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    LABEL_BY_CATEGORY_ID,
    LABEL_BY_NAME,
    DetectionResult,
    Detector,
    PreparedImage,
)

from .batching import BatcherClosedError, BatchOutcome, DeadlineExceededError, MicroBatcher
from .decode import decode_upload


class InvalidParameterError(ValueError):
    """A query parameter with a value the service does not accept; the message names valid ones."""


class ImageUnprocessableError(ValueError):
    """A decoded image that the model's pre-processing cannot take (e.g. a side shrinks to 0 px)."""


class ModelExecutionError(RuntimeError):
    """The model failed on a batch holding this request (logged with the request id)."""


@dataclass(frozen=True)
class DetectParams:
    """What a request asks for: ``score > score_thr``, at most ``max_dets``, labels in ``labels``."""

    score_thr: float
    max_dets: int | None = None
    labels: frozenset[int] | None = None  # contiguous labels 0..79; None: every class


@dataclass(frozen=True)
class DetectOutcome:
    width: int  # original image, pixels (after EXIF orientation)
    height: int
    detections: list[dict[str, Any]]  # Detection.to_dict(): the `attnzoo predict` schema
    seconds: dict[str, float]  # stage → seconds, keys = metrics.STAGES
    batch_size: int
    result: DetectionResult  # the same detections, typed (after the request's filters)
    image: np.ndarray  # (H, W, 3) BGR uint8: the decoded original the detections refer to


T = TypeVar("T")


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
            if token.isdigit():
                label = LABEL_BY_CATEGORY_ID.get(int(token))
            else:
                label = LABEL_BY_NAME.get(token.lower())
            if label is None:
                raise InvalidParameterError(
                    f"unknown class {token!r} in 'classes'; valid: COCO class names ({', '.join(COCO_CLASSES)}) "
                    f"or COCO category ids ({', '.join(map(str, COCO_CATEGORY_IDS))})"
                )
            labels.add(label)
    return frozenset(labels) if labels else None


async def run_detection(
    detector: Detector,
    batcher: MicroBatcher[PreparedImage, DetectionResult],
    data: bytes | np.ndarray,
    params: DetectParams,
    *,
    deadline: float,
    max_pixels: int,
    disconnected: Callable[[], Awaitable[None]],
) -> DetectOutcome | None:
    """Run one upload through the stages; ``None`` when the client went away first.

    Args:
        data: the uploaded bytes, or an image :func:`decode_upload` already made of them
            ((H, W, 3) BGR uint8; ``/compare`` decodes once for every variant).
        deadline: ``time.monotonic()`` instant after which the request gets 504.
        disconnected: returns an awaitable that completes when the client disconnects.

    Raises:
        UploadError / ImageUnprocessableError (bad input), QueueFullError, DeadlineExceededError,
        BatcherClosedError, ModelExecutionError.
    """
    started = time.perf_counter()
    image, prepared = await run_in_threadpool(_prepare, detector, data, max_pixels)
    preprocess_s = time.perf_counter() - started
    if time.monotonic() >= deadline:
        raise DeadlineExceededError("deadline passed during decoding")
    outcome = await await_batch(batcher.submit(prepared, deadline), deadline, disconnected)
    if outcome is None:
        return None
    post_started = time.perf_counter()
    result = outcome.result.filter(params.score_thr, params.max_dets, params.labels)
    detections = [detection.to_dict() for detection in result.detections]
    seconds = {
        "queue": outcome.queue_s,
        "preprocess": preprocess_s,
        "model": outcome.model_s,
        "postprocess": time.perf_counter() - post_started,
    }
    return DetectOutcome(result.width, result.height, detections, seconds, outcome.batch_size, result, image)


async def await_batch(
    future: "Future[BatchOutcome[T]]",
    deadline: float,
    disconnected: Callable[[], Awaitable[None]],
    *,
    passthrough: tuple[type[Exception], ...] = (),
) -> BatchOutcome[T] | None:
    """Wait for a batcher's future until ``deadline``; ``None`` when the client went away first.

    A request still queued when the wait ends is withdrawn. A failure of the model becomes
    :class:`ModelExecutionError` unless it is one of ``passthrough``.

    Raises:
        DeadlineExceededError, BatcherClosedError, ModelExecutionError, ``passthrough``.
    """
    waiting = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(disconnected())
    try:
        timeout = max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait({waiting, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()  # withdraws the request from the queue if its batch has not started
    if waiting not in done:
        if gone in done:
            return None
        raise DeadlineExceededError("deadline passed while waiting for the model")
    try:
        return waiting.result()
    except (DeadlineExceededError, BatcherClosedError, *passthrough):
        raise
    except Exception as exc:
        raise ModelExecutionError(f"model failed: {type(exc).__name__}: {exc}") from exc


def _prepare(detector: Detector, data: bytes | np.ndarray, max_pixels: int) -> tuple[np.ndarray, PreparedImage]:
    """Decode (unless ``data`` is decoded already) and resize: (original BGR image, prepared)."""
    pixels = data if isinstance(data, np.ndarray) else decode_upload(data, max_pixels=max_pixels).pixels
    try:
        return pixels, detector.prepare(pixels)
    except Exception as exc:  # noqa: BLE001 - the image decoded, so its shape is what the resize refused
        height, width = pixels.shape[:2]
        raise ImageUnprocessableError(f"a {width}x{height} image cannot be resized for the model: {exc}") from exc
