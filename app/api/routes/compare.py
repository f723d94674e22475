"""POST /compare: one image through several variants, side by side (JSON, or a grid of drawn panels).

The image is decoded once; then each variant runs it in turn, through its own batcher, like a
``/detect`` request. One after the other, not all at once, so that each variant's measured latency
is its own and not a share of a contended CPU or GPU.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, Request, Response

from model_zoo import draw_detections, grid, titled

from ...core.errors import InvalidParameterError, NoVariantLoadedError
from ...core.requests import DEFAULT_SCORE_THR, DetectOutcome, DetectParams, parse_classes
from ...core.ticket import Ticket
from ...error_bodies import CLIENT_CLOSED
from ...error_table import MODEL_ERRORS, UPLOAD_ERRORS, error_responses
from ...server.dependencies import ServiceDep
from ...server.disconnect import unless_disconnected
from ..deps import TicketsDep
from ..image_responses import IMAGE_RESPONSES, FormatQuery, ResponseFormat, image_response, negotiate
from ..schemas import CompareResponse
from ..upload import read_image_bytes
from .image_request import IMAGE_OPENAPI, VARY, ClassesQuery, MaxDetsQuery, ScoreThrQuery

GRID_COLUMNS = 2
MIN_PANEL_WIDTH = 360  # pixels; narrower drawings are enlarged so that their titles fit
STAND_IN_MARK = "synthetic weights"  # how a panel of stand-in weights is titled

router = APIRouter(
    prefix="/compare",
    tags=["compare"],
    responses=error_responses(*MODEL_ERRORS, *UPLOAD_ERRORS, InvalidParameterError, NoVariantLoadedError),
)


@router.post(
    "",
    response_model=CompareResponse,
    summary="Run one image through every loaded variant (or those named)",
    openapi_extra=IMAGE_OPENAPI,
    responses=IMAGE_RESPONSES,
)
async def compare(
    request: Request,
    response: Response,
    tickets: TicketsDep,
    service: ServiceDep,
    score_thr: ScoreThrQuery = DEFAULT_SCORE_THR,
    max_dets: MaxDetsQuery = None,
    classes: ClassesQuery = None,
    response_format: FormatQuery = None,
) -> Any:
    fmt = negotiate(response_format, request.headers.get("accept"))
    params = DetectParams(score_thr, max_dets, parse_classes(classes))
    data = await read_image_bytes(request)
    compared = await unless_disconnected(request, service.compare(tickets, data, params))
    if compared is None:
        return Response(status_code=CLIENT_CLOSED)
    outcomes, decode_s = compared
    image = outcomes[0].images[0].image
    pairs = list(zip(tickets, outcomes))
    if fmt is not ResponseFormat.JSON:
        return await image_response(lambda: comparison_image(image, pairs), fmt, VARY)
    response.headers.update(VARY)
    height, width = image.shape[:2]
    return {"width": width, "height": height, "decode_ms": decode_s * 1000.0, "results": [_result(t, o) for t, o in pairs]}


def latency_ms(outcome: DetectOutcome) -> float:
    return outcome.images[0].latency_s * 1000.0


def _result(ticket: Ticket, outcome: DetectOutcome) -> dict[str, Any]:
    entry = ticket.served.entry
    image = outcome.images[0]
    return {
        "variant": outcome.variant,
        "sha256": outcome.sha256,
        "weights_source": outcome.weights_source,
        "attention_type": entry.arch.attention_type,
        "dcn": entry.arch.with_dcn,
        "published_box_ap": entry.published.box_ap,
        "detections": image.result.detections,
        "timings_ms": {stage: seconds * 1000.0 for stage, seconds in image.seconds.items()},
        "latency_ms": latency_ms(outcome),
        "batch_size": image.batch_size,
    }


def comparison_image(image: np.ndarray, pairs: list[tuple[Ticket, DetectOutcome]]) -> np.ndarray:
    """A grid of panels, one per variant: its detections drawn, titled with the variant (and a
    mark when its weights are stand-ins), then its published box AP and measured latency (two
    title bars, so that they fit a narrow image)."""
    panels = []
    for ticket, outcome in pairs:
        panel = draw_detections(image, outcome.images[0].result.detections)
        if panel.shape[1] < MIN_PANEL_WIDTH:
            factor = MIN_PANEL_WIDTH / panel.shape[1]
            panel = cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        box_ap = ticket.served.entry.published.box_ap
        published = f"published AP {box_ap:.1f}" if box_ap is not None else "published AP n/a"
        panels.append(titled(titled(panel, f"{published} | {latency_ms(outcome):.0f} ms"), panel_name(outcome)))
    return grid(panels, columns=GRID_COLUMNS)


def panel_name(outcome: DetectOutcome) -> str:
    """A panel's title: the variant, marked when its weights are stand-ins (``--demo``)."""
    return outcome.variant if outcome.weights_source != "synthetic" else f"{outcome.variant} ({STAND_IN_MARK})"
