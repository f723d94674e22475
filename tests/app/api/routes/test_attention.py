"""POST /attention: one GeneralizedAttention block's weights for a query point (JSON and heat map).

The test images are 320x240 at the test scale (320, 192): resized by 0.8 to 256x192, so stage 3
(stride 16) is a 16x12 map and its keys (kv_stride 2) an 8x6 grid, one key every 32 resized
pixels = 40 original pixels, centred at 10, 50, 90, ...
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from model_zoo import load_image
from model_zoo.visualize import draw_heatmap

HEADS = 8
KEY_CENTERS_X = [10.0, 50.0, 90.0, 130.0, 170.0, 210.0, 250.0, 290.0]
KEY_CENTERS_Y = [10.0, 50.0, 90.0, 130.0, 170.0, 210.0]


def attend(client, data: bytes, variant: str = "attn1111", **params):
    query = {"variant": variant, "x": 100, "y": 50, "stage": 3, "block": 0, **params}
    return client.post("/attention", params=query, content=data, headers={"Content-Type": "image/jpeg"})


def weights_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(response.json()["weights"])


def test_1111_weights_form_a_distribution_over_the_key_grid(client, jpeg):
    response = attend(client, jpeg)
    body = response.json()
    assert response.status_code == 200 and response.headers["vary"] == "Accept"
    assert (body["variant"], body["attention_type"], body["stage"], body["block"]) == ("attn1111", "1111", 3, 0)
    assert (body["width"], body["height"], body["x"], body["y"]) == (320, 240, 100, 50)
    assert body["head"] is None and body["num_heads"] == HEADS
    assert body["query_cell"] == {"row": 2, "col": 5}  # (50 * 0.8 // 16, 100 * 0.8 // 16)
    assert body["query_independent"] is False and body["note"] is None
    grid = body["key_grid"]
    assert grid["shape"] == [6, 8]
    assert grid["key_centers_x"] == pytest.approx(KEY_CENTERS_X)
    assert grid["key_centers_y"] == pytest.approx(KEY_CENTERS_Y)
    mean = weights_of(response)
    assert mean.shape == (6, 8) and (mean >= 0).all()
    assert mean.sum() == pytest.approx(1.0, abs=1e-5)
    assert body["timings_ms"]["model"] > 0


def test_every_head_sums_to_one_and_their_mean_is_the_default(client, jpeg):
    mean = weights_of(attend(client, jpeg, stage=4, block=2))
    assert mean.shape == (3, 4)  # stage 4: 8x6 map, 4x3 keys
    heads = [weights_of(attend(client, jpeg, stage=4, block=2, head=head)) for head in range(HEADS)]
    for head in heads:
        assert head.shape == (3, 4)
        assert head.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(np.mean(heads, axis=0), mean, atol=1e-6)
    assert not np.allclose(heads[0], heads[1])  # heads differ


def test_1111_depends_on_the_query_and_0010_does_not(client, jpeg):
    near, far = attend(client, jpeg, x=20, y=20), attend(client, jpeg, x=300, y=220)
    assert not np.allclose(weights_of(near), weights_of(far), atol=1e-6)
    assert far.json()["query_cell"] == {"row": 11, "col": 15}
    first = attend(client, jpeg, variant="attn0010", x=20, y=20)
    second = attend(client, jpeg, variant="attn0010", x=300, y=220)
    body = first.json()
    assert body["query_independent"] is True and second.json()["query_independent"] is True
    assert "do not depend on the query" in body["note"] and "0010" in body["note"]
    assert body["key_grid"]["shape"] == [6, 8]
    assert np.array_equal(weights_of(first), weights_of(second))
    assert weights_of(first).sum() == pytest.approx(1.0, abs=1e-5)


def test_default_stage_is_the_first_with_attention(client, jpeg):
    response = client.post("/attention", params={"variant": "attn1111", "x": 5, "y": 5}, content=jpeg)
    assert response.status_code == 200
    assert (response.json()["stage"], response.json()["block"]) == (3, 0)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"stage": 2}, "stage 2 of attn1111 has no attention; stages with attention: [3, 4]"),
        ({"stage": 3, "block": 6}, "block must be in 0..5 for stage 3, got 6"),
        ({"stage": 4, "block": 3}, "block must be in 0..2 for stage 4, got 3"),
        ({"head": 8}, "head must be in 0..7"),
        ({"x": 320}, "outside the 320x240 image"),
        ({"y": 240.5}, "outside the 320x240 image"),
    ],
)
def test_queries_the_block_cannot_answer_are_422s_naming_the_problem(client, jpeg, params, fragment):
    response = attend(client, jpeg, **params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_attention_query"
    assert fragment in body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]


def test_invalid_parameters_unknown_and_unloaded_variants(client, jpeg):
    negative = attend(client, jpeg, x=-1)
    assert negative.status_code == 422 and negative.json()["error"] == "invalid_parameter" and "x" in negative.json()["detail"]
    missing = client.post("/attention", params={"variant": "attn1111"}, content=jpeg)
    assert missing.status_code == 422 and "query.x" in missing.json()["detail"]
    unknown = attend(client, jpeg, variant="attn42")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_variant"
    unloaded = attend(client, jpeg, variant="attn1111-dcn")
    assert unloaded.status_code == 404 and unloaded.json()["error"] == "variant_not_served"
    not_an_image = attend(client, b"\x89PNG but not really")
    assert not_an_image.status_code == 422 and not_an_image.json()["error"] == "invalid_image"


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))[:, :, ::-1]


def test_heat_map_is_the_json_weights_over_the_image_with_the_query_marked(client, jpeg):
    body = attend(client, jpeg, x=200, y=120).json()
    response = attend(client, jpeg, x=200, y=120, format="image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    heat = decode_png(response.content)
    original = load_image(jpeg)
    assert heat.shape == original.shape == (240, 320, 3)
    assert np.array_equal(heat, draw_heatmap(original, np.array(body["weights"]), (200, 120)))
    assert tuple(heat[120, 200]) == (255, 255, 255)  # the query marker's centre
    assert np.abs(heat.astype(int) - original.astype(int)).mean() > 20


def test_heat_map_crops_key_cells_centred_on_the_padding(client, make_scene, encode_image):
    # 250x240 → 200x192, padded to 224x192: 7 key columns, the last centred at x = 250 (outside)
    image = make_scene(250, 240, seed=7)
    data = encode_image(image, ".png")
    body = attend(client, data, x=30, y=30).json()
    assert body["key_grid"]["shape"] == [6, 7]
    assert body["key_grid"]["key_centers_x"][-1] == pytest.approx(250.0)
    weights = np.array(body["weights"])
    assert weights.sum() == pytest.approx(1.0, abs=1e-5)  # the padding's keys count in the softmax
    heat = decode_png(attend(client, data, x=30, y=30, format="png").content)
    assert np.array_equal(heat, draw_heatmap(load_image(data), weights[:, :6], (30, 30)))


def test_attention_under_concurrent_detect_load_sees_only_its_own_forward(client, jpeg, make_scene, encode_image):
    other = encode_image(make_scene(320, 240, seed=9))
    expected = {point: weights_of(attend(client, jpeg, x=point[0], y=point[1])) for point in [(20, 20), (300, 200)]}
    with ThreadPoolExecutor(4) as pool:  # 4 requests: the shared server's queue_size
        detects = [pool.submit(client.post, "/detect", params={"variant": "attn1111"}, content=other) for _ in range(2)]
        probes = {point: pool.submit(attend, client, jpeg, x=point[0], y=point[1]) for point in expected}
        assert [f.result().status_code for f in detects] == [200, 200]
        for point, future in probes.items():
            assert np.array_equal(weights_of(future.result()), expected[point])
