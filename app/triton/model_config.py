"""A variant's Triton model configuration (``config.pbtxt``): the v2 contract of ``attnzoo serve``
as Triton declares it, and the parameters the backend reads back from it.

With ``max_batch_size`` > 0 Triton adds the batch dimension B to every tensor and needs at least
one more (``dims`` cannot be empty), so the v2 shapes become::

    IMAGE              TYPE_STRING  dims [1]       → [B, 1]     one encoded image per row
    num_detections     TYPE_INT32   dims [1]       → [B, 1]     (attnzoo serve: [B])
    detection_boxes    TYPE_FP32    dims [-1, 4]   → [B, K, 4]
    detection_scores   TYPE_FP32    dims [-1]      → [B, K]
    detection_classes  TYPE_INT32   dims [-1]      → [B, K]

The file is written as protobuf text format by :func:`to_pbtxt` (a few lines of our own: Triton's
``ModelConfig`` message class ships only with ``tritonclient``, a test dependency here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np

from model_zoo import COCO_CLASSES

from ..core.requests import DEFAULT_SCORE_THR
from ..oip.contract import INPUTS, OUTPUT_BY_NAME, OUTPUTS, TensorSpec
from ..settings import Settings

InstanceKind = Literal["gpu", "cpu"]
_TRITON_TYPES = {"BYTES": "TYPE_STRING", "INT32": "TYPE_INT32", "FP32": "TYPE_FP32"}  # v2 datatype → config data_type
_MICROSECONDS = 1_000_000


class Symbol(str):
    """An enum value in protobuf text format (written bare: ``KIND_CPU``, not ``"KIND_CPU"``)."""


@dataclass(frozen=True)
class ModelParameters:
    """What the backend needs from its configuration, as the model's ``parameters`` (strings in
    Triton's configuration; clients see them in the model config answer).

    ``class_names`` and ``default_score_thr`` are written for clients (as attnzoo serve's model
    metadata parameters); the backend does not read them.
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
            "variant": self.variant,
            "full_name": self.full_name,
            "weights_file": self.weights_file,
            "sha256": self.sha256,
            "cpu_kernels": self.cpu_kernels,
            "max_pixels": str(self.max_pixels),
            "keep_freed_memory": json.dumps(self.keep_freed_memory),
            "malloc_arenas": str(self.malloc_arenas),
            "class_names": ",".join(COCO_CLASSES),
            "default_score_thr": str(DEFAULT_SCORE_THR),
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


@dataclass(frozen=True)
class Scheduling:
    """How Triton batches, queues and places a model (the service's defaults: ``ATTNZOO_*``)."""

    max_batch_size: int = Settings.model_fields["max_batch"].default
    instance_kind: InstanceKind = "gpu"
    instances: int = 1  # per GPU with "gpu", in all with "cpu"
    max_queue_delay_us: int = round(Settings.model_fields["max_wait_ms"].default * 1000)
    max_queue_size: int = Settings.model_fields["queue_size"].default
    queue_timeout_us: int = round(Settings.model_fields["request_timeout_s"].default * _MICROSECONDS)


def model_config(parameters: ModelParameters, scheduling: Scheduling) -> dict[str, Any]:
    """The model configuration as a message (:func:`to_pbtxt` writes it)."""
    return {
        "name": parameters.variant,
        "backend": "python",
        "max_batch_size": scheduling.max_batch_size,
        "input": [_tensor(spec) for spec in INPUTS],
        "output": [_tensor(spec) for spec in OUTPUTS],
        "dynamic_batching": {
            "max_queue_delay_microseconds": scheduling.max_queue_delay_us,
            "default_queue_policy": {
                "timeout_action": Symbol("REJECT"),
                "default_timeout_microseconds": scheduling.queue_timeout_us,
                "allow_timeout_override": True,
                "max_queue_size": scheduling.max_queue_size,
            },
        },
        "instance_group": [{"kind": Symbol(f"KIND_{scheduling.instance_kind.upper()}"), "count": scheduling.instances}],
        "parameters": {key: {"string_value": value} for key, value in parameters.to_config().items()},
    }


def as_triton_output(name: str, array: np.ndarray) -> np.ndarray:
    """An output tensor of ``attnzoo serve``'s v2 door in the shape this configuration declares:
    a [B] tensor (``num_detections``) becomes [B, 1]; the others are unchanged."""
    return array.reshape(-1, 1) if len(OUTPUT_BY_NAME[name].shape) == 1 else array


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    """A v2 tensor (its shape with the batch dimension first) as a config input or output."""
    return {"name": spec.name, "data_type": Symbol(_TRITON_TYPES[spec.datatype]), "dims": _dims(spec)}


def _dims(spec: TensorSpec) -> list[int]:
    """``spec``'s shape without B; one dimension at least, as Triton needs."""
    return list(spec.shape[1:]) or [1]


def to_pbtxt(message: Mapping[str, Any]) -> str:
    """A message (str, int, bool, :class:`Symbol`, nested mappings, lists; a mapping of mappings
    under ``parameters`` is a protobuf map) in protobuf text format."""
    return "\n".join(_fields(message, "")) + "\n"


def _fields(message: Mapping[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    for name, value in message.items():
        if name == "parameters" and isinstance(value, Mapping):  # map<string, ModelParameter>
            for key, entry in value.items():
                lines += [f"{indent}{name} {{", f"{indent}  key: {_scalar(key)}", *_message("value", entry, indent + "  "), f"{indent}}}"]
        elif isinstance(value, Mapping):
            lines += _message(name, value, indent)
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            lines.append(f"{indent}{name} [")
            for index, item in enumerate(value):
                body = _fields(item, indent + "    ")
                lines += [f"{indent}  {{", *body, f"{indent}  }}{',' if index < len(value) - 1 else ''}"]
            lines.append(f"{indent}]")
        elif isinstance(value, list):
            lines.append(f"{indent}{name}: [ {', '.join(_scalar(item) for item in value)} ]")
        else:
            lines.append(f"{indent}{name}: {_scalar(value)}")
    return lines


def _message(name: str, value: Mapping[str, Any], indent: str) -> list[str]:
    return [f"{indent}{name} {{", *_fields(value, indent + "  "), f"{indent}}}"]


def _scalar(value: Any) -> str:
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII with \" and \\ escapes, which text format reads alike
    raise TypeError(f"no text-format scalar for {value!r}")
