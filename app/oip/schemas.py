"""The JSON bodies of the v2 HTTP transport (pydantic): the inference request is validated with
these, the other bodies document the routes. Field names are the specification's."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

# A parameter value: the specification allows a string, a number or a boolean (no coercion).
ParameterValue = StrictBool | StrictInt | StrictFloat | StrictStr
Parameters = dict[str, ParameterValue]


class V2ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong, in words (the X-Request-ID header identifies the request)")


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: variable (B images, K detections); IMAGE [-1, 1]: B rows of one image")


class ModelMetadataResponse(BaseModel):
    name: str = Field(description="the variant's alias")
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters = Field(description="names, class_names (label order, comma-separated), published_* figures")


class RequestInput(BaseModel):
    name: str
    shape: list[StrictInt]
    datatype: str
    parameters: Parameters = Field(default_factory=dict, description="binary_data_size: its data follows the JSON header")
    data: list[Any] | None = Field(None, description="BYTES: base64 strings")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters = Field(default_factory=dict, description="binary_data: send this output as binary data")


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters = Field(
        default_factory=dict,
        description="score_thr, max_dets, classes (budget_ms for auto); binary_data_output, timeout (microseconds); "
        "Triton's priority, sequence_*, triton_enable_empty_final_response (ignored)",
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] = Field(default_factory=list, description="empty: all four outputs")


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = Field(None, description="binary_data_size when the data follows the JSON header")
    data: list[float] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


# Triton's extensions. The model configuration and statistics answers are Triton's JSON of its
# messages (app/oip/json_messages.py): documented here by the fields a client reads, every other
# field of Triton's messages allowed.


class _TritonMessage(BaseModel):
    model_config = ConfigDict(extra="allow")


class ConfigTensor(_TritonMessage):
    name: str
    data_type: str = Field(description="TYPE_STRING (the protocol's BYTES), TYPE_INT32, TYPE_FP32")
    dims: list[int] = Field(description="the shape after the batch dimension")


class ModelConfigResponse(_TritonMessage):
    name: str
    platform: str
    backend: str = Field(description='"attnzoo": the service\'s own engine')
    max_batch_size: int = Field(description="most images one forward takes (ATTNZOO_MAX_BATCH)")
    input: list[ConfigTensor]
    output: list[ConfigTensor]
    dynamic_batching: dict[str, Any] = Field(description="max_queue_delay_microseconds (ATTNZOO_MAX_WAIT_MS), the queue policy")
    instance_group: list[dict[str, Any]] = Field(description="kind: KIND_CPU, KIND_GPU, or KIND_AUTO before the variant is loaded")
    parameters: dict[str, dict[str, str]] = Field(description="name → {string_value}: names, class_names, request parameters")


class StatisticDuration(BaseModel):
    count: int
    ns: int


class BatchStatistics(_TritonMessage):
    batch_size: int
    compute_input: StatisticDuration
    compute_infer: StatisticDuration
    compute_output: StatisticDuration


class ModelStatistics(_TritonMessage):
    name: str
    version: str
    last_inference: int = Field(description="milliseconds since the epoch of the last successful request; 0: none yet")
    inference_count: int = Field(description="images inferred")
    execution_count: int = Field(description="forwards of the model")
    inference_stats: dict[str, StatisticDuration] = Field(description="success, fail, queue, compute_input, compute_infer, compute_output, ...")
    batch_stats: list[BatchStatistics]


class ModelStatisticsResponse(BaseModel):
    model_stats: list[ModelStatistics]


class RepositoryIndexRequest(BaseModel):
    repository_name: str = Field("", description="ignored: the service has one repository, its registry")
    ready: bool = Field(False, description="true: only the variants that are READY")


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, LOADING or UNAVAILABLE")
    reason: str | None = Field(None, description="why it is UNAVAILABLE")


class RepositoryModelRequest(BaseModel):
    parameters: dict[str, StrictBool | StrictInt | StrictStr] = Field(
        default_factory=dict, description="unload_dependents (unload; ignored); a configuration or files are not taken"
    )
