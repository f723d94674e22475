"""POST /attention: where one GeneralizedAttention block looks from a query point of an image.

The weights come from the block's own computation on the image (``model_zoo.attention_maps``),
computed without touching the shared model's state, so it runs beside the variant's batches.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response

from model_zoo import AttentionMap, AttentionQueryError, draw_heatmap

from ...core.requests import AttentionQuery
from ...error_bodies import CLIENT_CLOSED
from ...error_table import MODEL_ERRORS, UPLOAD_ERRORS, error_responses
from ...server.dependencies import ServiceDep
from ...server.disconnect import unless_disconnected
from ...server.head_admission import names_variant, query_variant
from ..deps import TicketDep
from ..image_responses import IMAGE_RESPONSES, FormatQuery, ResponseFormat, image_response, negotiate
from ..schemas import AttentionResponse
from ..upload import read_image_bytes
from .image_request import IMAGE_OPENAPI, VARY

QUERY_INDEPENDENT_NOTE = (
    "attention type {type}: the weights do not depend on the query point (only the key content "
    "counts), so every query point of this image gets this same map"
)

router = APIRouter(
    prefix="/attention",
    tags=["attention"],
    responses=error_responses(*MODEL_ERRORS, *UPLOAD_ERRORS, AttentionQueryError),
)


@router.post(
    "",
    response_model=AttentionResponse,
    summary="Attention weights of one block for one query point, as JSON or a heat map",
    openapi_extra=IMAGE_OPENAPI,
    responses=IMAGE_RESPONSES,
)
@names_variant(query_variant)
async def attention(
    request: Request,
    response: Response,
    ticket: TicketDep,
    service: ServiceDep,
    x: Annotated[float, Query(ge=0, description="query point, original-image pixels from the left")],
    y: Annotated[float, Query(ge=0, description="query point, original-image pixels from the top")],
    stage: Annotated[int | None, Query(description="ResNet stage (1-based) with attention; default: the first")] = None,
    block: Annotated[int, Query(ge=0, description="block of that stage (0-based)")] = 0,
    head: Annotated[int | None, Query(ge=0, description="one head's weights; default: the average over heads")] = None,
    response_format: FormatQuery = None,
) -> Any:
    fmt = negotiate(response_format, request.headers.get("accept"))
    query = AttentionQuery(service.check_attention_query(ticket, stage, block, head), block, x, y)
    data = await read_image_bytes(request)
    outcome = await unless_disconnected(request, service.attention(ticket, data, query))
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)
    amap, image = outcome.attention, outcome.image
    weights = amap.weights[head] if head is not None else amap.mean_weights  # (h_kv, w_kv)
    if fmt is not ResponseFormat.JSON:
        return await image_response(lambda: heatmap_image(image, amap, weights), fmt, VARY)
    response.headers.update(VARY)
    height, width = image.shape[:2]
    return {
        "variant": amap.variant,
        "attention_type": amap.attention_type,
        "stage": amap.stage,
        "block": amap.block,
        "head": head,
        "num_heads": int(amap.weights.shape[0]),
        "width": width,
        "height": height,
        "x": x,
        "y": y,
        "query_cell": {"row": amap.query_cell[0], "col": amap.query_cell[1]},
        "query_independent": amap.query_independent,
        "note": QUERY_INDEPENDENT_NOTE.format(type=amap.attention_type) if amap.query_independent else None,
        "key_grid": {
            "shape": list(weights.shape),
            "key_centers_x": amap.key_centers_x.tolist(),
            "key_centers_y": amap.key_centers_y.tolist(),
        },
        "weights": weights.tolist(),
        "timings_ms": {stage_name: seconds * 1000.0 for stage_name, seconds in outcome.seconds.items()},
    }


def heatmap_image(image: np.ndarray, amap: AttentionMap, weights: np.ndarray) -> np.ndarray:
    """``weights`` (h_kv, w_kv) over ``image`` with the query marked; key cells whose centres fall
    on the padding (outside the image) are cropped, so the map lines up with the image."""
    height, width = image.shape[:2]
    inside = weights[amap.key_centers_y < height][:, amap.key_centers_x < width]
    return draw_heatmap(image, inside, amap.query_xy)

