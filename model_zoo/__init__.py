"""attnzoo's model zoo: registry, weights, and an mmdet-compatible engine for the four
Empirical Attention Faster R-CNN detectors.

The public names below are imported explicitly. Those of the modules that need torch
(``predictor``, ``attention_maps``, ``synth``) or OpenCV (``images``, ``visualize``) are imported
when first used, so that ``import model_zoo`` (and with it ``attnzoo models``, ``fetch`` or
``--help``) does not pay for importing them: their ``from ... import`` under ``TYPE_CHECKING`` gives
type checkers and editors the real names, and :func:`__getattr__` imports them at run time from
:data:`_ON_FIRST_USE`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from model_zoo.categories import COCO_CATEGORY_IDS, COCO_CLASSES, LABEL_BY_CATEGORY_ID, LABEL_BY_NAME
from model_zoo.demo_weights import WeightsSource, demo_weights_dir, ensure_demo_weights, weights_or_stand_in, weights_source
from model_zoo.detections import Detection, DetectionResult
from model_zoo.errors import (
    AttentionQueryError,
    AttnzooError,
    CheckpointError,
    DownloadError,
    HashMismatchError,
    ImageDecodeError,
    MetafileError,
    UnknownVariantError,
    WeightsError,
    WeightsMissingError,
)
from model_zoo.registry import (
    PublishedFigures,
    Registry,
    VariantEntry,
    default_weights_dir,
    existing_weights_path,
    load_registry,
    weights_path_for,
)
from model_zoo.runtime import keep_freed_memory, release_freed_memory
from model_zoo.version import BuildInfo, build_info
from model_zoo.weights import FetchResult, WeightsStatus, fetch_weights, hash_prefix_of, sha256_file, verify_weights, weights_status

if TYPE_CHECKING:
    from model_zoo.attention_maps import AttentionMap, attention_blocks, attention_map, check_attention_query
    from model_zoo.images import decode_image_bytes, load_image
    from model_zoo.predictor import Detector, PreparedImage, load_detector, resolve_device
    from model_zoo.synth import write_synthetic_checkpoint
    from model_zoo.visualize import class_color, draw_detections, draw_heatmap, grid, titled

_ON_FIRST_USE = {
    "AttentionMap": "model_zoo.attention_maps",
    "attention_blocks": "model_zoo.attention_maps",
    "attention_map": "model_zoo.attention_maps",
    "check_attention_query": "model_zoo.attention_maps",
    "decode_image_bytes": "model_zoo.images",
    "load_image": "model_zoo.images",
    "Detector": "model_zoo.predictor",
    "PreparedImage": "model_zoo.predictor",
    "load_detector": "model_zoo.predictor",
    "resolve_device": "model_zoo.predictor",
    "write_synthetic_checkpoint": "model_zoo.synth",
    "class_color": "model_zoo.visualize",
    "draw_detections": "model_zoo.visualize",
    "draw_heatmap": "model_zoo.visualize",
    "grid": "model_zoo.visualize",
    "titled": "model_zoo.visualize",
}

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "LABEL_BY_CATEGORY_ID",
    "LABEL_BY_NAME",
    "AttentionMap",
    "AttentionQueryError",
    "AttnzooError",
    "BuildInfo",
    "CheckpointError",
    "Detection",
    "DetectionResult",
    "Detector",
    "DownloadError",
    "FetchResult",
    "HashMismatchError",
    "ImageDecodeError",
    "MetafileError",
    "PreparedImage",
    "PublishedFigures",
    "Registry",
    "UnknownVariantError",
    "VariantEntry",
    "WeightsError",
    "WeightsMissingError",
    "WeightsSource",
    "WeightsStatus",
    "attention_blocks",
    "attention_map",
    "build_info",
    "check_attention_query",
    "class_color",
    "decode_image_bytes",
    "default_weights_dir",
    "demo_weights_dir",
    "draw_detections",
    "draw_heatmap",
    "ensure_demo_weights",
    "existing_weights_path",
    "fetch_weights",
    "grid",
    "hash_prefix_of",
    "keep_freed_memory",
    "load_detector",
    "load_image",
    "load_registry",
    "release_freed_memory",
    "resolve_device",
    "sha256_file",
    "titled",
    "verify_weights",
    "weights_or_stand_in",
    "weights_path_for",
    "weights_source",
    "weights_status",
    "write_synthetic_checkpoint",
]


def __getattr__(name: str) -> Any:
    """A name of :data:`_ON_FIRST_USE`, imported from its module on first use."""
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'model_zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ON_FIRST_USE))
