"""Triton's model configuration (``ModelConfig``) of the v2 contract, built once for both places that
declare it: ``attnzoo serve``'s v2 door (``GET /v2/models/{model}/config``, gRPC ``ModelConfig``:
:func:`served_model_config`) and the Triton model repository (``app/triton/model_config.py``
writes it as ``config.pbtxt``, with its Python backend's own parameters).

With ``max_batch_size`` > 0 every tensor's shape is the batch dimension B followed by its
``dims``, which Triton needs to be one dimension at least::

    IMAGE              TYPE_STRING  dims [1]       → [B, 1]     one encoded image per row
    num_detections     TYPE_INT32   dims [1]       → [B, 1]     (reshape []: the model's own is [B])
    detection_boxes    TYPE_FP32    dims [-1, 4]   → [B, K, 4]
    detection_scores   TYPE_FP32    dims [-1]      → [B, K]
    detection_classes  TYPE_INT32   dims [-1]      → [B, K]

``max_batch_size`` is the largest batch of one forward (``ATTNZOO_MAX_BATCH``); the dynamic
batching, queue policy and instance group say how the service batches, queues and places it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from model_zoo import COCO_CLASSES

from ..core.requests import DEFAULT_SCORE_THR
from ..settings import Settings
from .contract import INPUTS, NUM_DETECTIONS, OUTPUTS, TensorSpec
from .proto import grpc_predict_v2_pb2 as pb

InstanceKind = Literal["gpu", "cpu", "auto"]
BACKEND = "attnzoo"  # attnzoo serve's backend: its own engine, not one of Triton's
_DATA_TYPES = {"BYTES": pb.TYPE_STRING, "INT32": pb.TYPE_INT32, "FP32": pb.TYPE_FP32}  # v2 datatype → config data_type
_KINDS = {"gpu": pb.ModelInstanceGroup.KIND_GPU, "cpu": pb.ModelInstanceGroup.KIND_CPU, "auto": pb.ModelInstanceGroup.KIND_AUTO}
_MICROSECONDS = 1_000_000
REQUEST_PARAMETERS = ("score_thr", "max_dets", "classes")  # what each request may set (auto: budget_ms too)


@dataclass(frozen=True)
class Scheduling:
    """How a model is batched, queued and placed (the service's defaults: ``ATTNZOO_*``)."""

    max_batch_size: int = Settings.model_fields["max_batch"].default
    instance_kind: InstanceKind = "gpu"
    instances: int = 1  # per GPU with "gpu" and no ``gpus``, else in all
    gpus: tuple[int, ...] = ()  # the GPUs of a "gpu" instance; empty: every GPU
    max_queue_delay_us: int = round(Settings.model_fields["max_wait_ms"].default * 1000)
    max_queue_size: int = Settings.model_fields["queue_size"].default
    queue_timeout_us: int = round(Settings.model_fields["request_timeout_s"].default * _MICROSECONDS)

    @classmethod
    def of_service(cls, settings: Settings, device: str) -> Scheduling:
        """``attnzoo serve``'s: its settings, one instance on ``device`` (``cpu``, ``cuda:N``, or
        ``auto`` for a variant not loaded on a service that chooses its device)."""
        kind: InstanceKind = "cpu" if device == "cpu" else "auto" if device == "auto" else "gpu"
        return cls(
            max_batch_size=settings.max_batch,
            instance_kind=kind,
            gpus=(int(device.partition(":")[2] or 0),) if kind == "gpu" else (),
            max_queue_delay_us=round(settings.max_wait_ms * 1000),
            max_queue_size=settings.queue_size,
            queue_timeout_us=round(settings.request_timeout_s * _MICROSECONDS),
        )


def model_config(name: str, *, backend: str, scheduling: Scheduling, parameters: Mapping[str, str]) -> pb.ModelConfig:
    """The configuration of model ``name``: the v2 contract's tensors, the batching and placing of
    ``scheduling``, and ``parameters`` (strings, as Triton's configuration holds them)."""
    return pb.ModelConfig(
        name=name,
        backend=backend,
        max_batch_size=scheduling.max_batch_size,
        input=[pb.ModelInput(name=spec.name, data_type=_DATA_TYPES[spec.datatype], dims=_dims(spec)) for spec in INPUTS],
        output=[_output(spec) for spec in OUTPUTS],
        dynamic_batching=pb.ModelDynamicBatching(
            preferred_batch_size=[scheduling.max_batch_size],
            max_queue_delay_microseconds=scheduling.max_queue_delay_us,
            default_queue_policy=pb.ModelQueuePolicy(
                timeout_action=pb.ModelQueuePolicy.REJECT,
                default_timeout_microseconds=scheduling.queue_timeout_us,
                allow_timeout_override=True,  # the request parameter `timeout`
                max_queue_size=scheduling.max_queue_size,
            ),
        ),
        instance_group=[pb.ModelInstanceGroup(kind=_KINDS[scheduling.instance_kind], count=scheduling.instances, gpus=scheduling.gpus)],
        parameters={key: pb.ModelParameter(string_value=value) for key, value in parameters.items()},
    )


def variant_parameters(alias: str, full_name: str) -> dict[str, str]:
    """What a client may want of a variant's configuration: its names, the 80 class names in label
    order (comma-separated; ``detection_classes`` indexes them), and the request parameters it
    takes with the default of the one that has one."""
    return {
        "variant": alias,
        "full_name": full_name,
        "class_names": ",".join(COCO_CLASSES),
        "request_parameters": ",".join(REQUEST_PARAMETERS),
        "default_score_thr": str(DEFAULT_SCORE_THR),
    }


def served_model_config(name: str, scheduling: Scheduling, parameters: Mapping[str, str]) -> pb.ModelConfig:
    """``attnzoo serve``'s configuration of model ``name`` (a variant, or ``auto``): backend
    ``attnzoo``, its one version, its one instance group named as Triton names them, and no
    pinned memory."""
    config = model_config(name, backend=BACKEND, scheduling=scheduling, parameters=parameters)
    config.version_policy.latest.num_versions = 1
    config.optimization.input_pinned_memory.enable = False
    config.optimization.output_pinned_memory.enable = False
    config.instance_group[0].name = f"{name}_0"
    return config


def _dims(spec: TensorSpec) -> Sequence[int]:
    """``spec``'s shape without B."""
    return spec.shape[1:]


def _output(spec: TensorSpec) -> pb.ModelOutput:
    output = pb.ModelOutput(name=spec.name, data_type=_DATA_TYPES[spec.datatype], dims=_dims(spec))
    if spec.name == NUM_DETECTIONS:
        output.reshape.SetInParent()  # the model's own is [B]: Triton shows it as [B, 1]
    return output
