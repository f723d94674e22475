"""POST /detect: one image in, the variant's detections out (schema of ``attnzoo predict``), as
JSON or drawn on the image (``format=image`` or ``Accept: image/png`` / ``image/jpeg``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from model_zoo import draw_detections

from ...core.errors import InvalidParameterError
from ...core.requests import DEFAULT_SCORE_THR, DetectParams, DetectRequest, parse_classes
from ...error_bodies import CLIENT_CLOSED
from ...error_table import MODEL_ERRORS, UPLOAD_ERRORS, error_responses
from ...server.dependencies import ServiceDep
from ...server.disconnect import unless_disconnected
from ...server.head_admission import names_variant, query_variant
from ..deps import TicketDep
from ..image_responses import IMAGE_RESPONSES, FormatQuery, ResponseFormat, image_response, negotiate
from ..schemas import DetectResponse
from ..upload import read_image_bytes
from .image_request import IMAGE_OPENAPI, VARY, ClassesQuery, MaxDetsQuery, ScoreThrQuery

router = APIRouter(
    prefix="/detect", tags=["detect"], responses=error_responses(*MODEL_ERRORS, *UPLOAD_ERRORS, InvalidParameterError)
)


@router.post(
    "",
    response_model=DetectResponse,
    summary="Detect objects in one image",
    openapi_extra=IMAGE_OPENAPI,
    responses=IMAGE_RESPONSES,
)
@names_variant(query_variant)
async def detect(
    request: Request,
    response: Response,
    ticket: TicketDep,
    service: ServiceDep,
    score_thr: ScoreThrQuery = DEFAULT_SCORE_THR,
    max_dets: MaxDetsQuery = None,
    classes: ClassesQuery = None,
    response_format: FormatQuery = None,
) -> Any:
    fmt = negotiate(response_format, request.headers.get("accept"))
    params = DetectParams(score_thr, max_dets, parse_classes(classes))
    data = await read_image_bytes(request)
    outcome = await unless_disconnected(request, service.detect(ticket, DetectRequest([data], params)))
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening; for the log and metrics
    (image,) = outcome.images
    if fmt is not ResponseFormat.JSON:
        return await image_response(lambda: draw_detections(image.image, image.result.detections), fmt, VARY)
    response.headers.update(VARY)
    return DetectResponse(
        variant=outcome.variant,
        sha256=outcome.sha256,
        weights_source=outcome.weights_source,
        width=image.result.width,
        height=image.result.height,
        detections=image.result.detections,
        timings_ms={stage: seconds * 1000.0 for stage, seconds in image.seconds.items()},
        batch_size=image.batch_size,
        budget_met=ticket.record.budget_met,
    )
