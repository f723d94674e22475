"""Drawn answers of POST /detect (format=image, Accept) and the format negotiation behind them."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from app.api.image_responses import ResponseFormat, negotiate, parse_accept, quality_of
from model_zoo import Detection, load_image
from model_zoo.visualize import class_color, draw_detections

VARIANT = "attn0010"


@pytest.mark.parametrize(
    ("requested", "accept", "expected"),
    [
        (None, None, "json"),
        (None, "*/*", "json"),
        (None, "application/json", "json"),
        (None, "image/png", "png"),
        (None, "image/jpeg", "jpeg"),
        (None, "image/jpeg, image/png;q=0.5", "jpeg"),
        (None, "application/json;q=0.4, image/*", "png"),
        (None, "image/avif,image/webp,image/*,*/*;q=0.8", "png"),  # what a browser's <img> sends
        (None, "text/html", "json"),  # nothing we offer: JSON, not 406
        ("json", "image/png", "json"),
        ("image", None, "png"),
        ("image", "image/jpeg", "jpeg"),
        ("image", "application/json", "png"),
        ("png", "image/jpeg", "png"),
        ("jpeg", None, "jpeg"),
    ],
)
def test_negotiate(requested, accept, expected):
    assert negotiate(requested, accept) is ResponseFormat(expected)


def test_accept_parsing_takes_the_most_specific_range():
    ranges = parse_accept("image/*;q=0.3, image/png;q=0.9, */*;q=0.1, text/plain; q=oops")
    assert ranges == [("image/*", 0.3), ("image/png", 0.9), ("*/*", 0.1), ("text/plain", 1.0)]
    assert quality_of("image/png", ranges) == 0.9
    assert quality_of("image/jpeg", ranges) == 0.3
    assert quality_of("application/json", ranges) == 0.1
    assert quality_of("application/json", parse_accept("image/png")) == 0.0


def post(client: httpx.Client, data: bytes, headers: dict | None = None, **params) -> httpx.Response:
    return client.post(
        "/detect",
        params={"variant": VARIANT, **params},
        content=data,
        headers={"Content-Type": "image/jpeg", **(headers or {})},
    )


def detections_of(body: dict) -> list[Detection]:
    return [Detection(tuple(d["bbox"]), d["score"], d["label"], d["category_id"], d["class_name"]) for d in body["detections"]]


def decode_bgr(data: bytes, expected_format: str) -> np.ndarray:
    """Decode with Pillow (not the OpenCV that encoded it) → BGR uint8."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == expected_format
        return np.asarray(image.convert("RGB"))[:, :, ::-1]


def test_format_image_draws_the_json_detections_on_the_original(client, jpeg):
    body = post(client, jpeg, score_thr=0.3).json()
    response = post(client, jpeg, score_thr=0.3, format="image")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["vary"] == "Accept"
    drawn = decode_bgr(response.content, "PNG")
    assert drawn.shape == (240, 320, 3)  # the original's size, not the model's
    detections = detections_of(body)
    assert len(detections) >= 2
    assert np.array_equal(drawn, draw_detections(load_image(jpeg), detections))
    # the best box is drawn last: its edges have its class colour
    best = detections[0]
    x1, y1, x2, y2 = (round(v) for v in best.bbox)
    color = class_color(best.label)
    assert tuple(drawn[(y1 + y2) // 2, x1]) == color and tuple(drawn[(y1 + y2) // 2, x2]) == color
    assert tuple(drawn[y2, (x1 + x2) // 2]) == color
    assert not np.array_equal(drawn, load_image(jpeg))


def test_the_drawing_uses_the_request_thresholds(client, jpeg):
    original = load_image(jpeg)
    everything = post(client, jpeg, score_thr=0.05).json()
    kept = [d for d in everything["detections"] if d["label"] == everything["detections"][0]["label"]][:2]
    classes = str(kept[0]["category_id"])
    drawn = decode_bgr(post(client, jpeg, score_thr=0.05, classes=classes, max_dets=2, format="png").content, "PNG")
    assert np.array_equal(drawn, draw_detections(original, detections_of({"detections": kept})))
    nothing = decode_bgr(post(client, jpeg, score_thr=1.0, format="image").content, "PNG")
    assert np.array_equal(nothing, original)  # no detection passes score > 1: the image, untouched


@pytest.mark.parametrize(
    ("headers", "params"),
    [({"Accept": "image/jpeg"}, {}), ({"Accept": "image/jpeg"}, {"format": "image"}), ({}, {"format": "jpeg"})],
)
def test_jpeg_answers(client, jpeg, headers, params):
    response = post(client, jpeg, headers=headers, score_thr=0.3, **params)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    drawn = decode_bgr(response.content, "JPEG")
    expected = draw_detections(load_image(jpeg), detections_of(post(client, jpeg, score_thr=0.3).json()))
    assert drawn.shape == expected.shape == (240, 320, 3)
    assert np.abs(drawn.astype(int) - expected.astype(int)).mean() < 4  # lossy, but the same picture


def test_accept_png_alone_asks_for_the_image_and_format_json_wins(client, jpeg):
    png = post(client, jpeg, headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    assert decode_bgr(png.content, "PNG").shape == (240, 320, 3)
    as_json = post(client, jpeg, headers={"Accept": "image/png"}, format="json")
    assert as_json.headers["content-type"] == "application/json" and as_json.json()["variant"] == VARIANT


def test_errors_stay_json_when_an_image_was_asked_for(client, jpeg):
    params = {"variant": "attn9999", "format": "image"}
    response = client.post("/detect", params=params, content=jpeg, headers={"Accept": "image/png"})
    assert response.status_code == 404 and response.json()["error"] == "unknown_variant"
    bad = post(client, jpeg, format="gif")
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_parameter" and "format" in bad.json()["detail"]
