"""The public inference API: a :class:`Detector` turns images into typed :class:`Detection` s.

Serving splits one call into named stages so that it can time them and batch the middle one::

    prepared = detector.prepare(image)          # decode + keep-ratio resize (CPU, per request)
    results = detector.infer([prepared, ...])   # normalise, pad, model, rescale (one batch)
    result.filter(score_thr=0.3, max_dets=10)   # per-request thresholds

``predict`` chains the three for one image.

Batch invariance: on CPU ``infer`` runs the model once per image, so an image's detections are
bit-identical whatever else is in its batch (GEMM and convolution kernels choose their blocking,
and with it their float summation order, by batch size and RoI count). The convolutions of one
1333×800 image already keep every core busy; ``benchmarks/batch_invariance.py`` measures both
paths. On CUDA, where batching is what makes the GPU fast, images of one padded shape run as one
batched forward; an image's detections then equal its lone detections by the parity criterion
(same label, IoU ≥ 0.99, |Δscore| ≤ 2e-3), not bit for bit. ``batched_forward`` chooses explicitly.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from model_zoo.categories import COCO_CATEGORY_IDS, COCO_CLASSES
from model_zoo.checkpoint import load_checkpoint
from model_zoo.detections import Detection, DetectionResult
from model_zoo.engine.detector import FasterRCNN, build_detector
from model_zoo.engine.inference_pass import CPU_KERNELS, prepare_for_inference
from model_zoo.engine.preprocess import ImageBatch, ResizedImage, collate, resize_keep_ratio
from model_zoo.errors import AttnzooError, WeightsMissingError
from model_zoo.images import ImageInput, load_image
from model_zoo.registry import Registry, VariantEntry, existing_weights_path, load_registry
from model_zoo.weights import hash_prefix_of, verify_weights

# fp32 is the default and the only mode whose detections are proven equal to mmdet's; the
# others run convolutions and matmuls under autocast (opt-in, see BENCHMARKS.md for their cost).
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    inference-ready in place with ``engine.inference_pass.prepare_for_inference``: eval mode,
    BatchNorm folded, channels-last, the ``cpu_kernels`` swapped in, moved to ``device``.

    Args:
        precision: "fp32" (default, mmdet-exact), or opt-in "bf16" / "fp16" autocast.
        cpu_kernels: "fast" (default: the CPU rewrites) or "portable" (the kernels CUDA runs:
            torchvision ops, one SDPA call per attention block). No effect off the CPU.
        inference_pass: False runs the model exactly as built (eval mode, moved to ``device``):
            the plain definition, for parity checks.
        batched_forward: one forward per padded shape (True) or per image (False); default:
            batched on CUDA, per image elsewhere (see the module docstring).
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
        cpu_kernels: str = "fast",
        inference_pass: bool = True,
        batched_forward: bool | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise AttnzooError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        if cpu_kernels not in CPU_KERNELS:
            raise AttnzooError(f"unknown cpu_kernels {cpu_kernels!r}; valid: {', '.join(CPU_KERNELS)}")
        self.entry = entry
        if inference_pass:
            self.model = prepare_for_inference(model, device, cpu_kernels=cpu_kernels)
        else:
            self.model = model.eval().to(device)
        self.device = device
        self.weights_path = weights_path
        self.sha256 = sha256
        self.precision = precision
        self.cpu_kernels = cpu_kernels
        self.batched_forward = device.type == "cuda" if batched_forward is None else batched_forward

    @property
    def variant(self) -> str:
        return self.entry.alias

    def prepare(self, image: ImageInput) -> PreparedImage:
        """Decode (BGR, EXIF applied; an array is taken as decoded BGR) and keep-ratio resize with
        OpenCV bilinear on uint8."""
        return PreparedImage(resize_keep_ratio(load_image(image), self.entry.arch.preprocess))

    @torch.inference_mode()
    def infer(self, prepared: Sequence[PreparedImage]) -> list[DetectionResult]:
        """Run the model on prepared images; results keep the input order.

        Per image, or (``batched_forward``) one forward per group of images of one padded shape:
        GeneralizedAttention attends over the padding, so padding an image further would change
        its detections.
        """
        if not self.batched_forward:
            return [self._forward([item])[0] for item in prepared]
        results: list[DetectionResult | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(prepared):
            groups.setdefault(item.padded_shape, []).append(index)
        for indices in groups.values():
            for i, result in zip(indices, self._forward([prepared[i] for i in indices])):
                results[i] = result
        return [r for r in results if r is not None]

    def collate(self, prepared: Sequence[PreparedImage]) -> ImageBatch:
        """The model's input for prepared images: normalised, padded, channels-last, on the device."""
        batch = collate([item.resized for item in prepared], self.entry.arch.preprocess, self.device)
        return dataclasses.replace(batch, tensor=batch.tensor.contiguous(memory_format=torch.channels_last))

    def _forward(self, prepared: Sequence[PreparedImage]) -> list[DetectionResult]:
        """One forward of images of one padded shape."""
        batch = self.collate(prepared)
        with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32"):
            outputs = self.model(batch)
        return [_to_result(item.resized, boxes, scores, labels) for item, (boxes, scores, labels) in zip(prepared, outputs)]

    def predict(self, image: ImageInput, score_thr: float | None = None) -> DetectionResult:
        """Detections of one image; ``score_thr`` further filters those of the test config (its
        ``roi.score_thr``)."""
        return self.infer([self.prepare(image)])[0].filter(score_thr)


def _to_result(resized: ResizedImage, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> DetectionResult:
    boxes_list: list[list[float]] = boxes.detach().cpu().double().tolist()  # float32 → float64 is exact
    scores_list: list[float] = scores.detach().cpu().double().tolist()
    labels_list: list[int] = labels.detach().cpu().tolist()
    detections = tuple(
        Detection(
            bbox=(float(x1), float(y1), float(x2), float(y2)),
            score=float(score),
            label=int(label),
            category_id=COCO_CATEGORY_IDS[int(label)],
            class_name=COCO_CLASSES[int(label)],
        )
        for (x1, y1, x2, y2), score, label in zip(boxes_list, scores_list, labels_list)
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
    cpu_kernels: str = "fast",
    inference_pass: bool = True,
) -> Detector:
    """Build the detector of ``variant`` (alias or full name) and load its checkpoint.

    Args:
        checkpoint: a ``.pth`` path; default: the registry's file in ``weights_dir``.
        verify_hash: refuse a file whose sha256 does not start with the hex suffix of its name.
        precision: "fp32" (default, mmdet-exact), or opt-in "bf16" / "fp16" autocast.
        cpu_kernels: "fast" (default) or "portable" (the kernels CUDA runs), see ``Detector``.
        inference_pass: False runs the plain model definition (see ``Detector``).

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
    return Detector(
        entry, model, device=resolve_device(device), weights_path=path, sha256=sha256, precision=precision,
        cpu_kernels=cpu_kernels, inference_pass=inference_pass,
    )  # fmt: skip
