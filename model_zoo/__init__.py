"""attnzoo's model zoo: registry, weights, and an mmdet-compatible engine for the four
Empirical Attention Faster R-CNN detectors."""

from model_zoo.errors import (
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
from model_zoo.predictor import (
    Detection,
    DetectionResult,
    Detector,
    PreparedImage,
    load_detector,
    resolve_device,
    weights_path_for,
)
from model_zoo.registry import PublishedFigures, Registry, VariantEntry, default_weights_dir, load_registry
from model_zoo.synth import write_synthetic_checkpoint

__all__ = [
    "AttnzooError",
    "CheckpointError",
    "Detection",
    "DetectionResult",
    "Detector",
    "DownloadError",
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
    "default_weights_dir",
    "load_detector",
    "load_registry",
    "resolve_device",
    "weights_path_for",
    "write_synthetic_checkpoint",
]
