"""POST /attention: where one GeneralizedAttention block looks from a query point of an image.

The weights are captured from the block's own forward (``model_zoo.attention_maps``): the probe
sits on the variant's shared module, so the forward runs as an exclusive job of the variant's
batcher, between two ``/detect`` batches, never beside one.
"""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from model_zoo import AttentionMap, AttentionQueryError, attention_map, check_attention_query, draw_heatmap

from ..decode import decode_upload
from ..deps import MetricsDep, PoolDep, SettingsDep
from ..middleware import CLIENT_CLOSED
from ..pipeline import await_batch
from ..render import IMAGE_RESPONSES, FormatQuery, ResponseFormat, image_response, negotiate
from ..schemas import AttentionResponse, ErrorResponse
from ..upload import read_image_bytes
from .detect import REQUEST_BODY, VARY, client_gone

QUERY_INDEPENDENT_NOTE = (
    "attention type {type}: the weights do not depend on the query point (only the key content "
    "counts), so every query point of this image gets this same map"
)

router = APIRouter(
    prefix="/attention",
    tags=["attention"],
    responses={
        status: {"model": ErrorResponse, "description": description}
        for status, description in {
            400: "empty body",
            404: "unknown variant (the body lists the valid ones)",
            413: "body or image too large",
            415: "unsupported Content-Type or image format",
            422: "invalid image or parameter; invalid_attention_query: a stage, block, head or point the variant cannot answer",
            429: "queue full (see Retry-After)",
            503: "variant not loaded (see Retry-After)",
            504: "deadline passed before the model answered",
        }.items()
    },
)


@router.post(
    "",
    response_model=AttentionResponse,
    summary="Attention weights of one block for one query point, as JSON or a heat map",
    openapi_extra={"requestBody": REQUEST_BODY},
    responses=IMAGE_RESPONSES,
)
async def attention(
    request: Request,
    response: Response,
    pool: PoolDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    variant: Annotated[str, Query(description="short or full variant name, e.g. attn1111")],
    x: Annotated[float, Query(ge=0, description="query point, original-image pixels from the left")],
    y: Annotated[float, Query(ge=0, description="query point, original-image pixels from the top")],
    stage: Annotated[int | None, Query(description="ResNet stage (1-based) with attention; default: the first")] = None,
    block: Annotated[int, Query(ge=0, description="block of that stage (0-based)")] = 0,
    head: Annotated[int | None, Query(ge=0, description="one head's weights; default: the average over heads")] = None,
    response_format: FormatQuery = None,
) -> Any:
    deadline = time.monotonic() + settings.request_timeout_s
    fmt = negotiate(response_format, request.headers.get("accept"))
    request.state.variant = pool.resolve(variant).variant
    slot = pool.loaded(variant)
    detector = slot.detector
    assert detector is not None and slot.batcher is not None  # a loaded slot has both
    stage = check_attention_query(detector, stage, block, head)
    with metrics.inflight.labels(slot.variant).track_inprogress():
        data = await read_image_bytes(request)
        image = (await run_in_threadpool(decode_upload, data, max_pixels=settings.max_pixels)).pixels
        job = functools.partial(attention_map, detector, image, stage=stage, block=block, x=x, y=y)
        outcome = await await_batch(
            slot.batcher.run_exclusive(job, deadline),
            deadline,
            lambda: client_gone(request),
            passthrough=(AttentionQueryError,),
        )
    if outcome is None:
        return Response(status_code=CLIENT_CLOSED)
    amap: AttentionMap = outcome.result
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
        "timings_ms": {"queue": outcome.queue_s * 1000.0, "model": outcome.model_s * 1000.0},
    }


def heatmap_image(image: np.ndarray, amap: AttentionMap, weights: np.ndarray) -> np.ndarray:
    """``weights`` (h_kv, w_kv) over ``image`` with the query marked; key cells whose centres fall
    on the padding (outside the image) are cropped, so the map lines up with the image."""
    height, width = image.shape[:2]
    inside = weights[amap.key_centers_y < height][:, amap.key_centers_x < width]
    return draw_heatmap(image, inside, amap.query_xy)

