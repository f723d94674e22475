"""Valid images of extreme aspect ratio get a 200 through the service (mmdet crashes on them):
whatever the model finds, within the image (an empty list is a fine answer)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from model_zoo import COCO_CLASSES


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("width", "height"), [(1, 3000), (3000, 1), (2, 3000), (3000, 2)])
@pytest.mark.parametrize("route", ["/detect", "/compare"])
def test_extreme_aspect_ratios_get_a_200(client, route, width, height):
    params = {"variant": "attn1111", "score_thr": 0.0} if route == "/detect" else {"score_thr": 0.0}
    response = client.post(route, params=params, content=png(width, height), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (width, height)
    results = body["results"] if route == "/compare" else [body]
    for result in results:
        for detection in result["detections"]:
            x1, y1, x2, y2 = detection["bbox"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert detection["class_name"] == COCO_CLASSES[detection["label"]]
