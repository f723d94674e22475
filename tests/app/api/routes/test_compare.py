"""POST /compare: one image through every loaded variant (JSON and the panel grid)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model_zoo import Detection, load_image
from model_zoo.visualize import draw_detections
from tests.app.conftest import LOADED_VARIANTS

REGISTRY_ORDER = ["attn1111", "attn0010"]  # the loaded ones, in metafile order
PUBLISHED_BOX_AP = {"attn1111": 40.0, "attn0010": 39.1}  # metafile.yml
GAP = 8  # visualize.grid's default gap


@pytest.fixture(scope="module")
def wide_jpeg(make_scene, encode_image) -> bytes:
    """400x300: wide enough that the panels are not enlarged for their titles."""
    return encode_image(make_scene(400, 300, seed=3))


def detect(client, data: bytes, variant: str, **params) -> dict:
    response = client.post("/detect", params={"variant": variant, **params}, content=data, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    return response.json()


def test_every_loaded_variant_answers_as_detect_would(client, jpeg):
    response = client.post("/compare", params={"score_thr": 0.1}, files={"file": ("scene.jpg", jpeg, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(LOADED_VARIANTS) == sorted(REGISTRY_ORDER)
    assert [r["variant"] for r in body["results"]] == REGISTRY_ORDER
    assert (body["width"], body["height"]) == (320, 240)
    assert body["decode_ms"] > 0
    for result in body["results"]:
        single = detect(client, jpeg, result["variant"], score_thr=0.1)
        assert result["detections"] == single["detections"] and result["detections"]
        assert result["sha256"] == single["sha256"]
        assert result["published_box_ap"] == PUBLISHED_BOX_AP[result["variant"]]
        assert result["attention_type"] == result["variant"][4:] and result["dcn"] is False
        assert set(result["timings_ms"]) == {"queue", "preprocess", "model", "postprocess"}
        assert result["timings_ms"]["model"] > 0
        assert result["latency_ms"] == pytest.approx(sum(result["timings_ms"].values()))
    assert body["results"][0]["detections"] != body["results"][1]["detections"]  # two different models


def test_named_variants_in_the_order_named(client, jpeg):
    one = client.post("/compare", params={"variants": "attn0010"}, content=jpeg).json()
    assert [r["variant"] for r in one["results"]] == ["attn0010"]
    names = [("variants", "attn0010,faster-rcnn_r50_fpn_attention_1111_1x_coco"), ("variants", "attn0010")]
    both = client.post("/compare", params=names, content=jpeg)
    assert [r["variant"] for r in both.json()["results"]] == ["attn0010", "attn1111"]
    assert both.json()["results"][0]["detections"] == detect(client, jpeg, "attn0010")["detections"]


def test_unknown_or_unloaded_variants_are_refused(client, jpeg):
    unknown = client.post("/compare", params={"variants": "attn0010,attn9999"}, content=jpeg)
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_variant"
    assert "attn1111-dcn" in unknown.json()["valid"]
    unloaded = client.post("/compare", params={"variants": "attn0010,attn1111-dcn"}, content=jpeg)
    assert unloaded.status_code == 404 and unloaded.json()["error"] == "variant_not_served"
    assert "attn1111-dcn" in unloaded.json()["detail"]


def test_nothing_loaded_is_a_503_saying_why(broken_server, jpeg):
    import httpx

    response = httpx.post(f"{broken_server.base_url}/compare", content=jpeg, timeout=60)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "no_variant_loaded"
    assert "attn1111-dcn" in body["detail"] and "attn0010-dcn" in body["detail"]
    assert int(response.headers["Retry-After"]) >= 1


def test_bad_image_is_a_422(client):
    response = client.post("/compare", content=b"definitely not an image", headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 422 and response.json()["error"] == "invalid_image"


def test_format_image_is_a_grid_of_titled_panels(client, wide_jpeg):
    body = client.post("/compare", params={"score_thr": 0.2}, content=wide_jpeg).json()
    response = client.post("/compare", params={"score_thr": 0.2, "format": "image"}, content=wide_jpeg)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "PNG"
        canvas = np.asarray(image.convert("RGB"))[:, :, ::-1]
    assert canvas.shape[1] == 2 * 400 + 3 * GAP  # two panels side by side
    panel_h = canvas.shape[0] - 2 * GAP
    assert panel_h > 300 + 40  # the image below two title bars
    original = load_image(wide_jpeg)
    for index, result in enumerate(body["results"]):
        x = GAP + index * (400 + GAP)
        drawn = canvas[GAP + panel_h - 300 : GAP + panel_h, x : x + 400]
        detections = [
            Detection(tuple(d["bbox"]), d["score"], d["label"], d["category_id"], d["class_name"]) for d in result["detections"]
        ]
        assert detections
        assert np.array_equal(drawn, draw_detections(original, detections)), result["variant"]
        title = canvas[GAP : GAP + panel_h - 300, x : x + 400]
        assert (title == 32).mean() > 0.8 and (title > 200).any()  # dark bars with white text


def test_narrow_images_are_enlarged_so_titles_fit(client, make_scene, encode_image):
    small = encode_image(make_scene(160, 120, seed=4), ".png")
    response = client.post(
        "/compare", params={"variants": "attn0010", "format": "png"}, content=small, headers={"Content-Type": "image/png"}
    )
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.width == 360 + 2 * GAP  # MIN_PANEL_WIDTH


def test_a_panel_of_stand_in_weights_is_titled_so():
    from app.api.routes.compare import panel_name
    from app.core.requests import DetectOutcome

    assert panel_name(DetectOutcome("attn0010", None, "synthetic", [])) == "attn0010 (synthetic weights)"
    assert panel_name(DetectOutcome("attn0010", "ab12", "official", [])) == "attn0010"
