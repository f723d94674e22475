"""The JSON bodies of the v2 HTTP transport (pydantic): the inference request is validated with
these, the other bodies document the routes. Field names are the specification's."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

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
    shape: list[int] = Field(description="-1: variable (B images, K detections)")


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
        default_factory=dict, description="score_thr, max_dets, classes; binary_data_output, timeout (microseconds)"
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
