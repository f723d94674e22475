"""Response bodies (pydantic), as the OpenAPI docs show them.

``DetectionOut`` is the detection object of ``attnzoo predict`` (``Detection.to_dict()``), field
for field and in the same order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# model_zoo.WeightsSource, or None while the variant is not loaded
WeightsSourceOut = Annotated[
    Literal["official", "synthetic", "custom"] | None,
    Field(description="official (the published file), synthetic (a --demo stand-in: its detections mean nothing) or custom"),
]


class DetectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read from model_zoo's Detection

    bbox: list[float] = Field(description="[x1, y1, x2, y2] in original-image pixels", min_length=4, max_length=4)
    score: float
    label: int = Field(description="contiguous label 0..79 (mmdet order)")
    category_id: int = Field(description="COCO category id")
    class_name: str


class TimingsOut(BaseModel):
    """Milliseconds per stage; ``model`` is the forward of the batch this request ran in."""

    queue: float
    preprocess: float = Field(description="decode + checks + resize")
    model: float
    postprocess: float


class DetectResponse(BaseModel):
    variant: str = Field(description="short name of the variant that answered")
    sha256: str | None = Field(description="sha256 of the weights file the detections come from")
    weights_source: WeightsSourceOut = None
    width: int = Field(description="image width in pixels (after EXIF orientation)")
    height: int
    detections: list[DetectionOut] = Field(description="sorted by descending score")
    timings_ms: TimingsOut
    batch_size: int = Field(description="requests that shared the model call")
    budget_met: bool | None = Field(
        None, description="variant=auto: whether the chosen variant's p95 latency fits budget_ms (null otherwise)"
    )


class ErrorResponse(BaseModel):
    error: str = Field(description="machine-readable code, e.g. unknown_variant, invalid_image, overloaded")
    detail: Any = Field(description="what was wrong, in words")
    request_id: str | None = None


class ArchitectureOut(BaseModel):
    config: str
    backbone: str
    attention_type: str | None = Field(description="GeneralizedAttention bits, e.g. '1111' or '0010'")
    attention_stages: list[int]
    dcn: bool
    dcn_stages: list[int]


class PublishedOut(BaseModel):
    box_ap: float | None
    fps: float | None
    inference_ms: float | None
    train_memory_gb: float | None = Field(description="training memory (the table's 'Mem' column)")
    hardware: str | None
    backend: str | None
    batch_size: int | None
    mode: str | None
    resolution: str | None
    training_resources: str | None


class MeasuredOut(BaseModel):
    box_ap: float | None = None
    fps: float | None = None
    fps_end_to_end: float | None = None
    peak_memory_mb: float | None = Field(None, description="peak inference memory")
    device: str | None = None
    images: int | None = None
    source: str = Field(description="the results file these figures come from")
    measured_at: str = Field(description="modification time of that file, UTC ISO 8601")


class MissingWeightsOut(BaseModel):
    """A requested variant's checkpoint that is missing: put ``file`` into the weights dir
    (ATTNZOO_WEIGHTS_DIR, whose path the service logs; answers never show server paths)."""

    file: str = Field(description="the checkpoint's file name, with the sha256 prefix the registry gives it")
    url: str | None = Field(description="where `attnzoo fetch` downloads it from")


class ModelOut(BaseModel):
    variant: str
    name: str
    collection: str | None
    architecture: ArchitectureOut
    published: PublishedOut
    measured: MeasuredOut | None = Field(description="from the eval job's latest table.json, if any")
    state: str = Field(description="loaded, loading or unavailable")
    ready: bool = Field(description="loaded and warmed up: it answers requests now")
    requested: bool = Field(description="among the variants this process was started with (ATTNZOO_VARIANTS)")
    reason: str | None = Field(description="why it is unavailable")
    missing_weights: MissingWeightsOut | None = Field(description="set when it is unavailable because its checkpoint is missing")
    device: str | None
    weights_file: str | None = Field(description="the checkpoint's file name in the weights dir (demo/... for a stand-in)")
    weights_url: str | None
    sha256: str | None
    weights_source: WeightsSourceOut = None
    load_seconds: float | None


class BuildOut(BaseModel):
    """Which build of attnzoo answers (``attnzoo --version``)."""

    version: str = Field(description="the package's version")
    commit: str | None = Field(description="the git commit it runs from (short hash, -dirty with local changes), if a checkout")


class ModelsResponse(BaseModel):
    models: list[ModelOut]
    hint: str | None = Field(description="what to do about missing checkpoints (where to put them; `attnzoo serve --demo`)")
    build: BuildOut


class HealthResponse(BaseModel):
    status: str
    build: BuildOut


class ReadyResponse(BaseModel):
    status: str
    strict: bool = Field(description="ATTNZOO_STRICT_READINESS: ready needs every requested variant (else one)")
    variants: dict[str, str] = Field(description="requested variant → state (loaded, loading, unavailable)")
    reasons: dict[str, str] = Field(description="requested variant that does not answer → why")
    missing_weights: dict[str, MissingWeightsOut] = Field(description="requested variant → where its missing checkpoint goes")
    hint: str | None = Field(description="what to do about missing checkpoints (where to put them; `attnzoo serve --demo`)")


class CompareResult(BaseModel):
    variant: str
    sha256: str | None
    weights_source: WeightsSourceOut = None
    attention_type: str | None = Field(description="GeneralizedAttention bits, e.g. '1111' or '0010'")
    dcn: bool
    published_box_ap: float | None = Field(description="the registry's published COCO box AP")
    detections: list[DetectionOut] = Field(description="sorted by descending score")
    timings_ms: TimingsOut = Field(description="this variant's stages; preprocess is its resize (decoding is shared)")
    latency_ms: float = Field(description="measured latency of this variant: the sum of its stages")
    batch_size: int


class CompareResponse(BaseModel):
    width: int = Field(description="image width in pixels (after EXIF orientation)")
    height: int
    decode_ms: float = Field(description="decoding the upload, once for every variant")
    results: list[CompareResult] = Field(description="one per variant, in registry order, each run alone")


class QueryCell(BaseModel):
    row: int = Field(description="row of the query on the block's feature map")
    col: int


class KeyGrid(BaseModel):
    shape: list[int] = Field(description="[h_kv, w_kv]: the shape of `weights`", min_length=2, max_length=2)
    key_centers_x: list[float] = Field(description="centre of each key column, original-image pixels (w_kv values)")
    key_centers_y: list[float] = Field(description="centre of each key row, original-image pixels (h_kv values)")


class AttentionResponse(BaseModel):
    variant: str
    attention_type: str
    stage: int = Field(description="ResNet stage (1-based) of the GeneralizedAttention block")
    block: int = Field(description="block of that stage (0-based)")
    head: int | None = Field(description="the head whose weights these are; null: the average over heads")
    num_heads: int
    width: int = Field(description="image width in pixels (after EXIF orientation)")
    height: int
    x: float = Field(description="query point, original-image pixels")
    y: float
    query_cell: QueryCell
    query_independent: bool = Field(description="true when the weights are the same for every query point (0010)")
    note: str | None = Field(description="how to read these weights, when there is something to say")
    key_grid: KeyGrid
    weights: list[list[float]] = Field(
        description="[h_kv][w_kv] softmax weights over the key grid (sums to 1; keys over the padding included)"
    )
    timings_ms: dict[str, float] = Field(description="preprocess (decoding) and model (computing the weights)")
