"""Speed summary (mmdet's warm-up and 2000-image window) and peak-memory measurement."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from model_zoo.evaluation.speed import ImageTiming, WarmupCounter, summarize_speed
from model_zoo.evaluation.timing import timed

CPU = torch.device("cpu")


def test_first_five_images_of_a_session_are_warmup() -> None:
    counter = WarmupCounter()
    assert [counter.next_is_warmup() for _ in range(8)] == [True] * 5 + [False] * 3


def test_fps_counts_timed_images_below_2000_only() -> None:
    timings = [ImageTiming(i, 9.0, 9.0, warmup=True) for i in range(5)]  # warm-up: excluded
    timings += [ImageTiming(i, 0.05, 0.2, warmup=False) for i in range(5, 2000)]  # 1995 timed
    timings += [ImageTiming(i, 9.0, 9.0, warmup=False) for i in range(2000, 2010)]  # past the window
    summary = summarize_speed(timings)
    assert summary.timed_images == 1995
    assert summary.fps == pytest.approx(1995 / (1995 * 0.05))  # 20 images/s
    assert summary.fps_end_to_end == pytest.approx(5.0)


def test_resumed_sessions_each_warm_up() -> None:
    """Two sessions of 7 images: 2 timed images each, whatever their index."""
    timings = [ImageTiming(i, 0.1 if i < 7 else 0.3, 1.0, warmup=(i % 7) < 5) for i in range(14)]
    summary = summarize_speed(timings)
    assert summary.timed_images == 4
    assert summary.fps == pytest.approx(4 / (0.1 + 0.1 + 0.3 + 0.3))


def test_no_timed_image_gives_no_fps() -> None:
    summary = summarize_speed([ImageTiming(i, 0.1, 0.1, warmup=True) for i in range(3)])
    assert (summary.fps, summary.fps_end_to_end, summary.timed_images) == (None, None, 0)


def test_timed_measures_the_step() -> None:
    result, seconds = timed(CPU, lambda: time.sleep(0.05) or 7)
    assert result == 7
    assert 0.05 <= seconds < 1.0


def test_cpu_peak_memory_follows_an_allocation_and_resets() -> None:
    # In a fresh process: in this one, memory freed by earlier tests may be reused without
    # raising the resident size, which would hide the allocation.
    script = """
import numpy as np
from model_zoo.evaluation.timing import peak_memory_mb, reset_peak_memory
import torch
cpu = torch.device("cpu")
reset_peak_memory(cpu)
before = peak_memory_mb(cpu)
block = np.ones(256 * 1024 * 1024 // 8)  # 256 MB, touched
during = peak_memory_mb(cpu)
del block
reset_peak_memory(cpu)
after = peak_memory_mb(cpu)
print(before, during, after)
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    before, during, after = (float(v) for v in completed.stdout.split())
    assert during - before > 200
    assert after < during - 200  # the high-water mark was reset (Linux)
