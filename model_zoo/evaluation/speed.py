"""fps as mmdet measured the published table, from per-image timings however they were taken.

mmdet's benchmark (``tools/benchmark.py`` / ``InferenceBenchmark``): batch 1, images in
annotation-file order, the first 5 iterations are warm-up, each timed iteration runs from
``torch.cuda.synchronize()`` to ``torch.cuda.synchronize()`` around normalise + pad + forward +
post-process (decode and resize excluded), stop after 2000 images; fps = timed images / seconds.

The job logs each image's timing as it goes (a local model: :mod:`.timing`; an endpoint: the
server's reported model time and the client's round trip), so a resumed run keeps the timings of
earlier sessions. Each process session's first 5 images are its warm-up. End to end additionally
covers reading the file, decoding and resizing, and turning detections into COCO results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

WARMUP_IMAGES = 5  # per process session
BENCHMARK_IMAGES = 2000  # images with an annotation-file index below this are timed


class WarmupCounter:
    """Marks the first :data:`WARMUP_IMAGES` images a process handles as warm-up."""

    def __init__(self, warmup: int = WARMUP_IMAGES) -> None:
        self._left = warmup

    def next_is_warmup(self) -> bool:
        warmup = self._left > 0
        self._left = max(0, self._left - 1)
        return warmup


@dataclass(frozen=True)
class ImageTiming:
    index: int  # position in the annotation file's image list
    model_s: float | None  # seconds of Detector.infer on the prepared image (synchronised); None: not reported
    end_to_end_s: float  # seconds from reading the file to COCO results
    warmup: bool


@dataclass(frozen=True)
class SpeedSummary:
    fps: float | None  # images / second of the model stage (None: no timed image)
    fps_end_to_end: float | None
    timed_images: int


def summarize_speed(timings: Iterable[ImageTiming]) -> SpeedSummary:
    """fps over the non-warm-up images among the first :data:`BENCHMARK_IMAGES` (model fps: None
    when an image has no model time, as from an endpoint that does not report one)."""
    timed_images = [t for t in timings if not t.warmup and t.index < BENCHMARK_IMAGES]
    if not timed_images:
        return SpeedSummary(fps=None, fps_end_to_end=None, timed_images=0)
    model_times = [t.model_s for t in timed_images if t.model_s is not None]
    model_s = sum(model_times) if len(model_times) == len(timed_images) else None
    end_to_end_s = sum(t.end_to_end_s for t in timed_images)
    return SpeedSummary(
        fps=len(timed_images) / model_s if model_s else None,
        fps_end_to_end=len(timed_images) / end_to_end_s if end_to_end_s > 0 else None,
        timed_images=len(timed_images),
    )
