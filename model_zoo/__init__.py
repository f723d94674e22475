"""attnzoo's model zoo: registry, weights, and an mmdet-compatible engine for the four
Empirical Attention Faster R-CNN detectors.

Public names are imported lazily (PEP 562), so ``attnzoo models`` or ``attnzoo fetch`` do not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "model_zoo.categories": ("COCO_CATEGORY_IDS", "COCO_CLASSES", "LABEL_BY_CATEGORY_ID", "LABEL_BY_NAME"),
    "model_zoo.demo_weights": (
        "WeightsSource", "demo_weights_dir", "ensure_demo_weights", "weights_or_stand_in", "weights_source",
    ),
    "model_zoo.images": ("decode_image_bytes", "load_image"),
    "model_zoo.errors": (
        "AttnzooError", "CheckpointError", "DownloadError", "HashMismatchError", "ImageDecodeError",
        "MetafileError", "UnknownVariantError", "WeightsError", "WeightsMissingError",
    ),
    "model_zoo.predictor": ("Detection", "DetectionResult", "Detector", "PreparedImage", "load_detector", "resolve_device"),
    "model_zoo.runtime": ("keep_freed_memory", "release_freed_memory"),
    "model_zoo.registry": (
        "PublishedFigures", "Registry", "VariantEntry", "default_weights_dir", "existing_weights_path",
        "load_registry", "weights_path_for",
    ),
    "model_zoo.synth": ("write_synthetic_checkpoint",),
    "model_zoo.visualize": ("class_color", "draw_detections", "draw_heatmap", "grid", "titled"),
    "model_zoo.attention_maps": (
        "AttentionMap", "AttentionQueryError", "attention_blocks", "attention_map", "check_attention_query",
    ),
    "model_zoo.weights": (
        "FetchResult", "WeightsStatus", "fetch_weights", "hash_prefix_of", "sha256_file", "verify_weights", "weights_status",
    ),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'model_zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
