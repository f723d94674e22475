"""The local side of ``attnzoo eval``: each variant's detector in this process, one image at a time,
and torchrun's process group when the job is sharded over several processes.

Under ``torchrun --nproc-per-node N`` each rank runs on its own device (``cuda:LOCAL_RANK`` on
CUDA) and the ranks meet at barriers (gloo on CPU, NCCL on CUDA); see :mod:`.sharding` for which
images each rank takes.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from model_zoo.demo_weights import weights_or_stand_in, weights_source
from model_zoo.errors import WeightsMissingError
from model_zoo.predictor import Detector, load_detector, resolve_device
from model_zoo.registry import Registry, VariantEntry

from .coco_data import CocoImage
from .coco_metrics import to_coco_result
from .sharding import Shard
from .speed import WarmupCounter
from .timing import memory_kind, peak_memory_mb, reset_peak_memory, timed

# Ranks wait for the slowest one at each variant's end; on CPU that can take hours.
BARRIER_TIMEOUT = timedelta(hours=12)


def checkpoints(entries: Sequence[VariantEntry], weights_dir: str | os.PathLike[str] | None, *, demo: bool) -> dict[str, Path]:
    """Each variant's weights file by full name; with ``demo``, its stand-in where the file is
    missing (made now). Called before any image runs, so that a missing file fails the job at once.

    Raises:
        WeightsMissingError: naming every missing file and the fetch command.
    """
    paths: dict[str, Path] = {}
    problems = []
    for entry in entries:
        try:
            paths[entry.name] = weights_or_stand_in(entry, weights_dir, demo=demo)
        except WeightsMissingError as exc:
            problems.append(str(exc))
    if problems:
        raise WeightsMissingError("; ".join(problems))
    return paths


def rank_device(requested: str, shard: Shard) -> torch.device:
    """The device this process runs on: ``requested`` (auto | cpu | cuda), on CUDA its rank's GPU."""
    device = resolve_device(requested)
    if device.type == "cuda":
        device = torch.device("cuda", shard.local_rank if shard.distributed else (device.index or 0))
        torch.cuda.set_device(device)
    return device


@contextmanager
def process_group(shard: Shard, device: torch.device) -> Iterator[Callable[[], None]]:
    """Join torchrun's process group for the job; yields the barrier every rank meets at (outside
    torchrun, one that returns at once)."""
    if not shard.distributed:
        yield lambda: None
        return
    joined_here = not dist.is_initialized()
    if joined_here:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield functools.partial(_barrier, device)
    finally:
        if joined_here:
            dist.destroy_process_group()


def _barrier(device: torch.device) -> None:
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])  # NCCL: name this rank's GPU
    else:
        dist.barrier()


class LocalRunner:
    """The variant's detector in this process: batch 1, the model time between device
    synchronisations (mmdet's benchmark), peak inference memory."""

    def __init__(self, detector: Detector, *, weights_source: str) -> None:
        self.detector = detector
        self.header: dict[str, Any] = {"variant": detector.variant, "sha256": detector.sha256}
        self.device_label = device_label(detector.device)
        self.weights_source: str | None = weights_source

    @classmethod
    def load(cls, entry: VariantEntry, checkpoint: Path, *, registry: Registry, device: torch.device, cpu_kernels: str) -> LocalRunner:
        detector = load_detector(entry.alias, checkpoint, device=device, registry=registry, cpu_kernels=cpu_kernels)
        return cls(detector, weights_source=weights_source(entry, checkpoint, sha256=detector.sha256))

    def records(self, images: Sequence[CocoImage]) -> Iterator[dict[str, Any]]:
        """One detections-log record per image, in order, with its COCO results and timings."""
        detector, device = self.detector, self.detector.device
        warmup = WarmupCounter()
        reset_peak_memory(device)
        for image in images:
            start = time.perf_counter()
            prepared = detector.prepare(image.path)  # read + decode + resize: outside the model time
            results, model_s = timed(device, functools.partial(detector.infer, [prepared]))
            detections = [to_coco_result(image.image_id, detection) for detection in results[0].detections]
            yield {
                "image_id": image.image_id,
                "index": image.index,
                "detections": detections,
                "model_s": model_s,
                "end_to_end_s": time.perf_counter() - start,
                "warmup": warmup.next_is_warmup(),
                "peak_memory_mb": peak_memory_mb(device),
                "memory_kind": memory_kind(device),
            }

    def close(self) -> None:
        device = self.detector.device
        del self.detector
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def device_label(device: torch.device) -> str:
    """``cuda (<GPU name>)`` or ``cpu (<N> threads)``: what the fps figures were measured on."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
