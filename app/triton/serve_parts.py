"""What a Triton-hosted variant shares with ``attnzoo serve``, imported from the service in this one
place: the v2 contract (input, outputs, version), the request parameters and their errors, the
upload decoding and its limits, the output tensors, the warm-up forward and the settings' defaults.

The rest of ``app.triton`` names these through this module only.
"""

from __future__ import annotations

from ..decode import UploadError, decode_upload
from ..model_pool import _warm_up as warm_up
from ..oip.inference import detection_outputs, parse_parameters
from ..oip.metadata import IMAGE_INPUT, INPUTS, MODEL_VERSION, OUTPUT_BY_NAME, OUTPUTS, TensorSpec
from ..settings import Settings
from ..variant_core import DEFAULT_SCORE_THR, DetectOutcome, DetectParams, ImageUnprocessableError, InvalidParameterError

SETTINGS_DEFAULTS = Settings.model_fields  # the service's defaults, read where a Triton model needs one

__all__ = [
    "DEFAULT_SCORE_THR", "IMAGE_INPUT", "INPUTS", "MODEL_VERSION", "OUTPUT_BY_NAME", "OUTPUTS", "SETTINGS_DEFAULTS", "DetectOutcome",
    "DetectParams", "ImageUnprocessableError", "InvalidParameterError", "TensorSpec", "UploadError", "decode_upload",
    "detection_outputs", "parse_parameters", "warm_up",
]  # fmt: skip
