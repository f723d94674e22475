"""A variant's Triton model configuration (``config.pbtxt``): the v2 contract as ``attnzoo serve``
declares it (``app/oip/model_config.py``, shared), for Triton's Python backend, with the parameters
the backend reads back from it.

The file is protobuf text format of the service's own ``ModelConfig`` message (Triton's names and
field numbers), written by protobuf's ``text_format``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from google.protobuf import text_format

from ..oip.contract import NUM_DETECTIONS
from ..oip.model_config import Scheduling, variant_parameters
from ..oip.model_config import model_config as contract_config
from ..oip.proto import grpc_predict_v2_pb2 as pb

__all__ = ["ModelParameters", "Scheduling", "as_triton_output", "model_config", "to_pbtxt"]

BACKEND = "python"


@dataclass(frozen=True)
class ModelParameters:
    """What the backend needs from its configuration, as the model's ``parameters`` (strings in
    Triton's configuration; clients see them in the model config answer), beside those that
    ``attnzoo serve`` declares too (names, class names, request parameters), which the backend
    does not read.
    """

    variant: str  # the alias: the model's name
    full_name: str
    weights_file: str  # the checkpoint's file name in the version folder, its sha256 prefix in the name
    sha256: str  # the checkpoint's whole sha256, checked at load as well as the prefix
    cpu_kernels: str  # "fast" or "portable" (no effect on GPU)
    max_pixels: int  # image width × height limit, checked before decoding
    keep_freed_memory: bool  # glibc malloc keeps freed memory (model_zoo.runtime), as attnzoo serve does
    malloc_arenas: int

    def to_config(self) -> dict[str, str]:
        return {
            **variant_parameters(self.variant, self.full_name),
            "weights_file": self.weights_file,
            "sha256": self.sha256,
            "cpu_kernels": self.cpu_kernels,
            "max_pixels": str(self.max_pixels),
            "keep_freed_memory": json.dumps(self.keep_freed_memory),
            "malloc_arenas": str(self.malloc_arenas),
        }

    @classmethod
    def from_config(cls, parameters: Mapping[str, str]) -> "ModelParameters":
        """Read back what :meth:`to_config` wrote. Raises KeyError or ValueError on a changed file."""
        return cls(
            variant=parameters["variant"],
            full_name=parameters["full_name"],
            weights_file=parameters["weights_file"],
            sha256=parameters["sha256"],
            cpu_kernels=parameters["cpu_kernels"],
            max_pixels=int(parameters["max_pixels"]),
            keep_freed_memory=bool(json.loads(parameters["keep_freed_memory"])),
            malloc_arenas=int(parameters["malloc_arenas"]),
        )


def model_config(parameters: ModelParameters, scheduling: Scheduling) -> pb.ModelConfig:
    """The model configuration of a variant for Triton's Python backend (:func:`to_pbtxt` writes it)."""
    return contract_config(parameters.variant, backend=BACKEND, scheduling=scheduling, parameters=parameters.to_config())


def as_triton_output(name: str, array: np.ndarray) -> np.ndarray:
    """An output tensor of ``attnzoo serve``'s v2 door for a request of IMAGE [B] in the shape
    Triton answers for the [B, 1] it takes: ``num_detections`` [B] becomes [B, 1]."""
    return array.reshape(-1, 1) if name == NUM_DETECTIONS and array.ndim == 1 else array


def to_pbtxt(config: pb.ModelConfig) -> str:
    """``config`` in protobuf text format, as ``config.pbtxt`` holds it."""
    return text_format.MessageToString(config)
