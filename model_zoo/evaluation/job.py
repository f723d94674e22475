"""The offline job behind ``attnzoo eval``: COCO val2017 accuracy, speed and memory per variant.

For each variant::

    open its runner → run every image not yet logged (batch 1), append its detections and
    timings to this rank's log → [all ranks done] → rank 0: merge the logs in annotation-file
    order → COCO results JSON → COCOeval → speed summary → one table row

and at the end rank 0 writes ``table.json``, ``table.md`` and the plot (see ``report``).

Layout of ``out_dir``: ``table.json``, ``table.md``, ``ap_vs_fps.png``, and per variant
``<variant>/log.rank<R>.jsonl`` (append-only, see ``detections_log``) and
``<variant>/detections.bbox.json`` (mmdet's results format).

A runner is where the model runs. :class:`~.local_model.LocalRunner`: the variant's detector in
this process (its weights file, or with ``demo`` its stand-in where the file is missing), sharded
over processes by torchrun (:mod:`.sharding`). :class:`~.endpoint.EndpointRunner`: a live service
(``endpoint``), in one process with bounded concurrency and neither torch nor its process group;
the logs, results and table are the same, with the endpoint and the weights sha256 it reports
recorded; fps then come from the server's reported model time and the client's round trips, and
no memory is measured.

Resume: a run that was killed and started again reads every log of the variant, skips the
images already there and continues; results equal those of one uninterrupted run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from tqdm import tqdm

from model_zoo.atomic_files import write_atomic
from model_zoo.errors import AttnzooError
from model_zoo.registry import Registry, VariantEntry, load_registry

from .coco_data import CocoImage, CocoSplit, load_coco_split
from .coco_metrics import evaluate_bbox, load_ground_truth
from .detections_log import DetectionsLog, merge_records, read_log
from .endpoint import EndpointRunner
from .report import ReportPaths, make_row, write_report
from .sharding import ONE_PROCESS, Shard
from .speed import ImageTiming, summarize_speed

RESULTS_FILE = "detections.bbox.json"


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
    demo: bool = False  # stand-in weights where a variant's file is missing (local model only)
    progress: bool = True
    endpoint: str | None = None  # a live service's base URL: its answers replace the local model's
    endpoint_protocol: str = "attnzoo"  # attnzoo (POST /detect) | v2 (Open Inference Protocol)
    concurrency: int = 4  # requests in flight to the endpoint


@dataclass(frozen=True)
class EvalOutcome:
    """What rank 0 produced; other ranks get ``rows == []`` and ``report is None``."""

    rows: list[dict[str, Any]]
    report: ReportPaths | None


class Runner(Protocol):
    """Where one variant's model runs (``LocalRunner`` or ``EndpointRunner``)."""

    header: dict[str, Any]  # the detections log's header: variant, weights sha256 (and endpoint)
    device_label: str  # what the fps were measured on
    weights_source: str | None  # official | synthetic | custom (None: not reported)

    def records(self, images: Sequence[CocoImage]) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


def run_eval(options: EvalOptions) -> EvalOutcome:
    """Run the job; see the module docstring. Raises AttnzooError subclasses for bad input
    (unknown variant, missing data or weights, an endpoint that does not serve a variant) before
    any image is run."""
    registry = load_registry(options.metafile)
    entries = registry.resolve_many(options.variants or None)
    split = load_coco_split(options.coco_root, options.limit)
    shard = Shard.from_env()
    if options.endpoint is not None:
        rows = _run_on_endpoint(options.endpoint, entries, registry, split, options, shard)
    else:
        rows = _run_locally(entries, registry, split, options, shard)
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


def _run_on_endpoint(
    url: str, entries: Sequence[VariantEntry], registry: Registry, split: CocoSplit, options: EvalOptions, shard: Shard
) -> list[dict[str, Any]]:
    if options.demo:
        raise AttnzooError("--demo chooses a local model's weights; an endpoint serves its own (`attnzoo serve --demo`)")
    if shard.distributed:
        raise AttnzooError("--endpoint runs in one process (its parallelism is --concurrency): start it without torchrun")

    def open_runner(entry: VariantEntry) -> Runner:
        return EndpointRunner.open(url, options.endpoint_protocol, entry.alias, registry=registry, concurrency=options.concurrency)

    return _evaluate_variants(entries, split, options, ONE_PROCESS, lambda: None, open_runner)


def _run_locally(
    entries: Sequence[VariantEntry], registry: Registry, split: CocoSplit, options: EvalOptions, shard: Shard
) -> list[dict[str, Any]]:
    from . import local_model  # torch and torch.distributed, which an endpoint run does without

    paths = local_model.checkpoints(entries, options.weights_dir, demo=options.demo)
    device = local_model.rank_device(options.device, shard)

    def open_runner(entry: VariantEntry) -> Runner:
        return local_model.LocalRunner.load(entry, paths[entry.name], registry=registry, device=device, cpu_kernels=options.cpu_kernels)

    with local_model.process_group(shard, device) as barrier:
        return _evaluate_variants(entries, split, options, shard, barrier, open_runner)


def _evaluate_variants(
    entries: Sequence[VariantEntry],
    split: CocoSplit,
    options: EvalOptions,
    shard: Shard,
    barrier: Callable[[], None],
    open_runner: Callable[[VariantEntry], Runner],
) -> list[dict[str, Any]]:
    """Each variant in turn: this rank's images, then on rank 0 its row (other ranks: no rows)."""
    rows: list[dict[str, Any]] = []
    ground_truth = None
    for entry in entries:
        runner = open_runner(entry)
        try:
            _infer_variant(entry, split, runner, options, shard, barrier)
        finally:
            runner.close()
        barrier()
        if shard.rank == 0:
            if ground_truth is None:
                ground_truth = load_ground_truth(split.annotation_file)
            rows.append(_evaluate_variant(entry, runner, split, options, ground_truth, shard))
        barrier()  # nobody starts the next variant's logs while rank 0 reads
    return rows


def _log_paths(variant_dir: Path) -> list[Path]:
    return sorted(variant_dir.glob("log.rank*.jsonl"))


def _infer_variant(
    entry: VariantEntry, split: CocoSplit, runner: Runner, options: EvalOptions, shard: Shard, barrier: Callable[[], None]
) -> None:
    """This rank's share of the images of ``split`` not yet in any log of the variant."""
    variant_dir = options.out_dir / entry.alias
    header = runner.header
    with DetectionsLog.open(variant_dir / f"log.rank{shard.rank}.jsonl", header) as log:
        done = merge_records(read_log(path, header) for path in _log_paths(variant_dir))
        barrier()  # every rank has the same `done` before anyone appends
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


def _evaluate_variant(
    entry: VariantEntry, runner: Runner, split: CocoSplit, options: EvalOptions, ground_truth: Any, shard: Shard
) -> dict[str, Any]:
    """Rank 0: merge the logs, write the results JSON, run COCOeval, summarise speed → a row."""
    variant_dir = options.out_dir / entry.alias
    records = merge_records(read_log(path, runner.header) for path in _log_paths(variant_dir))
    missing = [image.image_id for image in split.images if image.image_id not in records]
    if missing:
        raise AttnzooError(
            f"{len(missing)} images have no logged detections (first id {missing[0]}); run again to finish"
        )
    ordered = [records[image.image_id] for image in split.images]
    results = [detection for record in ordered for detection in record["detections"]]
    write_atomic(variant_dir / RESULTS_FILE, json.dumps(results).encode("utf-8"))
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
        device=runner.device_label,
        world_size=shard.world_size,
        checkpoint_sha256=runner.header["sha256"],
        endpoint=runner.header.get("endpoint"),
        weights_source=runner.weights_source,
    )
