"""POST /detect: one image in, the variant's detections out (schema of ``attnzoo predict``), as
JSON or drawn on the image (``format=image`` or ``Accept: image/png`` / ``image/jpeg``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from model_zoo import draw_detections

from ..admission import place_for
from ..deps import MetricsDep, RecordDep, SettingsDep, VariantDep
from ..disconnect import unless_disconnected
from ..errors import CLIENT_CLOSED, MODEL_ERRORS, UPLOAD_ERRORS, error_responses
from ..image_responses import FormatQuery, ResponseFormat, image_response, negotiate
from ..schemas import DetectResponse
from ..upload import read_image_bytes
from ..variant_core import DEFAULT_SCORE_THR, DetectParams, InvalidParameterError, parse_classes
from .image_request import IMAGE_ROUTE, VARY, ClassesQuery, MaxDetsQuery, ScoreThrQuery

router = APIRouter(
    prefix="/detect", tags=["detect"], responses=error_responses(*MODEL_ERRORS, *UPLOAD_ERRORS, InvalidParameterError)
)


@router.post(
    "",
    response_model=DetectResponse,
    summary="Detect objects in one image",
    **IMAGE_ROUTE,
)
async def detect(
    request: Request,
    response: Response,
    core: VariantDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    record: RecordDep,
    score_thr: ScoreThrQuery = DEFAULT_SCORE_THR,
    max_dets: MaxDetsQuery = None,
    classes: ClassesQuery = None,
    response_format: FormatQuery = None,
) -> Any:
    fmt = negotiate(response_format, request.headers.get("accept"))
    params = DetectParams(score_thr, max_dets, parse_classes(classes))
    # before reading the body (when not already at the request's head): an overloaded service
    # refuses at once; else the place is held from then
    with place_for(request, core, settings.request_timeout_s) as place, metrics.inflight.labels(core.variant).track_inprogress():
        data = await read_image_bytes(request)
        outcome = await unless_disconnected(request, core.detect(data, params, place.deadline, place.admission))
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening; for the log and metrics
    metrics.observe_stages(core.variant, outcome.seconds)
    record.batch_size = outcome.batch_size
    if fmt is not ResponseFormat.JSON:
        return await image_response(lambda: draw_detections(outcome.image, outcome.result.detections), fmt, VARY)
    response.headers.update(VARY)
    return DetectResponse(
        variant=core.variant,
        sha256=core.sha256,
        weights_source=core.weights_source,
        width=outcome.result.width,
        height=outcome.result.height,
        detections=outcome.result.detections,
        timings_ms={stage: seconds * 1000.0 for stage, seconds in outcome.seconds.items()},
        batch_size=outcome.batch_size,
        budget_met=record.budget_met,
    )
