"""A local model's time and memory per image, taken as mmdet took them (see :mod:`.speed`).

The model time is :meth:`Detector.infer` on one prepared image between device synchronisations.
Peak memory is *inference* memory: ``torch.cuda.max_memory_allocated`` on CUDA (what mmdet
reports, in MB of 2**20 bytes), the process's peak resident set size on CPU.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Callable, TypeVar

import torch

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
