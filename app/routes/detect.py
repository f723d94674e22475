"""POST /detect: one image in, the variant's detections out (schema of ``attnzoo predict``), as
JSON or drawn on the image (``format=image`` or ``Accept: image/png`` / ``image/jpeg``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from model_zoo import draw_detections

from ..deps import MetricsDep, PoolDep, SettingsDep
from ..middleware import CLIENT_CLOSED
from ..pipeline import DetectParams, parse_classes, run_detection
from ..render import IMAGE_RESPONSES, FormatQuery, ResponseFormat, image_response, negotiate
from ..schemas import DetectResponse, ErrorResponse
from ..upload import FILE_FIELD, RAW_MEDIA_TYPES, read_image_bytes

DEFAULT_SCORE_THR = 0.3
VARY = {"Vary": "Accept"}  # the Accept header picks JSON or an image

# the filters of a detection request (shared with /compare)
ScoreThrQuery = Annotated[float, Query(ge=0.0, le=1.0, description="keep detections with score > score_thr")]
MaxDetsQuery = Annotated[int | None, Query(ge=0, description="keep at most this many (highest scores first)")]
ClassesQuery = Annotated[
    list[str] | None,
    Query(description="keep only these classes: COCO names (person) or category ids (1); repeat or comma-separate"),
]

_BINARY = {"type": "string", "format": "binary"}
REQUEST_BODY = {
    "required": True,
    "description": f"the image (JPEG, PNG, WebP, BMP, TIFF, GIF) as multipart field {FILE_FIELD!r} or as the raw body",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": [FILE_FIELD], "properties": {FILE_FIELD: _BINARY}}
        },
        **{media_type: {"schema": _BINARY} for media_type in RAW_MEDIA_TYPES},
    },
}

router = APIRouter(
    prefix="/detect",
    tags=["detect"],
    responses={
        status: {"model": ErrorResponse, "description": description}
        for status, description in {
            400: "empty body",
            404: "unknown variant (the body lists the valid ones)",
            413: "body or image too large",
            415: "unsupported Content-Type or image format",
            422: "invalid image or parameter",
            429: "queue full (see Retry-After)",
            500: "model error (quote the request id)",
            503: "variant not loaded (see Retry-After)",
            504: "deadline passed before the model answered",
        }.items()
    },
)


async def client_gone(request: Request) -> None:
    """Completes when the client disconnects (call once the body has been read)."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - a broken connection is a gone client
        return


@router.post(
    "",
    response_model=DetectResponse,
    summary="Detect objects in one image",
    openapi_extra={"requestBody": REQUEST_BODY},
    responses=IMAGE_RESPONSES,
)
async def detect(
    request: Request,
    response: Response,
    pool: PoolDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    variant: Annotated[str, Query(description="short or full variant name, e.g. attn1111-dcn")],
    score_thr: ScoreThrQuery = DEFAULT_SCORE_THR,
    max_dets: MaxDetsQuery = None,
    classes: ClassesQuery = None,
    response_format: FormatQuery = None,
) -> Any:
    deadline = time.monotonic() + settings.request_timeout_s
    fmt = negotiate(response_format, request.headers.get("accept"))
    slot = pool.resolve(variant)
    request.state.variant = slot.variant
    slot = pool.loaded(variant)
    params = DetectParams(score_thr, max_dets, parse_classes(classes))
    with metrics.inflight.labels(slot.variant).track_inprogress():
        data = await read_image_bytes(request)
        outcome = await run_detection(
            slot.detector,  # type: ignore[arg-type]
            slot.batcher,  # type: ignore[arg-type]
            data,
            params,
            deadline=deadline,
            max_pixels=settings.max_pixels,
            disconnected=lambda: client_gone(request),
        )
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening; for the log and metrics
    metrics.observe_stages(slot.variant, outcome.seconds)
    request.state.batch_size = outcome.batch_size
    if fmt is not ResponseFormat.JSON:
        return await image_response(lambda: draw_detections(outcome.image, outcome.result.detections), fmt, VARY)
    response.headers.update(VARY)
    return {
        "variant": slot.variant,
        "sha256": slot.sha256,
        "width": outcome.width,
        "height": outcome.height,
        "detections": outcome.detections,
        "timings_ms": {stage: seconds * 1000.0 for stage, seconds in outcome.seconds.items()},
        "batch_size": outcome.batch_size,
    }
