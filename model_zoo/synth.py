"""Deterministic synthetic checkpoints with the official files' exact keys, shapes and layout.

Random weights make a chaotic detector unless a few scales are chosen with care (see the
reference notes): residual branches end in a small BN scale so the stream does not explode,
attention query/key/position projections are small so the softmax stays soft, ``gamma`` and DCN
offsets are non-zero so those paths are exercised, RPN objectness stays below saturation and the
classifier gives top scores well inside (0.05, 1). Detections are then stable under float noise,
so a parity test separates real differences from rounding.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from model_zoo.atomic_files import write_atomic
from model_zoo.categories import COCO_CLASSES
from model_zoo.engine.detector import FasterRCNN, build_detector
from model_zoo.engine.preprocess import collate, resize_keep_ratio
from model_zoo.engine.roi_head import extract_roi_features, proposals_to_rois
from model_zoo.engine.spec import ArchSpec
from model_zoo.registry import VariantEntry

# The classifier is calibrated on one synthetic scene at this test-time scale (long, short).
CALIBRATION_SCALE = (512, 320)
CLASS_LOGIT_STD = 2.5  # spread of a class logit across RoIs
CLASS_LOGIT_OFFSET = 9.0  # mean class logit below the background logit


def synthetic_state_dict(arch: ArchSpec, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    """A well-conditioned state dict for ``arch``; the same seed gives the same tensors."""
    generator = torch.Generator().manual_seed(seed)
    model = build_detector(arch)
    state = OrderedDict((key, _init(key, tuple(v.shape), v.dtype, generator)) for key, v in model.state_dict().items())
    model.load_state_dict(state)
    weight, bias = _calibrated_classifier(model, arch, generator, seed)
    state["roi_head.bbox_head.fc_cls.weight"], state["roi_head.bbox_head.fc_cls.bias"] = weight, bias
    return state


def calibration_image(seed: int) -> np.ndarray:
    """A smooth random BGR uint8 scene (427, 640, 3) with two solid shapes."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (427, 640, 3), dtype=np.uint8), (0, 0), 3)
    cv2.rectangle(image, (100, 100), (300, 300), (0, 0, 255), -1)
    cv2.circle(image, (450, 200), 80, (255, 200, 0), -1)
    return image


@torch.inference_mode()
def _calibrated_classifier(
    model: FasterRCNN, arch: ArchSpec, generator: torch.Generator, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """fc_cls weights whose class logits, on a calibration scene, spread by CLASS_LOGIT_STD across
    RoIs around CLASS_LOGIT_OFFSET below the background: few detections, scores well inside (0.05, 1)."""
    preprocess = dataclasses.replace(arch.preprocess, scale=CALIBRATION_SCALE)
    batch = collate([resize_keep_ratio(calibration_image(seed), preprocess)], preprocess, "cpu")
    stages = model.forward_stages(batch)
    roi_spec = arch.roi
    roi_head = model.roi_head
    hidden = extract_roi_features(stages.features, proposals_to_rois(stages.proposals), roi_head.roi_layers, roi_spec)
    hidden = roi_head.bbox_head.flatten(hidden)
    for fc in roi_head.bbox_head.shared_fcs:
        hidden = torch.relu(fc(hidden))  # (K, fc_out_channels)
    mean = hidden.mean(0)
    weight = torch.randn((roi_spec.num_classes + 1, hidden.size(1)), generator=generator)
    spread = ((hidden - mean) @ weight.T).std(0).clamp_min(1e-6)  # (num_classes + 1,)
    weight = weight * (CLASS_LOGIT_STD / spread)[:, None]
    bias = -(weight @ mean) - CLASS_LOGIT_OFFSET
    weight[-1], bias[-1] = 0.0, 0.0  # background: logit 0
    return weight, bias


def _normal(shape: tuple[int, ...], std: float, generator: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * std + mean


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def _fan_in_std(shape: tuple[int, ...], gain: float = math.sqrt(2.0)) -> float:
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return gain / math.sqrt(fan_in)


def _init(key: str, shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator) -> torch.Tensor:  # noqa: C901
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return torch.tensor(0, dtype=dtype)
    if ".gen_attention_block." in key:
        return _init_attention(key, name, shape, g)
    if ".conv_offset." in key:  # DCN offsets of about a pixel
        return _normal(shape, 0.3, g) if name == "bias" else _normal(shape, 0.02 / math.sqrt(shape[1]), g)
    if ".bn" in key or key.startswith("backbone.bn") or ".downsample.1." in key:
        return _init_batch_norm(key, name, shape, g)
    if key.startswith("rpn_head.rpn_cls"):  # objectness of the best anchors well below saturation
        return _normal(shape, 0.02, g) if name == "weight" else _normal(shape, 0.3, g, mean=-1.0)
    if key.startswith("rpn_head.rpn_reg"):
        return _normal(shape, 0.002, g) if name == "weight" else torch.zeros(shape)
    if key.startswith("roi_head.bbox_head.fc_cls"):  # replaced by _calibrated_classifier
        return torch.zeros(shape)
    if key.startswith("roi_head.bbox_head.fc_reg"):
        return _normal(shape, 0.002, g) if name == "weight" else _normal(shape, 0.05, g)
    if name == "bias":
        return _normal(shape, 0.01, g)
    return _normal(shape, _fan_in_std(shape), g)


def _init_batch_norm(key: str, name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    branch_end = ".bn3." in key or ".downsample.1." in key
    if name == "weight":
        return _uniform(shape, 0.1, 0.3, g) if branch_end else _uniform(shape, 0.6, 1.0, g)
    if name == "bias":
        return _normal(shape, 0.05, g)
    if name == "running_mean":
        return _normal(shape, 0.1, g)
    return _uniform(shape, 0.5, 1.5, g)  # running_var


def _init_attention(key: str, name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if name == "gamma":
        return torch.full(shape, 0.5)
    if name in ("appr_bias", "geom_bias"):
        return _normal(shape, 0.3, g)
    # Strong enough that a mistake in any attention term moves the detections (parity must see
    # it), soft enough that the softmax is not one-hot (detections stay stable under float noise).
    if ".query_conv." in key:
        return _normal(shape, 0.3 / shape[1], g)
    if ".key_conv." in key:
        return _normal(shape, 30.0 / shape[1], g)
    if ".appr_geom_fc_" in key:
        return _normal(shape, 10.0 / shape[1], g)
    if ".proj_conv." in key and name == "bias":
        return _normal(shape, 0.01, g)
    return _normal(shape, _fan_in_std(shape, gain=1.0), g)


def synthetic_checkpoint(arch: ArchSpec, seed: int = 0, *, variant: str = "") -> dict[str, Any]:
    """The checkpoint object: ``{'meta': plain values, 'state_dict': tensors}`` like the official files."""
    return {
        "meta": {
            "mmdet_version": "2.0.0",
            "CLASSES": tuple(COCO_CLASSES),
            "epoch": 12,
            "iter": 87960,
            "config": f"# synthetic attnzoo checkpoint, variant {variant or 'unknown'}, seed {seed}\n",
            "synthetic": True,
            "seed": seed,
        },
        "state_dict": synthetic_state_dict(arch, seed),
    }


def synthetic_checkpoint_file(arch: ArchSpec, seed: int = 0, *, variant: str = "") -> memoryview:
    """The bytes of the checkpoint file, serialised in memory: ``torch.save`` into a file reports a
    full disk as a bare RuntimeError and leaves half a file, a write of these bytes an OSError."""
    buffer = io.BytesIO()
    torch.save(synthetic_checkpoint(arch, seed, variant=variant), buffer)
    return buffer.getbuffer()


def write_synthetic_checkpoint(entry_or_arch: VariantEntry | ArchSpec, path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a synthetic checkpoint for a registry entry (or an ArchSpec) to ``path``, whole or not
    at all (:func:`~model_zoo.atomic_files.write_atomic`; a full disk is an OSError naming ``path``)."""
    if isinstance(entry_or_arch, VariantEntry):
        arch, variant = entry_or_arch.arch, entry_or_arch.alias
    else:
        arch, variant = entry_or_arch, ""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, synthetic_checkpoint_file(arch, seed, variant=variant))
    return path
