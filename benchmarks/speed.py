"""Seconds per image of our detectors, side by side with torchvision's plain Faster R-CNN and
mmdet, in one run on one fixed image set; appends a dated entry to ``BENCHMARKS.md``.

Two timings per model and image, each the median of ``--repeats`` calls after ``--warmup``:

- end to end: encoded image bytes → detections (``Detector.predict``; torchvision: the same
  OpenCV decode + ``model([tensor])``; mmdet: the whole ``inference_detector(model, path)``);
- model: from a decoded, resized image to detections (``Detector.infer`` on a prepared image:
  normalise, pad, forward, post-process; torchvision: ``model([tensor])`` on the decoded tensor,
  whose transform still resizes; mmdet: ``model.test_step`` on the pipeline's output).

The models are interleaved: every repeat times each model once, in a rotating order, so a change
of load from other processes hits all of them alike and the ratios stay meaningful on a shared
machine. mmdet runs in the reference venv (``--mmdet-python``) as a worker process that loads
the very same synthetic checkpoint files (``model_zoo.synth``) and answers one timed call per
request; torchvision gets random weights. A model's seconds/image is the mean over images of
its medians. With ``--precision`` listing ``bf16`` the table also gives the speed-up over fp32
and the share of the fp32 detections reproduced (same label, IoU ≥ 0.99, |Δscore| ≤ 2e-3:
``tools/parity.py``'s matcher).

``--before PATH`` also times the engine of another checkout (for example the commit before a
refactor: ``git worktree add /tmp/engine-before <commit>``) in the same run, interleaved with the
rest: a worker process imports ``model_zoo`` from PATH and loads the very same checkpoint files.
Its rows are ``before <variant>``; our rows then get the ratio to them (``÷ before``).

Usage: python benchmarks/speed.py [--variants attn1111,attn0010] [--scale 1333,800] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

common.add_repo_to_path()

SCRIPT = Path(__file__).resolve()
VARIANTS = ("attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn")
IMAGES = common.REPO_ROOT / "tests" / "fixtures" / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TORCHVISION = "torchvision fasterrcnn_resnet50_fpn"


@dataclass(frozen=True)
class BenchImage:
    name: str
    path: Path  # mmdet reads the file itself
    data: bytes  # encoded bytes: what our end-to-end timing decodes


@dataclass
class ModelTiming:
    """One row of the table: a model at one precision over the image set."""

    model: str
    precision: str = "fp32"
    per_image: list[dict[str, Any]] = field(default_factory=list)  # image, e2e_s, model_s, *_times, detections
    reproduced: tuple[int, int, int] | None = None  # (matched, fp32 detections, extra) for bf16
    error: str | None = None  # why this model could not be timed (the other rows still are)

    def _mean(self, key: str) -> float | None:
        return sum(r[key] for r in self.per_image) / len(self.per_image) if self.per_image and not self.error else None

    @property
    def e2e_s(self) -> float | None:
        return self._mean("e2e_s")

    @property
    def model_s(self) -> float | None:
        return self._mean("model_s")

    @property
    def detections(self) -> float | None:
        return self._mean("detections")

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "precision": self.precision, "e2e_s": self.e2e_s, "model_s": self.model_s,
               "detections_per_image": self.detections, "per_image": self.per_image, "error": self.error}  # fmt: skip
        if self.reproduced is not None:
            matched, total, extra = self.reproduced
            out["fp32_reproduced"] = {"matched": matched, "fp32_detections": total, "extra": extra,
                                      "share": matched / total if total else 1.0}  # fmt: skip
        return out


def image_record(name: str, e2e: Sequence[float], model: Sequence[float], detections: int) -> dict[str, Any]:
    return {"image": name, "e2e_s": common.median(e2e), "model_s": common.median(model),
            "e2e_times": list(e2e), "model_times": list(model), "detections": detections}  # fmt: skip


def error_text(error: BaseException) -> str:
    """``Type: last line of the message`` (one table cell: no newlines, no ``|``)."""
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[-1][:200]}".replace("|", "/")


def clock(fn: Callable[[], Any], sync: Callable[[], None] | None) -> tuple[float, Any]:
    """(wall-clock seconds, value) of one ``fn()``; waits for the device when ``sync`` is given."""
    started = time.perf_counter()
    value = fn()
    if sync:
        sync()
    return time.perf_counter() - started, value


# --- the image set ------------------------------------------------------------------------------


def load_images(sources: Sequence[Path], limit: int | None, work_dir: Path) -> list[BenchImage]:
    """The image files named in ``sources`` (files, or folders: their images sorted by name), at
    most ``limit``; three generated scenes when there are none."""
    paths: list[Path] = []
    for source in sources:
        if source.is_dir():
            paths += sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file():
            paths.append(source)
        else:
            raise ValueError(f"--images: {str(source)!r} is neither an image file nor a folder")
    if not paths:
        import cv2

        from model_zoo.synth import calibration_image

        for seed in range(3):
            path = work_dir / f"synthetic_scene_{seed}.jpg"
            cv2.imwrite(str(path), calibration_image(seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
            paths.append(path)
    paths = paths[:limit] if limit else paths
    return [BenchImage(p.name, p, p.read_bytes()) for p in paths]


# --- the contestants: one timed call each --------------------------------------------------------


class Contestant(Protocol):
    row: ModelTiming

    def end_to_end(self, image: BenchImage) -> tuple[float, int]:
        """(seconds, detections) of one encoded-bytes → detections call."""

    def model_only(self, image: BenchImage) -> float:
        """Seconds of one call from the prepared image (prepared once, untimed)."""


class Ours:
    """One of our variants at one precision, through the public ``Detector`` API."""

    def __init__(self, detector, row: ModelTiming, sync: Callable[[], None] | None) -> None:
        self.detector, self.row, self.sync = detector, row, sync
        self.prepared: dict[str, Any] = {}
        self.last: dict[str, Any] = {}  # image name → the latest DetectionResult

    def end_to_end(self, image: BenchImage) -> tuple[float, int]:
        seconds, result = clock(lambda: self.detector.predict(image.data), self.sync)
        self.last[image.name] = result
        return seconds, len(result.detections)

    def model_only(self, image: BenchImage) -> float:
        if image.name not in self.prepared:
            self.prepared[image.name] = self.detector.prepare(image.data)
        return clock(lambda: self.detector.infer([self.prepared[image.name]]), self.sync)[0]


class Torchvision:
    """torchvision's plain Faster R-CNN R50-FPN (random weights) resizing to the same scale."""

    def __init__(self, scale: tuple[int, int], device: str, seed: int) -> None:
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        torch.manual_seed(seed)
        model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=scale[1], max_size=scale[0])
        self.model, self.device = model.eval().to(device), device
        self.row, self.sync = ModelTiming(TORCHVISION), common.cuda_sync(device)
        self.tensors: dict[str, torch.Tensor] = {}

    def to_tensor(self, data: bytes) -> torch.Tensor:
        """Encoded bytes → RGB float (3, H, W) in [0, 1], decoded with the same OpenCV call as ours."""
        from model_zoo.images import load_image

        bgr = load_image(data)
        return torch.from_numpy(bgr[:, :, ::-1].copy()).to(self.device).permute(2, 0, 1).float().div_(255)

    @torch.inference_mode()
    def forward(self, tensor: torch.Tensor) -> int:
        return int(self.model([tensor])[0]["boxes"].shape[0])

    def end_to_end(self, image: BenchImage) -> tuple[float, int]:
        return clock(lambda: self.forward(self.to_tensor(image.data)), self.sync)

    def model_only(self, image: BenchImage) -> float:
        if image.name not in self.tensors:
            self.tensors[image.name] = self.to_tensor(image.data)
        return clock(lambda: self.forward(self.tensors[image.name]), self.sync)[0]


class Worker:
    """This script running in ``mode`` (``mmdet-worker`` in the reference venv, ``engine-worker``
    on another checkout) as a subprocess: one JSON line per request, one per reply."""

    def __init__(self, python: Path | str, mode: str, spec: dict[str, Any], work_dir: Path) -> None:
        spec_path = work_dir / f"{mode}.json"
        spec_path.write_text(json.dumps(spec))
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the worker's lifetime; closed in close()
        self.process = subprocess.Popen([str(python), str(SCRIPT), mode, str(spec_path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True)  # fmt: skip
        self.request({"op": "ready"})

    def request(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.stderr.seek(0)
            tail = " / ".join(self.stderr.read().strip().splitlines()[-3:])
            raise RuntimeError(f"worker exited ({self.process.poll()}): {tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.stderr.close()


class Remote:
    """One variant held by a worker (mmdet, or our engine of another checkout), timed inside the
    worker: the pipe round trip is not counted."""

    def __init__(self, worker: Worker, alias: str, row: ModelTiming) -> None:
        self.worker, self.alias, self.row = worker, alias, row

    def end_to_end(self, image: BenchImage) -> tuple[float, int]:
        reply = self.worker.request({"op": "e2e", "variant": self.alias, "image": str(image.path)})
        return reply["seconds"], reply["detections"]

    def model_only(self, image: BenchImage) -> float:
        return self.worker.request({"op": "model", "variant": self.alias, "image": str(image.path)})["seconds"]


def apply_malloc(mode: str) -> str:
    """``--malloc keep``: ``model_zoo.keep_freed_memory`` in this process (as the service and CLI
    run); ``default``: the C library as it is. Returns the entry's note."""
    from model_zoo.runtime import keep_freed_memory

    if mode == "keep":
        return "glibc keeps freed memory (model_zoo.keep_freed_memory), every contestant" if keep_freed_memory() else "default (not glibc)"
    return "default glibc behaviour"


def serve_requests(protocol, timed: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Answer stdin requests (``ready``, ``quit``, or one timed call) with one JSON line each."""
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["op"] == "quit":
                break
            reply = {"ready": True} if command["op"] == "ready" else timed(command)
        except Exception as error:  # noqa: BLE001 - sent back, reported as that model's failure
            reply = {"error": error_text(error)}
        protocol.write(json.dumps(reply) + "\n")


def engine_worker(spec_path: Path) -> int:
    """Runs on another checkout's ``model_zoo`` (``spec["root"]``): load every variant the way
    :func:`our_detector` does, then time one call per stdin request."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    spec = json.loads(Path(spec_path).read_text())
    sys.path.insert(0, spec["root"])  # before this repo: its model_zoo and tools are imported
    apply_malloc(spec["malloc"])
    torch.set_num_threads(spec["threads"])
    registry, sync = scaled_registry(tuple(spec["scale"])), common.cuda_sync(spec["device"])
    detectors = {alias: our_detector(alias, Path(path), registry, spec["device"], spec["precision"])
                 for alias, path in spec["checkpoints"].items()}  # fmt: skip
    prepared: dict[tuple[str, str], Any] = {}

    def timed(command: dict[str, Any]) -> dict[str, Any]:
        detector, data = detectors[command["variant"]], Path(command["image"]).read_bytes()
        if command["op"] == "e2e":
            seconds, result = clock(partial(detector.predict, data), sync)
            return {"seconds": seconds, "detections": len(result.detections)}
        key = (command["variant"], command["image"])
        if key not in prepared:
            prepared[key] = detector.prepare(data)
        return {"seconds": clock(partial(detector.infer, [prepared[key]]), sync)[0]}

    serve_requests(protocol, timed)
    return 0


def mmdet_worker(spec_path: Path) -> int:
    """Runs inside the reference venv: load every variant, then time one call per stdin request."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # mmdet/mmengine print to stdout: keep the protocol stream clean
    from mmdet.apis import inference_detector
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import Compose

    from model_zoo.registry import load_registry
    from tools.parity import mmdet_model

    spec = json.loads(Path(spec_path).read_text())
    apply_malloc(spec["malloc"])
    torch.set_num_threads(spec["threads"])
    registry, sync = load_registry(), common.cuda_sync(spec["device"])
    models = {alias: mmdet_model(registry.resolve(alias), tuple(spec["scale"]), Path(path)).to(spec["device"])
              for alias, path in spec["checkpoints"].items()}  # fmt: skip
    batches: dict[tuple[str, str], dict[str, Any]] = {}

    def prepared(alias: str, path: str) -> dict[str, Any]:
        if (alias, path) not in batches:
            data = Compose(get_test_pipeline_cfg(models[alias].cfg.copy()))({"img_path": path, "img_id": 0})
            batches[alias, path] = {"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}
        return batches[alias, path]

    def test_step(alias: str, path: str) -> None:
        with torch.no_grad():
            models[alias].test_step(prepared(alias, path))

    def timed(command: dict[str, Any]) -> dict[str, Any]:
        if command["op"] == "e2e":
            seconds, sample = clock(partial(inference_detector, models[command["variant"]], command["image"]), sync)
            return {"seconds": seconds, "detections": len(sample.pred_instances)}
        prepared(command["variant"], command["image"])
        return {"seconds": clock(partial(test_step, command["variant"], command["image"]), sync)[0]}

    serve_requests(protocol, timed)
    return 0


# --- building and timing ---------------------------------------------------------------------------


def scaled_registry(scale: tuple[int, int]):
    """The bundled registry with every entry's test-time keep-ratio scale set to ``scale``."""
    from model_zoo.registry import load_registry
    from tools.parity import with_scale

    registry = load_registry()
    return dataclasses.replace(registry, entries=tuple(with_scale(entry, scale) for entry in registry))


def precision_kwargs(precision: str) -> dict[str, str]:
    """``load_detector`` keyword for ``precision``; an error if the engine does not offer it."""
    from model_zoo import predictor

    if "precision" not in inspect.signature(predictor.load_detector).parameters:
        if precision != "fp32":
            raise ValueError(f"--precision {precision}: this engine's load_detector() has no 'precision' option")
        return {}
    valid = list(getattr(predictor, "PRECISIONS", ["fp32"]))
    if precision not in valid:
        raise ValueError(f"unknown --precision {precision!r}; this engine offers {valid}")
    return {"precision": precision}


def our_detector(alias: str, checkpoint: Path, registry, device: str, precision: str):
    from model_zoo.predictor import load_detector

    return load_detector(alias, checkpoint, registry=registry, device=device, verify_hash=False, **precision_kwargs(precision))


def time_interleaved(contestants: Sequence[Contestant], images: Sequence[BenchImage], repeats: int, warmup: int,
                     log: Callable[[str], None] = print) -> None:  # fmt: skip
    """Fill each contestant's row, image by image (see :func:`time_image`)."""
    for index, image in enumerate(images, 1):
        active = [c for c in contestants if not c.row.error]
        time_image(active, image, repeats, warmup, log)
        log(f"image {index}/{len(images)} {image.name}: " + ", ".join(
            f"{c.row.model} {c.row.precision} {c.row.per_image[-1]['e2e_s']:.2f} s" for c in active if not c.row.error))  # fmt: skip


def time_image(active: Sequence[Contestant], image: BenchImage, repeats: int, warmup: int, log: Callable[[str], None]) -> None:
    """``warmup`` untimed calls each, then ``repeats`` rounds of one call per contestant in a
    rotating order (end to end, then model only); appends one record to each row. A contestant
    that raises gets its row's ``error`` and is skipped from then on."""
    e2e: dict[int, list[float]] = {id(c): [] for c in active}
    model: dict[int, list[float]] = {id(c): [] for c in active}
    found: dict[int, int] = {}

    def call(contestant: Contestant, what: str, record: bool = True) -> None:
        if contestant.row.error:
            return
        try:
            if what == "e2e":
                seconds, found[id(contestant)] = contestant.end_to_end(image)
            else:
                seconds = contestant.model_only(image)
        except Exception as error:  # noqa: BLE001 - reported in the table and the exit status
            contestant.row.error = error_text(error)
            log(f"  {contestant.row.model} {contestant.row.precision}: FAILED {contestant.row.error}")
            return
        if record:
            (e2e if what == "e2e" else model)[id(contestant)].append(seconds)

    for contestant in active:
        for _ in range(warmup):
            call(contestant, "e2e", record=False)
    for what in ("e2e", "model"):
        for round_ in range(repeats):
            shift = round_ % len(active)
            for contestant in [*active[shift:], *active[:shift]]:
                call(contestant, what)
    for contestant in active:
        if not contestant.row.error:
            key = id(contestant)
            contestant.row.per_image.append(image_record(image.name, e2e[key], model[key], found[key]))


def reproduced(reference: dict[str, Any], candidate: dict[str, Any]) -> tuple[int, int, int]:
    """(matched, reference detections, unmatched candidate detections) summed over images."""
    from tools.parity import match_detections

    matched = total = extra = 0
    for name, ref in reference.items():
        ours = candidate[name].detections
        match = match_detections(
            [d.bbox for d in ref.detections], [d.score for d in ref.detections], [d.label for d in ref.detections],
            [d.bbox for d in ours], [d.score for d in ours], [d.label for d in ours],
        )  # fmt: skip
        matched, total, extra = matched + match.matched, total + match.reference, extra + len(match.unmatched_ours)
    return matched, total, extra


def build(args: argparse.Namespace, work_dir: Path, stack: list[Callable[[], None]]) -> tuple[list[Contestant], dict[str, Path]]:
    """Every contestant in table order (torchvision, then per variant ours and mmdet; one that
    cannot be built is a failed row) and the synthetic checkpoint of each variant. Cleanup
    callbacks go to ``stack``."""
    from model_zoo.synth import write_synthetic_checkpoint

    registry = scaled_registry(args.scale)
    contestants: list[Contestant] = []
    if not args.no_torchvision:
        contestants.append(Torchvision(args.scale, args.device, args.seed))
    checkpoints = {a: write_synthetic_checkpoint(registry.resolve(a), work_dir / f"{a}_seed{args.seed}.pth", seed=args.seed) for a in args.variants}
    spec = {"checkpoints": {a: str(p) for a, p in checkpoints.items()}, "scale": list(args.scale),
             "threads": args.threads, "device": args.device, "malloc": args.malloc}  # fmt: skip
    remote: dict[str, Callable[[str, str], Contestant]] = {}  # row prefix → (alias, precision) → contestant
    if args.before is not None:
        for precision in args.precision:
            remote[f"before/{precision}"] = start_worker(sys.executable, "engine-worker", {**spec, "root": str(args.before), "precision": precision},
                                                         work_dir, stack, "before", precision)  # fmt: skip
    if args.mmdet_python is not None:
        remote["mmdet"] = start_worker(args.mmdet_python, "mmdet-worker", spec, work_dir, stack, "mmdet", "fp32")
    for alias in args.variants:
        for precision in args.precision:
            row = ModelTiming(alias, precision)
            try:
                contestants.append(Ours(our_detector(alias, checkpoints[alias], registry, args.device, precision), row, common.cuda_sync(args.device)))
            except Exception as error:  # noqa: BLE001
                contestants.append(_Failed(dataclasses.replace(row, error=error_text(error))))
            if f"before/{precision}" in remote:
                contestants.append(remote[f"before/{precision}"](alias))
        if "mmdet" in remote:
            contestants.append(remote["mmdet"](alias))
    return contestants, checkpoints


def start_worker(python: Path | str, mode: str, spec: dict[str, Any], work_dir: Path, stack: list[Callable[[], None]],
                 prefix: str, precision: str) -> Callable[[str], Contestant]:  # fmt: skip
    """Start one worker; returns the contestant factory for its variants (failed rows if it did not start)."""
    try:
        worker = Worker(python, mode, spec, work_dir)
        stack.append(worker.close)
    except Exception as error:  # noqa: BLE001 - every row of that worker reports it
        message = error_text(error)
        return lambda alias: _Failed(ModelTiming(f"{prefix} {alias}", precision, error=message))
    return lambda alias: Remote(worker, alias, ModelTiming(f"{prefix} {alias}", precision))


@dataclass
class _Failed:
    """A contestant that could not even be built: only its row, with the error; never called."""

    row: ModelTiming

    def end_to_end(self, image: BenchImage) -> tuple[float, int]:
        raise RuntimeError(self.row.error)

    def model_only(self, image: BenchImage) -> float:
        raise RuntimeError(self.row.error)


def run(args: argparse.Namespace, work_dir: Path) -> tuple[list[BenchImage], list[ModelTiming]]:
    """The image set and every row, in table order."""
    images = load_images(args.images, args.num_images, work_dir)
    cleanup: list[Callable[[], None]] = []
    try:
        contestants, checkpoints = build(args, work_dir, cleanup)
        time_interleaved(contestants, images, args.repeats, args.warmup)
    finally:
        for close in cleanup:
            close()
    ours = [c for c in contestants if isinstance(c, Ours) and not c.row.error]
    for contestant in ours:
        if contestant.row.precision == "fp32":
            continue
        fp32 = next((c for c in ours if c.row.model == contestant.row.model and c.row.precision == "fp32"), None)
        if fp32 is None:  # fp32 not timed: its detections, untimed
            detector = our_detector(contestant.row.model, checkpoints[contestant.row.model], scaled_registry(args.scale), args.device, "fp32")
            reference = {image.name: detector.predict(image.data) for image in images}
        else:
            reference = fp32.last
        contestant.row.reproduced = reproduced(reference, contestant.last)
    return images, [c.row for c in contestants]


# --- the report --------------------------------------------------------------------------------


def ratio(value: float | None, base: ModelTiming | None, attr: str) -> str:
    denominator = None if base is None else getattr(base, attr)
    return "–" if value is None or not denominator else f"{value / denominator:.2f}×"


def results_table(rows: Sequence[ModelTiming]) -> str:
    """Markdown table: seconds/image, ratios to torchvision and to mmdet's same variant, for
    reduced precision its end-to-end speed-up over fp32 and the fp32 detections it reproduces, and
    with ``--before`` the ratio to the other checkout's same variant and precision."""
    torchvision = next((r for r in rows if r.model == TORCHVISION), None)
    mmdet = {r.model.removeprefix("mmdet "): r for r in rows if r.model.startswith("mmdet ")}
    before = {(r.model.removeprefix("before "), r.precision): r for r in rows if r.model.startswith("before ")}
    fp32 = {r.model: r for r in rows if r.precision == "fp32"}
    table = []
    for row in rows:
        if row.error:
            table.append([row.model, row.precision, f"failed: {row.error}"] + ["–"] * 10)
            continue
        ref = mmdet.get(row.model) if not row.model.startswith("mmdet ") else None
        earlier = before.get((row.model, row.precision))
        speedup = share = "–"
        if row.precision != "fp32" and row.model in fp32:
            speedup = ratio(fp32[row.model].e2e_s, row, "e2e_s")
        if row.reproduced is not None:
            matched, total, extra = row.reproduced
            share = f"{matched}/{total} ({100 * matched / total if total else 100:.1f}%)" + (f", +{extra} extra" if extra else "")
        table.append([
            row.model, row.precision, common.fmt(row.e2e_s), common.fmt(row.model_s),
            ratio(row.e2e_s, torchvision, "e2e_s"), ratio(row.model_s, torchvision, "model_s"),
            ratio(row.e2e_s, ref, "e2e_s"), ratio(row.model_s, ref, "model_s"), common.fmt(row.detections, 1), speedup, share,
            ratio(row.e2e_s, earlier, "e2e_s"), ratio(row.model_s, earlier, "model_s"),
        ])  # fmt: skip
    headers = ["model", "precision", "end-to-end s/img", "model s/img", "e2e ÷ torchvision", "model ÷ torchvision",
               "e2e ÷ mmdet", "model ÷ mmdet", "dets/img", "speed-up vs fp32 (e2e)", "fp32 dets reproduced",
               "e2e ÷ before", "model ÷ before"]  # fmt: skip
    return common.markdown_table(headers, table)


def entry_text(args, argv: Sequence[str], rows: Sequence[ModelTiming], images: Sequence[BenchImage], machine: dict[str, Any]) -> str:
    head = common.entry_header("speed (benchmarks/speed.py)", common.command_line("benchmarks/speed.py", argv), machine,
                               common.software_versions(), args.threads)  # fmt: skip
    return head + (
        f"- Setting: scale {args.scale[0]}×{args.scale[1]} (long×short), device {args.device}, {len(images)} images "
        f"({', '.join(i.name for i in images)}), median of {args.repeats} after {args.warmup} warm-up per image, "
        f"models interleaved call by call, mean over images; synthetic weights seed {args.seed}; mmdet: {args.mmdet_note}; "
        f"malloc: {args.malloc_note}"
        + (f"; before: the engine of {args.before_note}, in a worker process" if args.before else "") + "\n"
        + common.load_note(machine) + "\n" + results_table(rows)
    )


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated aliases (default: all four)")
    parser.add_argument("--scale", default="1333,800", help="test-time keep-ratio scale LONG,SHORT (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per image and model (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per image before timing")
    parser.add_argument("--threads", type=int, default=common.default_threads(), help="torch threads (default: all cores, %(default)s)")
    parser.add_argument("--precision", default="fp32", help="comma-separated, e.g. fp32,bf16 (as the engine's load_detector(precision=...) offers)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument(
        "--malloc", choices=("keep", "default"), default="keep",
        help="keep: glibc keeps freed memory, as `attnzoo serve` runs (every contestant, mmdet included); default: as the C library is",
    )  # fmt: skip
    parser.add_argument("--images", type=Path, nargs="+", default=[IMAGES],
                        help=f"image files and/or folders (default: {IMAGES.relative_to(common.REPO_ROOT)}; no images → generated scenes)")  # fmt: skip
    parser.add_argument("--num-images", type=int, default=None, help="use only the first N images")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-weights seed")
    parser.add_argument("--mmdet-python", default=None, help=f"reference interpreter (default: {common.DEFAULT_REFERENCE_PYTHON} if it imports mmdet)")
    parser.add_argument("--no-mmdet", dest="mmdet_python", action="store_const", const="", help="skip mmdet")
    parser.add_argument("--no-torchvision", action="store_true", help="skip torchvision")
    parser.add_argument("--before", type=Path, default=None,
                        help="also time the engine of this checkout (e.g. `git worktree add /tmp/engine-before e154511`), rows `before <variant>`")  # fmt: skip
    common.add_output_arguments(parser)
    return parser


def checkout_note(root: Path) -> str:
    """``PATH (commit abc1234)`` for a checkout with an engine; ValueError if it has none."""
    if not (root / "model_zoo" / "predictor.py").is_file():
        raise ValueError(f"--before: {str(root)!r} has no model_zoo/predictor.py")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return f"{root} (commit {head.stdout.strip()})" if head.returncode == 0 else str(root)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.scale = common.parse_scale(args.scale)
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        args.precision = [p.strip() for p in args.precision.split(",") if p.strip()]
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown or not args.variants or not args.precision:
            raise ValueError(f"unknown or empty --variants/--precision {unknown}; variants: {list(VARIANTS)}")
        if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
            raise ValueError("--repeats and --threads must be >= 1, --warmup >= 0")
        missing = [str(p) for p in args.images if not p.exists()]
        if missing:
            raise ValueError(f"--images: {missing} not found")
        for precision in args.precision:
            precision_kwargs(precision)
        args.mmdet_python, args.mmdet_note = common.reference_python(args.mmdet_python, "mmdet")
        args.before_note = checkout_note(args.before) if args.before is not None else None
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mmdet-worker"]:
        return mmdet_worker(Path(argv[1]))
    if argv[:1] == ["engine-worker"]:
        return engine_worker(Path(argv[1]))
    args = parse_args(argv)
    args.malloc_note = apply_malloc(args.malloc)
    torch.set_num_threads(args.threads)
    machine = common.machine_info()
    with tempfile.TemporaryDirectory(prefix="attnzoo-speed-") as tmp:
        images, rows = run(args, Path(tmp))
    text = entry_text(args, argv, rows, images, machine)
    common.publish(text, args, {"machine": machine, "threads": args.threads, "scale": list(args.scale), "rows": [r.to_dict() for r in rows]})
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
