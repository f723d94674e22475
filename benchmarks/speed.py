"""Seconds per image of our detectors, side by side with torchvision's plain Faster R-CNN and
mmdet, in one run on one fixed image set; appends a dated entry to ``BENCHMARKS.md``.

Two timings per model and image, each the median of ``--repeats`` calls after ``--warmup``:

- end to end: encoded image bytes → detections (``Detector.predict``; torchvision: the same
  OpenCV decode + ``model([tensor])``; mmdet: the whole ``inference_detector(model, path)``);
- model: from a decoded, resized image to detections (``Detector.infer`` on a prepared image:
  normalise, pad, forward, post-process; torchvision: ``model([tensor])`` on the decoded tensor,
  whose transform still resizes; mmdet: ``model.test_step`` on the pipeline's output).

A model's seconds/image is the mean over images of those medians. Our models use synthetic
weights (``model_zoo.synth``); mmdet loads the very same checkpoint file in the reference venv
(a separate interpreter, ``--mmdet-python``), torchvision random weights. With ``--precision``
listing ``bf16`` the table also gives the share of the fp32 detections the bf16 run reproduces
(same label, IoU ≥ 0.99, |Δscore| ≤ 2e-3: ``tools/parity.py``'s matcher).

Usage: python benchmarks/speed.py [--variants attn1111,attn0010] [--scale 1333,800] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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


# --- our detectors --------------------------------------------------------------------------------


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


def bench_ours(alias: str, checkpoint: Path, registry, images: Sequence[BenchImage], args, precision: str,
               keep: dict[str, Any] | None = None) -> ModelTiming:  # fmt: skip
    """Time one variant; ``keep`` (if given) receives each image's last DetectionResult."""
    from model_zoo.predictor import load_detector

    detector = load_detector(alias, checkpoint, registry=registry, device=args.device, verify_hash=False, **precision_kwargs(precision))
    sync = common.cuda_sync(args.device)
    timing = ModelTiming(alias, precision)
    for image in images:
        last: list[Any] = []
        e2e = common.time_call(lambda: last.append(detector.predict(image.data)), repeats=args.repeats, warmup=args.warmup, sync=sync)
        prepared = detector.prepare(image.data)
        model = common.time_call(lambda: detector.infer([prepared]), repeats=args.repeats, warmup=0, sync=sync)
        timing.per_image.append(image_record(image.name, e2e, model, len(last[-1].detections)))
        if keep is not None:
            keep[image.name] = last[-1]
    return timing


def fp32_detections(alias: str, checkpoint: Path, registry, images: Sequence[BenchImage], device: str) -> dict[str, Any]:
    """Untimed fp32 detections per image, the reference a reduced-precision run is matched against."""
    from model_zoo.predictor import load_detector

    detector = load_detector(alias, checkpoint, registry=registry, device=device, verify_hash=False, **precision_kwargs("fp32"))
    return {image.name: detector.predict(image.data) for image in images}


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


# --- torchvision --------------------------------------------------------------------------------


def bench_torchvision(images: Sequence[BenchImage], scale: tuple[int, int], args) -> ModelTiming:
    """torchvision's plain Faster R-CNN R50-FPN (random weights) resizing to the same ``scale``."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from model_zoo.images import load_image

    torch.manual_seed(args.seed)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=scale[1], max_size=scale[0])
    model = model.eval().to(args.device)
    sync = common.cuda_sync(args.device)

    def to_tensor(data: bytes) -> torch.Tensor:
        """Encoded bytes → RGB float (3, H, W) in [0, 1], decoded with the same OpenCV call as ours."""
        bgr = load_image(data)
        return torch.from_numpy(bgr[:, :, ::-1].copy()).to(args.device).permute(2, 0, 1).float().div_(255)

    @torch.inference_mode()
    def forward(tensor: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return model([tensor])

    timing = ModelTiming(TORCHVISION)
    for image in images:
        last: list[Any] = []
        e2e = common.time_call(lambda: last.append(forward(to_tensor(image.data))), repeats=args.repeats, warmup=args.warmup, sync=sync)
        tensor = to_tensor(image.data)
        model_times = common.time_call(lambda: forward(tensor), repeats=args.repeats, warmup=0, sync=sync)
        timing.per_image.append(image_record(image.name, e2e, model_times, int(last[-1][0]["boxes"].shape[0])))
    return timing


# --- mmdet (reference venv, a subprocess running this file) ----------------------------------------


def bench_mmdet(python: Path, alias: str, checkpoint: Path, images: Sequence[BenchImage], scale: tuple[int, int], args) -> ModelTiming:
    payload = {"variant": alias, "checkpoint": str(checkpoint), "images": [str(i.path) for i in images], "scale": list(scale),
               "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads, "device": args.device}  # fmt: skip
    result = common.run_reference_worker(python, SCRIPT, ["mmdet-worker"], payload)
    return ModelTiming(f"mmdet {alias}", "fp32", result["per_image"])


def mmdet_worker(spec_path: Path, out_path: Path) -> int:
    """Runs inside the reference venv: time ``inference_detector`` and ``test_step`` for one variant."""
    from mmdet.apis import inference_detector
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import Compose

    from model_zoo.registry import load_registry
    from tools.parity import mmdet_model

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    entry = load_registry().resolve(spec["variant"])
    model = mmdet_model(entry, tuple(spec["scale"]), Path(spec["checkpoint"])).to(spec["device"])
    pipeline = Compose(get_test_pipeline_cfg(model.cfg.copy()))
    sync = common.cuda_sync(spec["device"])
    per_image = []
    for path in spec["images"]:
        last: list[Any] = []
        e2e = common.time_call(lambda: last.append(inference_detector(model, path)), repeats=spec["repeats"], warmup=spec["warmup"], sync=sync)
        data = pipeline({"img_path": path, "img_id": 0})
        batch = {"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]}

        def test_step() -> None:
            with torch.no_grad():
                model.test_step(batch)

        model_times = common.time_call(test_step, repeats=spec["repeats"], warmup=0, sync=sync)
        per_image.append(image_record(Path(path).name, e2e, model_times, len(last[-1].pred_instances)))
    Path(out_path).write_text(json.dumps({"per_image": per_image}))
    return 0


# --- the report --------------------------------------------------------------------------------


def ratio(value: float | None, base: ModelTiming | None, attr: str) -> str:
    denominator = None if base is None else getattr(base, attr)
    return "–" if value is None or not denominator else f"{value / denominator:.2f}×"


def results_table(rows: Sequence[ModelTiming]) -> str:
    """Markdown table: seconds/image, ratios to torchvision and to mmdet's same variant, and for
    reduced precision its end-to-end speed-up over fp32 and the fp32 detections it reproduces."""
    torchvision = next((r for r in rows if r.model == TORCHVISION), None)
    mmdet = {r.model.removeprefix("mmdet "): r for r in rows if r.model.startswith("mmdet ")}
    fp32 = {r.model: r for r in rows if r.precision == "fp32"}
    table = []
    for row in rows:
        if row.error:
            table.append([row.model, row.precision, f"failed: {row.error}"] + ["–"] * 8)
            continue
        ref = mmdet.get(row.model) if not row.model.startswith("mmdet ") else None
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
        ])  # fmt: skip
    headers = ["model", "precision", "end-to-end s/img", "model s/img", "e2e ÷ torchvision", "model ÷ torchvision",
               "e2e ÷ mmdet", "model ÷ mmdet", "dets/img", "speed-up vs fp32 (e2e)", "fp32 dets reproduced"]  # fmt: skip
    return common.markdown_table(headers, table)


def entry_text(args, argv: Sequence[str], rows: Sequence[ModelTiming], images: Sequence[BenchImage], machine: dict[str, Any],
               mmdet_note: str) -> str:  # fmt: skip
    versions = common.software_versions()
    head = common.entry_header("speed (benchmarks/speed.py)", common.command_line("benchmarks/speed.py", argv), machine, versions, args.threads)
    load_end = [round(x, 2) for x in os.getloadavg()]
    return head + (
        f"- Setting: scale {args.scale[0]}×{args.scale[1]} (long×short), device {args.device}, {len(images)} images "
        f"({', '.join(i.name for i in images)}), median of {args.repeats} after {args.warmup} warm-up per image, "
        f"mean over images; synthetic weights seed {args.seed}; mmdet: {mmdet_note}\n"
        f"- Shared machine: other processes may have been running (load average {machine['loadavg'][0]} at start, "
        f"{load_end[0]} at end, {machine['cores']} cores)\n\n" + results_table(rows)
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
    parser.add_argument("--images", type=Path, nargs="+", default=[IMAGES],
                        help=f"image files and/or folders (default: {IMAGES.relative_to(common.REPO_ROOT)}; no images → generated scenes)")
    parser.add_argument("--num-images", type=int, default=None, help="use only the first N images")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-weights seed")
    parser.add_argument("--mmdet-python", default=None, help=f"reference interpreter (default: {common.DEFAULT_REFERENCE_PYTHON} if it imports mmdet)")
    parser.add_argument("--no-mmdet", dest="mmdet_python", action="store_const", const="", help="skip mmdet")
    parser.add_argument("--no-torchvision", action="store_true", help="skip torchvision")
    parser.add_argument("--no-append", action="store_true", help=f"do not append to {common.BENCHMARKS_FILE.name}")
    parser.add_argument("--benchmarks-file", type=Path, default=common.BENCHMARKS_FILE, help="where to append (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write all timings as JSON here")
    return parser


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
    except ValueError as error:
        parser.error(str(error))
    return args


def attempt(model: str, precision: str, measure: Callable[[], ModelTiming], log: Callable[[str], None]) -> ModelTiming:
    """``measure()``, or a failed row carrying the error's last line: one model that cannot run
    (e.g. an op without a bf16 kernel) must not cost the timings of the others."""
    try:
        timing = measure()
    except Exception as error:  # noqa: BLE001 - reported in the table and the exit status
        lines = str(error).strip().splitlines() or [""]
        timing = ModelTiming(model, precision, error=f"{type(error).__name__}: {lines[-1][:200]}".replace("|", "/"))
    log(f"{model} {precision}: " + (f"FAILED {timing.error}" if timing.error else f"{timing.e2e_s:.3f} s/img end to end"))
    return timing


def run(args: argparse.Namespace, work_dir: Path, log: Callable[[str], None] = print) -> tuple[list[BenchImage], list[ModelTiming]]:
    """The image set and every timing, in table order: torchvision, then per variant ours and mmdet."""
    images = load_images(args.images, args.num_images, work_dir)
    registry = scaled_registry(args.scale)
    rows: list[ModelTiming] = []
    if not args.no_torchvision:
        rows.append(attempt(TORCHVISION, "fp32", lambda: bench_torchvision(images, args.scale, args), log))
    from model_zoo.synth import write_synthetic_checkpoint

    for alias in args.variants:
        checkpoint = write_synthetic_checkpoint(registry.resolve(alias), work_dir / f"{alias}_seed{args.seed}.pth", seed=args.seed)
        results: dict[str, dict[str, Any]] = {}
        for precision in args.precision:
            kept: dict[str, Any] = {}
            rows.append(attempt(alias, precision, lambda: bench_ours(alias, checkpoint, registry, images, args, precision, keep=kept), log))
            if rows[-1].error:
                continue
            results[precision] = kept
            if precision != "fp32":
                if "fp32" not in args.precision and "fp32" not in results:
                    results["fp32"] = fp32_detections(alias, checkpoint, registry, images, args.device)
                if "fp32" in results:
                    rows[-1].reproduced = reproduced(results["fp32"], kept)
        if args.mmdet_python is not None:
            rows.append(attempt(f"mmdet {alias}", "fp32", lambda: bench_mmdet(args.mmdet_python, alias, checkpoint, images, args.scale, args), log))
        checkpoint.unlink()
    return images, rows


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["mmdet-worker"]:
        return mmdet_worker(Path(argv[1]), Path(argv[2]))
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = common.machine_info()
    with tempfile.TemporaryDirectory(prefix="attnzoo-speed-") as tmp:
        images, rows = run(args, Path(tmp))
    text = entry_text(args, argv, rows, images, machine, args.mmdet_note)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "threads": args.threads, "scale": list(args.scale),
                                         "rows": [r.to_dict() for r in rows]}, indent=1))  # fmt: skip
    if not args.no_append:
        common.append_entry(text, args.benchmarks_file)
        print(f"appended to {args.benchmarks_file}")
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
