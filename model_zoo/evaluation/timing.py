"""Speed and memory, measured the way mmdet measured the published table.

mmdet's benchmark (``tools/benchmark.py`` / ``InferenceBenchmark``): batch 1, images in
annotation-file order, the first 5 iterations are warm-up, each timed iteration runs from
``torch.cuda.synchronize()`` to ``torch.cuda.synchronize()`` around normalise + pad + forward +
post-process (decode and resize excluded), stop after 2000 images; fps = timed images / seconds.

We time the same span, :meth:`Detector.infer` on one prepared image, per image during the
accuracy pass and log it, so a resumed run keeps the timings of earlier sessions. Each process
session's first 5 images are its warm-up. End to end additionally covers reading the file,
decoding and resizing, and turning detections into COCO results.

Peak memory is *inference* memory: ``torch.cuda.max_memory_allocated`` on CUDA (what mmdet
reports, in MB of 2**20 bytes), the process's peak resident set size on CPU.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import torch

WARMUP_IMAGES = 5  # per process session
BENCHMARK_IMAGES = 2000  # images with an annotation-file index below this are timed
MB = 1024 * 1024

T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, step: Callable[[], T]) -> tuple[T, float]:
    """Run ``step`` between device synchronisations; returns (its result, seconds)."""
    synchronize(device)
    start = time.perf_counter()
    result = step()
    synchronize(device)
    return result, time.perf_counter() - start


def memory_kind(device: torch.device) -> str:
    """What :func:`peak_memory_mb` measures on ``device``."""
    return "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss"


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's peak statistics, or (Linux) the process's RSS high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0, see proc(5))
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # no reset possible: the peak stays the process's lifetime peak


def peak_memory_mb(device: torch.device) -> float:
    """Peak inference memory since :func:`reset_peak_memory`, in MB (2**20 bytes)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MB
    high_water_kb = _proc_status_kb("VmHWM")
    if high_water_kb is not None:
        return high_water_kb / 1024
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss / MB if sys.platform == "darwin" else max_rss / 1024  # bytes on macOS, KiB elsewhere


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


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
