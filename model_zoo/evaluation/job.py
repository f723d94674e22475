"""The offline job behind ``attnzoo eval``: COCO val2017 accuracy, speed and memory per variant.

For each variant::

    load detector → infer every image not yet logged (batch 1), append its detections and
    timings to this rank's log → [all ranks done] → rank 0: merge the logs in annotation-file
    order → COCO results JSON → COCOeval → speed summary → one table row

and at the end rank 0 writes ``table.json``, ``table.md`` and the plot (see ``report``).

Layout of ``out_dir``: ``table.json``, ``table.md``, ``ap_vs_fps.png``, and per variant
``<variant>/log.rank<R>.jsonl`` (append-only, see ``detections_log``) and
``<variant>/detections.bbox.json`` (mmdet's results format).

With ``endpoint`` set, a live service runs the model instead (:mod:`.endpoint`): the images go
to it with bounded concurrency, and the logs, results and table are the same, with the endpoint
and the weights sha256 it reports recorded; fps then come from the server's reported model time
and the client's round trips, and no memory is measured.

Resume: a run that was killed and started again reads every log of the variant, skips the
images already there and continues; results equal those of one uninterrupted run.

Scale-out: under ``torchrun --nproc-per-node N`` (env RANK / WORLD_SIZE / LOCAL_RANK) each
rank takes every N-th image still to do and writes its own log; ranks meet at a barrier
(gloo on CPU, NCCL on CUDA, one GPU per rank) and rank 0 merges and evaluates.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from tqdm import tqdm

from model_zoo.errors import AttnzooError, WeightsMissingError
from model_zoo.predictor import Detector, load_detector, resolve_device
from model_zoo.registry import Registry, VariantEntry, existing_weights_path, load_registry

from .coco_data import CocoImage, CocoSplit, load_coco_split
from .coco_metrics import evaluate_bbox, load_ground_truth, to_coco_result
from .detections_log import DetectionsLog, merge_records, read_log
from .endpoint import EndpointRunner, open_transport
from .report import ReportPaths, make_row, write_report
from .timing import (
    ImageTiming,
    WarmupCounter,
    memory_kind,
    peak_memory_mb,
    reset_peak_memory,
    summarize_speed,
    timed,
)

RESULTS_FILE = "detections.bbox.json"
# Ranks wait for the slowest one at each variant's end; on CPU that can take hours.
BARRIER_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class EvalOptions:
    coco_root: Path
    variants: tuple[str, ...] = ()  # aliases or full names; empty: every registry entry
    limit: int | None = None  # first N images of the annotation file
    out_dir: Path = Path("results")
    device: str = "auto"  # auto | cpu | cuda
    cpu_kernels: str = "fast"  # fast | portable (ATTNZOO_CPU_KERNELS)
    metafile: Path | None = None
    weights_dir: Path | None = None
    progress: bool = True
    endpoint: str | None = None  # a live service's base URL: its answers replace the local model's
    endpoint_protocol: str = "attnzoo"  # attnzoo (POST /detect) | v2 (Open Inference Protocol)
    concurrency: int = 4  # requests in flight to the endpoint


@dataclass(frozen=True)
class EvalOutcome:
    """What rank 0 produced; other ranks get ``rows == []`` and ``report is None``."""

    rows: list[dict[str, Any]]
    report: ReportPaths | None


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int
    local_rank: int
    distributed: bool  # started by torchrun (a process group is used, even with one rank)

    @classmethod
    def from_env(cls) -> "Shard":
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls(rank=0, world_size=1, local_rank=0, distributed=False)
        return cls(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            distributed=True,
        )

    def take(self, images: Sequence[CocoImage]) -> list[CocoImage]:
        """This rank's share: every ``world_size``-th image from ``rank``."""
        return list(images[self.rank :: self.world_size])

    def barrier(self, device: torch.device) -> None:
        if not self.distributed:
            return
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index])  # NCCL: name this rank's GPU
        else:
            dist.barrier()


def run_eval(options: EvalOptions) -> EvalOutcome:
    """Run the job; see the module docstring. Raises AttnzooError subclasses for bad input
    (unknown variant, missing data or weights, an endpoint that does not serve a variant) before
    any image is run."""
    registry = load_registry(options.metafile)
    entries = registry.resolve_many(options.variants or None)
    split = load_coco_split(options.coco_root, options.limit)
    shard = Shard.from_env()
    if options.endpoint is None:
        _check_weights(entries, options.weights_dir)
        device = _rank_device(options.device, shard)
    else:
        device = torch.device("cpu")  # the model runs behind the endpoint; here only the barriers do
    rows: list[dict[str, Any]] = []
    with _process_group(shard, device):
        ground_truth = None
        for entry in entries:
            runner = _open_runner(entry, registry, options, device)
            try:
                header = _infer_variant(entry, split, runner, options, shard, device)
            finally:
                runner.close()
            shard.barrier(device)
            if shard.rank == 0:
                if ground_truth is None:
                    ground_truth = load_ground_truth(split.annotation_file)
                rows.append(_evaluate_variant(entry, header, runner.device_label, split, options, ground_truth, shard))
            shard.barrier(device)  # nobody starts the next variant's logs while rank 0 reads
    if shard.rank != 0:
        return EvalOutcome(rows=[], report=None)
    source = {
        "coco_root": str(split.root),
        "annotation_file": str(split.annotation_file),
        "images": len(split.images),
        "annotation_file_images": split.total_images,
        "endpoint": options.endpoint,
    }
    report = write_report(options.out_dir, rows, order=registry.aliases, source=source)
    return EvalOutcome(rows=rows, report=report)


def _check_weights(entries: Sequence[VariantEntry], weights_dir: Path | None) -> None:
    """Fail before hours of work if any checkpoint is absent, naming the fetch command."""
    problems = []
    for entry in entries:
        try:
            existing_weights_path(entry, weights_dir)
        except WeightsMissingError as exc:
            problems.append(str(exc))
    if problems:
        raise WeightsMissingError("; ".join(problems))


def _rank_device(requested: str, shard: Shard) -> torch.device:
    device = resolve_device(requested)
    if device.type == "cuda":
        device = torch.device("cuda", shard.local_rank if shard.distributed else (device.index or 0))
        torch.cuda.set_device(device)
    return device


@contextmanager
def _process_group(shard: Shard, device: torch.device) -> Iterator[None]:
    if not shard.distributed or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _log_paths(variant_dir: Path) -> list[Path]:
    return sorted(variant_dir.glob("log.rank*.jsonl"))


class LocalRunner:
    """The variant's detector in this process: batch 1, the model time between device
    synchronisations (mmdet's benchmark), peak inference memory."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.header = {"variant": detector.variant, "sha256": detector.sha256}
        self.device_label = _device_label(detector.device)

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


def _open_runner(
    entry: VariantEntry, registry: Registry, options: EvalOptions, device: torch.device
) -> LocalRunner | EndpointRunner:
    if options.endpoint is None:
        detector = load_detector(
            entry.alias,
            device=device,
            registry=registry,
            weights_dir=options.weights_dir,
            cpu_kernels=options.cpu_kernels,
        )
        return LocalRunner(detector)
    transport = open_transport(options.endpoint, options.endpoint_protocol)
    try:
        return EndpointRunner(transport, entry.alias, concurrency=options.concurrency)
    except BaseException:
        transport.close()
        raise


def _infer_variant(
    entry: VariantEntry,
    split: CocoSplit,
    runner: LocalRunner | EndpointRunner,
    options: EvalOptions,
    shard: Shard,
    device: torch.device,
) -> dict[str, Any]:
    """This rank's share of the images of ``split`` not yet in any log of the variant; returns
    the logs' header (variant, weights sha256 and, for an endpoint, its URL)."""
    variant_dir = options.out_dir / entry.alias
    header = runner.header
    with DetectionsLog.open(variant_dir / f"log.rank{shard.rank}.jsonl", header) as log:
        done = merge_records(read_log(path, header) for path in _log_paths(variant_dir))
        shard.barrier(device)  # every rank has the same `done` before anyone appends
        todo = shard.take([image for image in split.images if image.image_id not in done])
        finished = len(split.images) - len(todo) if shard.world_size == 1 else 0
        bar = tqdm(
            total=finished + len(todo),
            initial=finished,
            desc=entry.alias if shard.world_size == 1 else f"{entry.alias} rank 0/{shard.world_size}",
            unit="img",
            disable=not options.progress or shard.rank != 0,
            dynamic_ncols=True,
        )
        with bar:
            for record in runner.records(todo):
                log.append(record)
                bar.update(1)
    return header


def _evaluate_variant(
    entry: VariantEntry,
    header: dict[str, Any],
    device_label: str,
    split: CocoSplit,
    options: EvalOptions,
    ground_truth: Any,
    shard: Shard,
) -> dict[str, Any]:
    """Rank 0: merge the logs, write the results JSON, run COCOeval, summarise speed → a row."""
    variant_dir = options.out_dir / entry.alias
    records = merge_records(read_log(path, header) for path in _log_paths(variant_dir))
    missing = [image.image_id for image in split.images if image.image_id not in records]
    if missing:
        raise AttnzooError(
            f"{len(missing)} images have no logged detections (first id {missing[0]}); run again to finish"
        )
    ordered = [records[image.image_id] for image in split.images]
    results = [detection for record in ordered for detection in record["detections"]]
    _write_results(variant_dir / RESULTS_FILE, results)
    metrics = evaluate_bbox(ground_truth, results, split.image_ids)
    speed = summarize_speed(ImageTiming(r["index"], r["model_s"], r["end_to_end_s"], r["warmup"]) for r in ordered)
    measured = [r for r in ordered if r["peak_memory_mb"] is not None]
    peak = max(measured, key=lambda r: r["peak_memory_mb"]) if measured else ordered[0]
    return make_row(
        entry,
        ap=metrics.ap,
        images=len(split.images),
        fps=speed.fps,
        fps_end_to_end=speed.fps_end_to_end,
        timed_images=speed.timed_images,
        peak_memory_mb=peak["peak_memory_mb"],
        memory_kind=peak["memory_kind"],
        device=device_label,
        world_size=shard.world_size,
        checkpoint_sha256=header["sha256"],
        endpoint=header.get("endpoint"),
    )


def _write_results(path: Path, results: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results), encoding="utf-8")
    os.replace(tmp, path)


def _device_label(device: torch.device) -> str:
    """``cuda (<GPU name>)`` or ``cpu (<N> threads)``: what the fps figures were measured on."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
