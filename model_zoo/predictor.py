"""The public inference API: a :class:`Detector` turns images into typed :class:`Detection` s.

Serving splits one call into named stages so that it can time them and batch the middle one::

    prepared = detector.prepare(image)          # decode + keep-ratio resize (CPU, per request)
    results = detector.infer([prepared, ...])   # normalise, pad, model, rescale (one batch)
    result.filter(score_thr=0.3, max_dets=10)   # per-request thresholds

``predict`` chains the three for one image.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from model_zoo.categories import COCO_CATEGORY_IDS, COCO_CLASSES
from model_zoo.checkpoint import load_checkpoint
from model_zoo.engine.detector import FasterRCNN, build_detector
from model_zoo.engine.fuse import fold_batch_norms, read_rois_channels_last
from model_zoo.engine.preprocess import ResizedImage, collate, rescale_size, resize_keep_ratio
from model_zoo.errors import AttnzooError, ImageDecodeError, WeightsMissingError
from model_zoo.images import ImageInput, load_image
from model_zoo.registry import Registry, VariantEntry, existing_weights_path, load_registry
from model_zoo.weights import hash_prefix_of, verify_weights

# fp32 is the default and the only mode whose detections are proven equal to mmdet's; the
# others run convolutions and matmuls under autocast (opt-in, see BENCHMARKS.md for their cost).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Detection:
    """One detected object. ``bbox`` is (x1, y1, x2, y2) in original-image pixels."""

    bbox: tuple[float, float, float, float]
    score: float
    label: int  # contiguous 0..79
    category_id: int  # COCO category id
    class_name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "bbox": list(self.bbox),
            "score": self.score,
            "label": self.label,
            "category_id": self.category_id,
            "class_name": self.class_name,
        }


@dataclass(frozen=True)
class DetectionResult:
    """Detections of one image, sorted by descending score; ``width``/``height`` in pixels."""

    width: int
    height: int
    detections: tuple[Detection, ...] = field(default_factory=tuple)

    def filter(
        self,
        score_thr: float | None = None,
        max_dets: int | None = None,
        labels: Iterable[int] | None = None,
    ) -> "DetectionResult":
        """Keep detections with ``score > score_thr`` (strict, as mmdet's test cfg) and label in
        ``labels``, at most ``max_dets``."""
        wanted = None if labels is None else set(labels)
        kept = [
            d
            for d in self.detections
            if (score_thr is None or d.score > score_thr) and (wanted is None or d.label in wanted)
        ]
        if max_dets is not None:
            kept = kept[:max_dets]
        return DetectionResult(self.width, self.height, tuple(kept))

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "detections": [d.to_dict() for d in self.detections]}


@dataclass(frozen=True)
class PreparedImage:
    """A decoded, resized image waiting for the model (output of :meth:`Detector.prepare`)."""

    resized: ResizedImage

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.resized.padded_shape


class Detector:
    """A loaded detector of one registry variant on one device.

    Takes ownership of ``model`` (built by ``build_detector`` with its weights loaded) and makes it
    inference-ready in place: eval mode, BatchNorm folded into the convolutions, channels-last,
    moved to ``device``.
    """

    def __init__(
        self,
        entry: VariantEntry,
        model: FasterRCNN,
        *,
        device: torch.device,
        weights_path: Path | None = None,
        sha256: str | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise AttnzooError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.entry = entry
        # Inference-ready: eval mode, frozen BN folded into the convs (rounding-level change), on device.
        fold_batch_norms(model.eval().backbone)
        read_rois_channels_last(model.roi_head.bbox_head)
        # Channels-last activations: about 30% faster convolutions on CPU (oneDNN) and on CUDA.
        self.model = model.to(device=device, memory_format=torch.channels_last)
        self.device = device
        self.weights_path = weights_path
        self.sha256 = sha256
        self.precision = precision

    @property
    def variant(self) -> str:
        return self.entry.alias

    def prepare(self, image: ImageInput) -> PreparedImage:
        """Decode (BGR, EXIF applied) and keep-ratio resize with OpenCV bilinear on uint8."""
        pixels = load_image(image)
        height, width = pixels.shape[:2]
        new_w, new_h = rescale_size(width, height, self.entry.arch.preprocess.scale)
        if new_w < 1 or new_h < 1:
            raise ImageDecodeError(
                f"a {width}x{height} image would be resized to {new_w}x{new_h} pixels: aspect ratio too extreme"
            )
        return PreparedImage(resize_keep_ratio(pixels, self.entry.arch.preprocess))

    @torch.inference_mode()
    def infer(self, prepared: Sequence[PreparedImage]) -> list[DetectionResult]:
        """Run the model on prepared images; results keep the input order.

        Images are batched only with images of the same padded shape: GeneralizedAttention
        attends over the padding, so padding an image further would change its detections.
        """
        results: list[DetectionResult | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(item.padded_shape, []).append(index)
        for indices in groups.values():
            batch = collate([prepared[i].resized for i in indices], self.entry.arch.preprocess, self.device)
            batch = dataclasses.replace(batch, tensor=batch.tensor.contiguous(memory_format=torch.channels_last))
            with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32"):
                outputs = self.model(batch)
            for i, (boxes, scores, labels) in zip(indices, outputs):
                results[i] = _to_result(prepared[i].resized, boxes, scores, labels)
        return [r for r in results if r is not None]

    def predict(self, image: ImageInput, score_thr: float | None = None) -> DetectionResult:
        """Detections of one image; ``score_thr`` further filters the test config's 0.05."""
        return self.infer([self.prepare(image)])[0].filter(score_thr)

    def predict_batch(self, images: Sequence[ImageInput], score_thr: float | None = None) -> list[DetectionResult]:
        return [r.filter(score_thr) for r in self.infer([self.prepare(image) for image in images])]


def _to_result(resized: ResizedImage, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> DetectionResult:
    boxes_np = boxes.detach().cpu().numpy().astype(np.float64)
    scores_np = scores.detach().cpu().numpy().astype(np.float64)
    labels_np = labels.detach().cpu().numpy()
    detections = tuple(
        Detection(
            bbox=tuple(float(v) for v in box),  # type: ignore[arg-type]
            score=float(score),
            label=int(label),
            category_id=COCO_CATEGORY_IDS[int(label)],
            class_name=COCO_CLASSES[int(label)],
        )
        for box, score, label in zip(boxes_np, scores_np, labels_np)
    )
    height, width = resized.original_shape
    return DetectionResult(width=width, height=height, detections=detections)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise AttnzooError("device 'cuda' requested but no CUDA GPU is available (use --device cpu)")
    return resolved


def load_detector(
    variant: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    registry: Registry | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    verify_hash: bool = True,
    precision: str = "fp32",
) -> Detector:
    """Build the detector of ``variant`` (alias or full name) and load its checkpoint.

    Args:
        checkpoint: a ``.pth`` path; default: the registry's file in ``weights_dir``.
        verify_hash: refuse a file whose sha256 does not start with the hex suffix of its name.
        precision: "fp32" (default, mmdet-exact), or opt-in "bf16" / "fp16" autocast.

    Raises:
        UnknownVariantError, WeightsMissingError, HashMismatchError, CheckpointError.
    """
    registry = registry if registry is not None else load_registry()
    entry = registry.resolve(variant)
    path = existing_weights_path(entry, weights_dir) if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise WeightsMissingError(f"checkpoint file {str(path)!r} not found")
    sha256 = verify_weights(path, hash_prefix_of(path) if verify_hash else None)
    model = build_detector(entry.arch)
    load_checkpoint(model, path, entry=entry, registry=registry)
    return Detector(entry, model, device=resolve_device(device), weights_path=path, sha256=sha256, precision=precision)
