"""Parity of our engine with mmdet 3.3 (issue 2): reference fixtures and the comparison with them.

Modes (``python tools/parity.py MODE --help``):

- ``reference`` (reference env: mmdet 3.3 + mmcv 2.1, see README "Parity with mmdet"): writes a
  synthetic checkpoint per variant, loads it with ``mmdet.apis.init_detector``, runs
  ``inference_detector`` on the test images at each scale and writes small JSON fixtures: final
  detections, RPN proposals, FPN statistics and sampled values, the preprocessed input, and
  per variant mmdet's ``state_dict()`` key names and shapes. Stages are captured with hooks on
  mmdet's own modules, so nothing of mmdet is re-implemented here.
- ``conditioning`` (reference env): perturbs mmdet's input by relative noise and reports how
  many detections survive, to show the synthetic weights are well conditioned.
- ``compare`` (our env, no mmdet): runs our engine on the same checkpoints and images the way
  users do (registry entry → ``build_detector`` → ``load_checkpoint`` → ``Detector.predict``),
  compares stage by stage and prints a markdown table variant × image × matched.

The matching helpers below are also what ``tests/model_zoo/test_parity.py`` uses in CI.
This file is the optional ``reference`` extra's tool; ``model_zoo`` and ``app`` never import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the reference env does not install the project
    sys.path.insert(0, str(REPO_ROOT))

from model_zoo.registry import Registry, VariantEntry, load_registry  # noqa: E402
from model_zoo.synth import write_synthetic_checkpoint  # noqa: E402

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "parity"
IMAGES = REPO_ROOT / "tests" / "fixtures" / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SCALES = {"small": (512, 320), "full": (1333, 800)}  # keep-ratio target (long, short) pixels
# Seeds alternate so that each attention type is checked with two different weight draws.
SEEDS = {"attn1111": 1, "attn0010": 2, "attn1111-dcn": 2, "attn0010-dcn": 1}
NUM_PROPOSALS_KEPT = 100  # proposals stored per image (the best, in mmdet's order)
NUM_SAMPLES = 32  # sampled values stored per tensor (FPN level, input)

# Tolerances (README "Parity with mmdet" explains them).
DET_IOU = 0.99
DET_SCORE_ATOL = 2e-3
PROPOSAL_IOU = 0.99
FEATURE_RTOL = 1e-4  # |Δ| of a sampled value / statistic, relative to that tensor's std
INPUT_ATOL = 1e-5  # normalised pixels (samples and projection): one uint8 level is 1/58


# --- fixture encoding --------------------------------------------------------------------------


def f32(values: Any) -> Any:
    """Nested lists of the float32 values, each as its shortest round-tripping decimal."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 0:
        return float(str(np.float32(array)))
    return [f32(v) for v in array]


def sample_indices(numel: int, count: int = NUM_SAMPLES) -> np.ndarray:
    """Fixed flat indices spread over a tensor of ``numel`` elements (the same on both sides)."""
    return np.unique(np.linspace(0, numel - 1, count + 2).round().astype(np.int64)[1:-1])


def hash_signs(numel: int) -> np.ndarray:
    """A fixed pseudo-random ±1 per element: splitmix64 of the flat index (no RNG, so no version drift)."""
    z = np.arange(numel, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return 1.0 - 2.0 * (z >> np.uint64(63)).astype(np.float64)


def tensor_summary(tensor: torch.Tensor) -> dict[str, Any]:
    """Shape, statistics and sampled values of a tensor (1, C, H, W), in its logical (NCHW) order.

    ``projection`` = Σ x_i s_i / √N with fixed signs s_i: a whole-tensor checksum in the units of x
    that any broad difference moves (a single input pixel one level off moves it by ~1/(58 √N)).
    """
    flat = tensor.detach().double().reshape(-1)
    signs = torch.from_numpy(hash_signs(flat.numel()))
    return {
        "shape": list(tensor.shape),
        "mean": f32(flat.mean()),
        "std": f32(flat.std()),
        "abs_mean": f32(flat.abs().mean()),
        "abs_max": f32(flat.abs().max()),
        "projection": float(f"{((flat * signs).sum() / math.sqrt(flat.numel())).item():.10g}"),
        "samples": f32(flat[torch.from_numpy(sample_indices(flat.numel()))].numpy()),
    }


def weights_checksums(state_dict: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor (sum, sum of squares): detects a synthetic-weights change across machines."""
    out = {}
    for key, value in state_dict.items():
        v = value.detach().double()
        out[key] = [float(f"{v.sum().item():.9g}"), float(f"{(v * v).sum().item():.9g}")]
    return out


def fixture_path(variant: str, scale_name: str, root: Path = FIXTURES) -> Path:
    return root / f"{variant}_{scale_name}.json"


def keys_path(variant: str, root: Path = FIXTURES) -> Path:
    return root / f"keys_{variant}.json"


def list_images(folder: Path = IMAGES) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def with_scale(entry: VariantEntry, scale: tuple[int, int]) -> VariantEntry:
    """``entry`` with its test-time keep-ratio scale replaced."""
    preprocess = dataclasses.replace(entry.arch.preprocess, scale=tuple(scale))
    return dataclasses.replace(entry, arch=dataclasses.replace(entry.arch, preprocess=preprocess))


# --- matching (used by compare and the CI tests) -----------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4), (x1, y1, x2, y2)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), (np.abs(a[:, None] - b[None]).max(-1) == 0) * 1.0)


@dataclass
class DetectionMatch:
    """Result of matching our detections against mmdet's (same label, IoU, score)."""

    reference: int  # mmdet's detections
    ours: int
    matched: int
    unmatched_reference: list[int]  # indices into mmdet's detections
    unmatched_ours: list[int]
    max_score_diff: float
    min_iou: float

    @property
    def ok(self) -> bool:
        return not self.unmatched_reference and not self.unmatched_ours


def match_detections(
    ref_boxes: Any, ref_scores: Any, ref_labels: Any, boxes: Any, scores: Any, labels: Any,
    *, iou: float = DET_IOU, score_atol: float = DET_SCORE_ATOL,
) -> DetectionMatch:  # fmt: skip
    """Greedy one-to-one matching in mmdet's score order: same label, IoU ≥ ``iou`` and
    |Δscore| ≤ ``score_atol``; among candidates the highest IoU wins."""
    ref_boxes, boxes = np.asarray(ref_boxes, np.float64).reshape(-1, 4), np.asarray(boxes, np.float64).reshape(-1, 4)
    ref_scores, scores = np.asarray(ref_scores, np.float64), np.asarray(scores, np.float64)
    ref_labels, labels = np.asarray(ref_labels), np.asarray(labels)
    ious = box_iou(ref_boxes, boxes)
    ok = (ious >= iou) & (ref_labels[:, None] == labels[None, :]) & (np.abs(ref_scores[:, None] - scores[None, :]) <= score_atol)
    taken = np.zeros(len(boxes), bool)
    unmatched_ref, score_diffs, matched_ious = [], [], []
    for i in np.argsort(-ref_scores, kind="stable"):
        candidates = np.flatnonzero(ok[i] & ~taken)
        if candidates.size == 0:
            unmatched_ref.append(int(i))
            continue
        j = candidates[np.argmax(ious[i, candidates])]
        taken[j] = True
        score_diffs.append(abs(ref_scores[i] - scores[j]))
        matched_ious.append(ious[i, j])
    return DetectionMatch(
        reference=len(ref_boxes), ours=len(boxes), matched=int(taken.sum()),
        unmatched_reference=sorted(unmatched_ref), unmatched_ours=[int(j) for j in np.flatnonzero(~taken)],
        max_score_diff=float(max(score_diffs, default=0.0)), min_iou=float(min(matched_ious, default=1.0)),
    )  # fmt: skip


def unmatched_proposals(ref_boxes: Any, boxes: Any, *, iou: float = PROPOSAL_IOU) -> list[int]:
    """Indices of mmdet's proposals with no proposal of ours at IoU ≥ ``iou`` (order-free: equal
    objectness scores may be ranked differently)."""
    ref_boxes = np.asarray(ref_boxes, np.float64).reshape(-1, 4)
    if len(ref_boxes) == 0:
        return []
    ious = box_iou(ref_boxes, boxes)
    return [int(i) for i in np.flatnonzero(ious.max(axis=1, initial=0.0) < iou)]


def feature_diffs(reference: dict[str, Any], tensor: torch.Tensor) -> dict[str, float]:
    """Differences of ``tensor`` against a stored :func:`tensor_summary`, relative to its std."""
    ours = tensor_summary(tensor)
    if ours["shape"] != reference["shape"]:
        return {"shape_mismatch": 1.0}
    std = max(reference["std"], 1e-12)
    samples = np.abs(np.asarray(ours["samples"]) - np.asarray(reference["samples"])).max(initial=0.0)
    return {
        "samples": float(samples) / std,
        "projection": abs(ours["projection"] - reference["projection"]) / std,
        "mean": abs(ours["mean"] - reference["mean"]) / std,
        "std": abs(ours["std"] - reference["std"]) / std,
        "abs_max": abs(ours["abs_max"] - reference["abs_max"]) / std,
    }


# --- our engine, with the stages captured by hooks ---------------------------------------------


@dataclass
class Captured:
    """What one forward of a detector produced, stage by stage (one image)."""

    input: torch.Tensor | None = None  # (1, 3, Hp, Wp) normalised, padded
    features: list[torch.Tensor] | None = None  # P2..P6
    proposals: torch.Tensor | None = None  # (K, 4) resized-image pixels
    proposal_scores: torch.Tensor | None = None  # (K,) (mmdet only)


@contextmanager
def capture_ours(model: torch.nn.Module) -> Iterator[Captured]:
    """Hooks on our detector's backbone (input), neck (P2..P6) and RoI head (proposals), copied to the CPU."""
    captured = Captured()

    def on_backbone(_module, args):
        captured.input = args[0].detach().to("cpu", copy=True)

    def on_neck(_module, _args, output):
        captured.features = [t.detach().to("cpu", copy=True) for t in output]

    def on_roi_head(_module, args):
        captured.proposals = args[1][0].detach().to("cpu", copy=True)

    handles = [
        model.backbone.register_forward_pre_hook(on_backbone),
        model.neck.register_forward_hook(on_neck),
        model.roi_head.register_forward_pre_hook(on_roi_head),
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def our_detector(alias: str, checkpoint: Path, scale: Sequence[int], registry: Registry | None = None, **options: Any):
    """Our detector for ``alias`` at test scale ``scale``, loaded the way users load it
    (``load_detector``: registry entry → ``build_detector`` → strict ``load_checkpoint``);
    ``options`` go to ``load_detector`` (``device``, ``cpu_kernels``, ``inference_pass``)."""
    from model_zoo.predictor import load_detector

    registry = registry if registry is not None else load_registry()
    scaled = dataclasses.replace(registry, entries=tuple(with_scale(entry, scale) for entry in registry))
    return load_detector(alias, checkpoint, registry=scaled, verify_hash=False, **options)


def run_ours(detector, image: Path):
    """(DetectionResult, Captured) of one image through ``Detector.predict``."""
    with capture_ours(detector.model) as captured:
        result = detector.predict(image)
    return result, captured


@dataclass
class ImageReport:
    """Stage-wise comparison of one image; ``problems`` is empty when everything is in tolerance."""

    variant: str
    scale: str
    image: str
    detections: DetectionMatch
    proposals_ref: int
    proposals_ours: int
    proposals_unmatched: list[int]
    input_diff: float
    feature_diffs: list[dict[str, float]]
    problems: list[str]


def compare_image(variant: str, scale: str, name: str, reference: dict[str, Any], result, captured: Captured) -> ImageReport:
    """Compare our run of one image with its fixture, in pipeline order."""
    problems: list[str] = []
    where = f"{variant} @ {scale} / {name}"
    ref_input = reference["input"]
    input_diffs = feature_diffs(ref_input, captured.input)
    input_diff = max(input_diffs.get("samples", math.inf), input_diffs.get("projection", math.inf)) * max(ref_input["std"], 1e-12)
    if list(captured.input.shape) != ref_input["shape"]:
        problems.append(f"{where}: preprocessed input shape {list(captured.input.shape)} != mmdet {ref_input['shape']}")
    elif input_diff > INPUT_ATOL:
        problems.append(f"{where}: preprocessed input differs from mmdet's by {input_diff:.3g} (decode/resize/normalise)")
    diffs = []
    for level, (ref_level, ours) in enumerate(zip(reference["fpn"], captured.features)):
        diff = feature_diffs(ref_level, ours)
        diffs.append(diff)
        if "shape_mismatch" in diff:
            problems.append(f"{where}: FPN P{level + 2} shape {list(ours.shape)} != mmdet {ref_level['shape']}")
        elif max(diff.values()) > FEATURE_RTOL:
            worst = max(diff, key=diff.get)
            problems.append(f"{where}: FPN P{level + 2} {worst} differs by {diff[worst]:.3g} std (> {FEATURE_RTOL})")
    proposals = reference["proposals"]
    missing = unmatched_proposals(proposals["bboxes"], captured.proposals.numpy())
    if missing:
        problems.append(f"{where}: {len(missing)} of mmdet's top {len(proposals['bboxes'])} RPN proposals have no match "
                        f"(IoU ≥ {PROPOSAL_IOU}), first: #{missing[0]} {proposals['bboxes'][missing[0]]}")  # fmt: skip
    if len(captured.proposals) != proposals["count"]:
        problems.append(f"{where}: {len(captured.proposals)} RPN proposals, mmdet has {proposals['count']}")
    dets = reference["detections"]
    ours = result.detections
    match = match_detections(
        dets["bboxes"], dets["scores"], dets["labels"],
        [d.bbox for d in ours], [d.score for d in ours], [d.label for d in ours],
    )  # fmt: skip
    if match.unmatched_reference:
        i = match.unmatched_reference[0]
        problems.append(f"{where}: {len(match.unmatched_reference)} of mmdet's {match.reference} detections unmatched, "
                        f"first: label {dets['labels'][i]} score {dets['scores'][i]:.4f} box {dets['bboxes'][i]}")  # fmt: skip
    if match.unmatched_ours:
        j = match.unmatched_ours[0]
        problems.append(f"{where}: {len(match.unmatched_ours)} extra detections of ours, first: label {ours[j].label} "
                        f"score {ours[j].score:.4f} box {list(ours[j].bbox)}")  # fmt: skip
    return ImageReport(variant, scale, name, match, proposals["count"], len(captured.proposals), missing, input_diff, diffs, problems)


def markdown_table(reports: Sequence[ImageReport], seeds: dict[str, int]) -> str:
    lines = [
        "| variant (seed) | scale | image | detections matched | max \\|Δscore\\| | min IoU | proposals (top 100 matched) | max FPN Δ / std |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        d = r.detections
        worst = max((max(x.values()) for x in r.feature_diffs), default=0.0)
        top = min(100, r.proposals_ref)
        lines.append(
            f"| {r.variant} ({seeds.get(r.variant, '?')}) | {r.scale} | {r.image} | {d.matched}/{d.reference}"
            + (f" (+{len(d.unmatched_ours)} extra)" if d.unmatched_ours else "")
            + f" | {d.max_score_diff:.1e} | {d.min_iou:.5f} | {r.proposals_ours}/{r.proposals_ref} ({top - len(r.proposals_unmatched)}/{top})"
            + f" | {worst:.1e} |"
        )
    return "\n".join(lines) + "\n"


# --- mmdet (reference env only) ----------------------------------------------------------------


def mmdet_config(entry: VariantEntry, scale: tuple[int, int] | None):
    """mmdet's config for ``entry`` (found by its metafile Name), test scale optionally replaced."""
    import mmdet
    import yaml
    from mmengine.config import Config

    mim = Path(mmdet.__file__).parent / ".mim"
    models = yaml.safe_load((mim / "configs" / "empirical_attention" / "metafile.yml").read_text())["Models"]
    config = next(m["Config"] for m in models if m["Name"] == entry.name)
    cfg = Config.fromfile(str(mim / config))
    if scale is not None:
        pipelines = [cfg.test_dataloader.dataset.pipeline] + ([cfg.test_pipeline] if "test_pipeline" in cfg else [])
        for pipeline in pipelines:
            for step in pipeline:
                if step["type"] == "Resize":
                    step["scale"] = tuple(scale)
    return cfg


def mmdet_model(entry: VariantEntry, scale: tuple[int, int] | None, checkpoint: Path):
    """``init_detector`` on our synthetic file; checks mmdet took every tensor (it loads non-strictly)."""
    from mmdet.apis import init_detector

    model = init_detector(mmdet_config(entry, scale), str(checkpoint), device="cpu")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    loaded = model.state_dict()
    if set(loaded) != set(state):
        raise SystemExit(f"{entry.alias}: mmdet keys differ from the checkpoint: "
                         f"{sorted(set(loaded) ^ set(state))[:5]}")  # fmt: skip
    bad = [k for k in state if not torch.equal(state[k], loaded[k])]
    if bad:
        raise SystemExit(f"{entry.alias}: mmdet did not load {bad[:5]}")
    return model


@contextmanager
def capture_mmdet(model, perturb: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[Captured]:
    """Hooks on mmdet's backbone (input, optionally perturbed), neck and ``rpn_head.predict``."""
    captured = Captured()

    def on_backbone(_module, args):
        x = args[0] if perturb is None else perturb(args[0])
        captured.input = x.detach().clone()
        return (x,)

    def on_neck(_module, _args, output):
        captured.features = [t.detach().to("cpu", copy=True) for t in output]

    original_predict = model.rpn_head.predict

    def rpn_predict(*args, **kwargs):
        results = original_predict(*args, **kwargs)
        captured.proposals = results[0].bboxes.detach().clone()
        captured.proposal_scores = results[0].scores.detach().clone()
        return results

    handles = [model.backbone.register_forward_pre_hook(on_backbone), model.neck.register_forward_hook(on_neck)]
    model.rpn_head.predict = rpn_predict
    try:
        yield captured
    finally:
        del model.rpn_head.predict
        for handle in handles:
            handle.remove()


def run_mmdet(model, image: Path, perturb=None):
    from mmdet.apis import inference_detector

    with capture_mmdet(model, perturb) as captured:
        sample = inference_detector(model, str(image))
    return sample, captured


def image_record(sample, captured: Captured) -> dict[str, Any]:
    """The fixture of one image: metadata, preprocessed input, FPN, proposals, detections."""
    pred = sample.pred_instances
    meta = sample.metainfo
    return {
        "ori_shape": list(meta["ori_shape"]),
        "img_shape": list(meta["img_shape"]),
        "pad_shape": list(meta["pad_shape"]),
        "scale_factor": [float(v) for v in meta["scale_factor"]],
        "input": tensor_summary(captured.input),
        "fpn": [tensor_summary(t) for t in captured.features],
        "proposals": {
            "count": int(len(captured.proposals)),
            "bboxes": f32(captured.proposals[:NUM_PROPOSALS_KEPT].numpy()),
            "scores": f32(captured.proposal_scores[:NUM_PROPOSALS_KEPT].numpy()),
        },
        "detections": {
            "bboxes": f32(pred.bboxes.numpy()),
            "scores": f32(pred.scores.numpy()),
            "labels": [int(v) for v in pred.labels],
        },
    }


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    print(f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} ({path.stat().st_size // 1024} KB)")


def versions() -> dict[str, str]:
    import cv2

    found = {"torch": torch.__version__, "opencv": cv2.__version__}
    for name in ("mmdet", "mmcv", "mmengine"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def checkpoint_for(entry: VariantEntry, seed: int, work_dir: Path) -> Path:
    return write_synthetic_checkpoint(entry, work_dir / f"{entry.alias}_seed{seed}.pth", seed=seed)


def command_reference(args: argparse.Namespace) -> int:
    registry = load_registry()
    images = list_images(args.images)
    for alias in args.variants:
        entry, seed = registry.resolve(alias), SEEDS[alias]
        started = time.perf_counter()
        checkpoint = checkpoint_for(entry, seed, args.work_dir)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        for scale_name in args.scales:
            model = mmdet_model(entry, SCALES[scale_name], checkpoint)
            if scale_name == args.scales[0]:
                keys = [[k, list(v.shape)] for k, v in model.state_dict().items()]
                checksums = weights_checksums(state)
                write_json(keys_path(alias, args.out), {
                    "variant": alias, "source": "mmdet model.state_dict()", "keys": keys,
                    # (sum, sum of squares) per key, in the order of "keys", of the synthetic
                    # checkpoint the fixtures were made with: tells CI when model_zoo/synth.py changed.
                    "synthetic_weights": {"seed": seed, "checksums": [checksums[k] for k, _ in keys]},
                })  # fmt: skip
            records = {}
            for image in images:
                sample, captured = run_mmdet(model, image)
                records[image.name] = image_record(sample, captured)
                print(f"  {alias} {scale_name} {image.name}: {len(sample.pred_instances)} detections")
            write_json(fixture_path(alias, scale_name, args.out), {
                "variant": alias, "seed": seed, "scale": list(SCALES[scale_name]), "versions": versions(), "images": records,
            })  # fmt: skip
        checkpoint.unlink()
        print(f"{alias}: {time.perf_counter() - started:.0f} s")
    return 0


def command_conditioning(args: argparse.Namespace) -> int:
    """mmdet vs mmdet with ``noise`` × std(input) Gaussian noise on the normalised input."""
    registry = load_registry()
    rows, generator = [], torch.Generator().manual_seed(0)

    def perturb(x: torch.Tensor) -> torch.Tensor:
        return x + args.noise * x.std() * torch.randn(x.shape, generator=generator)

    for alias in args.variants:
        entry, seed = registry.resolve(alias), SEEDS[alias]
        checkpoint = checkpoint_for(entry, seed, args.work_dir)
        for scale_name in args.scales:
            model = mmdet_model(entry, SCALES[scale_name], checkpoint)
            for image in list_images(args.images):
                clean, clean_stages = run_mmdet(model, image)
                noisy, _ = run_mmdet(model, image, perturb)
                a, b = clean.pred_instances, noisy.pred_instances
                match = match_detections(a.bboxes, a.scores, a.labels, b.bboxes, b.scores, b.labels)
                scores = a.scores.numpy()
                rows.append({
                    "variant": alias, "seed": seed, "scale": scale_name, "image": image.name,
                    "detections": len(scores), "matched": match.matched, "extra": len(match.unmatched_ours),
                    "top_score": float(scores.max(initial=0.0)), "median_score": float(np.median(scores)) if len(scores) else 0.0,
                    "tied_scores": int(len(scores) - len(np.unique(scores))),
                    "rpn_top_objectness": float(clean_stages.proposal_scores.max()),
                    "rpn_objectness_100th": float(clean_stages.proposal_scores[:100].min()),
                    "max_score_diff": match.max_score_diff,
                })  # fmt: skip
                print(json.dumps(rows[-1]))
        checkpoint.unlink()
    table = ["| variant (seed) | scale | image | dets at 0.05 | survive 1e-5 noise | top / median score | tied scores | RPN objectness top / 100th |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        table.append(f"| {r['variant']} ({r['seed']}) | {r['scale']} | {r['image']} | {r['detections']} | {r['matched']}/{r['detections']}"
                     f"{' (+' + str(r['extra']) + ')' if r['extra'] else ''} | {r['top_score']:.3f} / {r['median_score']:.3f} | "
                     f"{r['tied_scores']} | {r['rpn_top_objectness']:.3f} / {r['rpn_objectness_100th']:.3f} |")  # fmt: skip
    print("\n".join(table))
    if args.report:
        args.report.write_text("\n".join(table) + "\n")
    return 0


def command_compare(args: argparse.Namespace) -> int:
    registry = load_registry()
    reports: list[ImageReport] = []
    for alias in args.variants:
        base = registry.resolve(alias)
        checkpoint = None
        for scale_name in args.scales:
            path = fixture_path(alias, scale_name, args.fixtures)
            if not path.is_file():
                print(f"skip {alias} {scale_name}: no fixture {path}")
                continue
            fixture = json.loads(path.read_text())
            if checkpoint is None:
                checkpoint = checkpoint_for(base, fixture["seed"], args.work_dir)
            detector = our_detector(alias, checkpoint, fixture["scale"], registry)
            for name, reference in fixture["images"].items():
                result, captured = run_ours(detector, args.images / name)
                reports.append(compare_image(alias, scale_name, name, reference, result, captured))
                for problem in reports[-1].problems:
                    print("MISMATCH", problem)
        if checkpoint is not None:
            checkpoint.unlink()
    table = markdown_table(reports, SEEDS)
    print(table)
    if args.report:
        args.report.write_text(table)
    return 1 if any(r.problems for r in reports) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--variants", nargs="+", default=list(SEEDS), choices=list(SEEDS))
    common.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    common.add_argument("--images", type=Path, default=IMAGES, help="folder of test images (default: %(default)s)")
    common.add_argument("--work-dir", type=Path, default=Path("/tmp/attnzoo-parity"), help="where synthetic checkpoints are written")
    common.add_argument("--threads", type=int, default=2)
    reference = sub.add_parser("reference", parents=[common], help="(mmdet env) write fixtures")
    reference.add_argument("--out", type=Path, default=FIXTURES)
    reference.set_defaults(func=command_reference)
    conditioning = sub.add_parser("conditioning", parents=[common], help="(mmdet env) noise robustness of the synthetic weights")
    conditioning.add_argument("--noise", type=float, default=1e-5, help="noise std relative to the input's std")
    conditioning.add_argument("--report", type=Path, default=None, help="also write the markdown table here")
    conditioning.set_defaults(func=command_conditioning)
    compare = sub.add_parser("compare", parents=[common], help="(our env) compare our engine with the fixtures")
    compare.add_argument("--fixtures", type=Path, default=FIXTURES)
    compare.add_argument("--report", type=Path, default=None, help="also write the markdown table here")
    compare.set_defaults(func=command_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
