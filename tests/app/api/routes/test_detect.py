"""POST /detect over real HTTP (uvicorn on 127.0.0.1) and over ASGI, on synthetic checkpoints."""

from __future__ import annotations

import base64
import json
import logging
import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from model_zoo import load_detector
from model_zoo.categories import COCO_CLASSES
from model_zoo.weights import sha256_file
from tests.app.conftest import assert_every_place_is_free, first_answered, read_http_response, serving_settings, upload_heads

VARIANT = "attn0010"
VARIANT_DETECT = f"/detect?variant={VARIANT}"


def post_image(base_url: str, data: bytes, variant: str = VARIANT, **params) -> httpx.Response:
    return httpx.post(
        f"{base_url}/detect",
        params={"variant": variant, **params},
        content=data,
        headers={"Content-Type": "image/jpeg"},
        timeout=120,
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def test_detections_equal_the_predictor_at_the_test_threshold(client, zoo, jpeg):
    response = client.post("/detect", params={"variant": VARIANT, "score_thr": 0.05}, files={"file": ("scene.jpg", jpeg, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    detector = load_detector(VARIANT, registry=zoo.registry(), weights_dir=zoo.weights_dir)
    expected = detector.predict(jpeg, score_thr=0.05).to_dict()
    assert body["variant"] == VARIANT
    assert body["sha256"] == detector.sha256 == sha256_file(detector.weights_path)
    assert (body["width"], body["height"]) == (expected["width"], expected["height"]) == (320, 240)
    assert len(body["detections"]) > 5
    assert body["detections"] == expected["detections"]  # same floats, same order, same schema
    assert list(body["detections"][0]) == ["bbox", "score", "label", "category_id", "class_name"]
    assert set(body["timings_ms"]) == {"queue", "preprocess", "model", "postprocess"}
    assert all(value >= 0 for value in body["timings_ms"].values())
    assert body["timings_ms"]["model"] > 0
    assert body["batch_size"] == 1


def test_default_threshold_is_0_3_and_raw_body_equals_multipart(client, jpeg):
    low = client.post("/detect", params={"variant": VARIANT, "score_thr": 0.05}, content=jpeg, headers={"Content-Type": "image/jpeg"})
    default = client.post("/detect", params={"variant": VARIANT}, files={"file": ("a.jpg", jpeg, "image/jpeg")})
    raw = client.post("/detect", params={"variant": VARIANT}, content=jpeg, headers={"Content-Type": "application/octet-stream"})
    assert low.status_code == default.status_code == raw.status_code == 200
    kept = [d for d in low.json()["detections"] if d["score"] > 0.3]
    assert kept and len(kept) < len(low.json()["detections"])
    assert default.json()["detections"] == raw.json()["detections"] == kept


def test_full_variant_name_and_second_variant(client, jpeg):
    full = client.post("/detect", params={"variant": "faster-rcnn_r50_fpn_attention_1111_1x_coco"}, content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert full.status_code == 200
    assert full.json()["variant"] == "attn1111"


def test_max_dets_and_classes(client, jpeg):
    every = client.post("/detect", params={"variant": VARIANT, "score_thr": 0.05}, content=jpeg).json()["detections"]
    top3 = client.post("/detect", params={"variant": VARIANT, "score_thr": 0.05, "max_dets": 3}, content=jpeg).json()["detections"]
    assert top3 == every[:3]
    names = sorted({d["class_name"] for d in every})[:2]
    wanted_id = next(d["category_id"] for d in every if d["class_name"] == names[1])
    by_name_and_id = client.post(
        "/detect",
        params=[("variant", VARIANT), ("score_thr", "0.05"), ("classes", names[0]), ("classes", str(wanted_id))],
        content=jpeg,
    ).json()["detections"]
    assert by_name_and_id == [d for d in every if d["class_name"] in names]
    comma = client.post("/detect", params={"variant": VARIANT, "score_thr": 0.05, "classes": ",".join(names)}, content=jpeg)
    assert comma.json()["detections"] == by_name_and_id


@pytest.mark.anyio
@pytest.mark.parametrize("classes", ["unicorn", "person,unicorn", "12", "0"])
async def test_unknown_class_is_a_422_naming_valid_ones(asgi_client, jpeg, classes):
    async with asgi_client as http:
        response = await http.post("/detect", params={"variant": VARIANT, "classes": classes}, content=jpeg)
    body = assert_error(response, 422, "invalid_parameter")
    assert "person" in body["detail"] and "toothbrush" in body["detail"] and "90" in body["detail"]


@pytest.mark.anyio
async def test_unknown_variant_is_a_404_listing_the_valid_ones(asgi_client, jpeg):
    async with asgi_client as http:
        response = await http.post("/detect", params={"variant": "attn9999"}, content=jpeg)
    body = assert_error(response, 404, "unknown_variant")
    assert body["valid"] == ["attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn"]
    assert "attn1111-dcn" in body["detail"]


@pytest.mark.anyio
async def test_variant_never_requested_is_a_404_without_retry_after(asgi_client, jpeg):
    async with asgi_client as http:
        response = await http.post("/detect", params={"variant": "attn1111-dcn"}, content=jpeg)
    body = assert_error(response, 404, "variant_not_served")
    assert "Retry-After" not in response.headers  # it never loads in this process
    assert "ATTNZOO_VARIANTS" in body["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "variant"),
        ({"variant": VARIANT, "score_thr": "high"}, "score_thr"),
        ({"variant": VARIANT, "score_thr": 2}, "score_thr"),
        ({"variant": VARIANT, "max_dets": -1}, "max_dets"),
    ],
)
async def test_invalid_parameters_are_422_json(asgi_client, jpeg, params, fragment):
    async with asgi_client as http:
        response = await http.post("/detect", params=params, content=jpeg)
    body = assert_error(response, 422, "invalid_parameter")
    assert fragment in body["detail"]


def _pil(image: Image.Image, fmt: str, **params) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _scene_pil(make_scene, width=160, height=120) -> Image.Image:
    return Image.fromarray(make_scene(width, height)[:, :, ::-1].copy(), "RGB")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("case", "content_type", "status", "code"),
    [
        ("empty", "image/jpeg", 400, "empty_body"),
        ("text", "image/jpeg", 422, "invalid_image"),
        ("truncated jpeg", "image/jpeg", 422, "invalid_image"),
        ("corrupt png", "image/png", 422, "invalid_image"),
        ("json without a base64 image", "application/json", 422, "invalid_image"),
        ("json of an empty image", "application/json", 400, "empty_body"),
        ("json base64 of no image", "application/json", 422, "invalid_image"),
        ("form content type", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("text content type", "text/plain", 415, "unsupported_media_type"),
        ("ico format", "image/x-icon", 415, "unsupported_image_format"),
        ("pixel bomb", "image/png", 413, "too_many_pixels"),
    ],
)
async def test_bad_input_is_a_4xx_with_a_json_reason(asgi_client, make_scene, jpeg, case, content_type, status, code):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    scene = _scene_pil(make_scene)
    payloads = {
        "empty": b"",
        "text": b"definitely not an image",
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "corrupt png": _pil(scene, "PNG")[:60] + b"\x00" * 2000,
        "json without a base64 image": b'{"image": "no"}',
        "json of an empty image": b'{"image": ""}',
        "json base64 of no image": json.dumps({"image": base64.b64encode(b"definitely not an image").decode()}).encode(),
        "form content type": jpeg,
        "text content type": jpeg,
        "ico format": _pil(scene, "ICO"),
        "pixel bomb": b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + chunk(b"IEND", b""),
    }
    async with asgi_client as http:
        response = await http.post("/detect", params={"variant": VARIANT}, content=payloads[case], headers={"Content-Type": content_type})
    assert_error(response, status, code)


@pytest.mark.anyio
async def test_multipart_without_file_field_is_a_400(asgi_client, jpeg):
    async with asgi_client as http:
        response = await http.post("/detect", params={"variant": VARIANT}, files={"picture": ("a.jpg", jpeg, "image/jpeg")})
    body = assert_error(response, 400, "empty_body")
    assert "'file' or 'image'" in body["detail"]


def test_a_json_body_with_a_base64_image_is_the_same_upload(client, jpeg):
    params = {"variant": VARIANT, "score_thr": 0.05}
    multipart = client.post("/detect", params=params, files={"file": ("a.jpg", jpeg, "image/jpeg")})
    encoded = base64.b64encode(jpeg).decode()
    as_json = client.post("/detect", params=params, json={"image": encoded})
    data_url = client.post("/detect", params=params, json={"image": f"data:image/jpeg;base64,{encoded}"})
    assert multipart.status_code == as_json.status_code == data_url.status_code == 200, as_json.text
    assert multipart.json()["detections"] == as_json.json()["detections"] == data_url.json()["detections"]
    assert multipart.json()["detections"]


def test_multipart_field_image_is_accepted_like_file(client, jpeg):
    answers = [
        client.post("/detect", params={"variant": VARIANT, "score_thr": 0.05}, files={field: ("a.jpg", jpeg, "image/jpeg")})
        for field in ("file", "image")
    ]
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].json()["detections"] == answers[1].json()["detections"]
    assert answers[0].json()["detections"], "the scene should give detections to compare"


@pytest.mark.parametrize(
    ("case", "size"),
    [
        ("1x1", (1, 1)),
        ("10x1000 aspect 1:100", (10, 1000)),
        ("1x4000, a side rounds to 0 px", (1, 4000)),  # issue 15: mmdet fails here; we answer
        ("4000x1, a side rounds to 0 px", (4000, 1)),
        ("16-bit png", (160, 120)),
        ("cmyk jpeg", (160, 120)),
        ("palette png", (160, 120)),
        ("rgba png", (160, 120)),
        ("grayscale jpeg", (160, 120)),
        ("animated gif", (160, 120)),
        ("webp", (160, 120)),
        ("bmp", (160, 120)),
        ("tiff", (160, 120)),
        ("exif-rotated jpeg", (120, 160)),  # stored 160x120, displayed 120x160
    ],
)
def test_odd_but_valid_images_get_a_correct_answer(client, make_scene, encode_image, case, size):
    scene = _scene_pil(make_scene)
    exif = Image.Exif()
    exif[0x0112] = 8
    payloads = {
        "1x1": lambda: _pil(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "10x1000 aspect 1:100": lambda: _pil(scene.resize((10, 1000)), "PNG"),
        "1x4000, a side rounds to 0 px": lambda: _pil(Image.new("RGB", (1, 4000), (90, 90, 90)), "PNG"),
        "4000x1, a side rounds to 0 px": lambda: _pil(Image.new("RGB", (4000, 1), (90, 90, 90)), "PNG"),
        "16-bit png": lambda: encode_image(make_scene(160, 120).astype(np.uint16) * 257, ".png"),
        "cmyk jpeg": lambda: _pil(scene.convert("CMYK"), "JPEG"),
        "palette png": lambda: _pil(scene.convert("P"), "PNG"),
        "rgba png": lambda: _pil(scene.convert("RGBA"), "PNG"),
        "grayscale jpeg": lambda: _pil(scene.convert("L"), "JPEG"),
        "animated gif": lambda: _pil(scene, "GIF", save_all=True, append_images=[scene.rotate(90)]),
        "webp": lambda: _pil(scene, "WEBP"),
        "bmp": lambda: _pil(scene, "BMP"),
        "tiff": lambda: _pil(scene, "TIFF"),
        "exif-rotated jpeg": lambda: _pil(scene, "JPEG", exif=exif.tobytes()),
    }
    response = client.post("/detect", params={"variant": VARIANT, "score_thr": 0.05}, files={"file": ("upload", payloads[case](), "application/octet-stream")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == size
    for detection in body["detections"]:
        x1, y1, x2, y2 = detection["bbox"]
        assert 0 <= x1 <= x2 <= size[0] and 0 <= y1 <= y2 <= size[1]
        assert detection["class_name"] == COCO_CLASSES[detection["label"]]


@pytest.mark.anyio
async def test_body_over_the_limit_is_refused_while_streaming(asgi_client):
    sent = 0

    async def endless():
        nonlocal sent
        for _ in range(100):  # would be 100 MiB
            sent += 1
            yield b"\x00" * (1 << 20)

    async with asgi_client as http:
        response = await http.post("/detect", params={"variant": VARIANT}, content=endless(), headers={"Content-Type": "image/jpeg"})
    body = assert_error(response, 413, "body_too_large")
    assert "20971520" in body["detail"]
    assert sent <= 22  # stopped at the 20 MiB limit, not read whole


def test_announced_oversized_body_is_refused_before_it_is_sent(live_server):
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
        sock.sendall(
            f"POST /detect?variant={VARIANT} HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
            + b"\xff" * 1024
        )
        response = _read_http_response(sock)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b'"error":"body_too_large"' in response


def _read_http_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_model_error_is_a_500_with_request_id_and_the_next_request_works(client, live_server, jpeg, monkeypatch):
    model = live_server.app.state.service.pool.served(VARIANT).detector.model

    def broken_forward(*args, **kwargs):
        raise RuntimeError("simulated device fault")

    monkeypatch.setattr(model, "forward", broken_forward)
    failed = client.post("/detect", params={"variant": VARIANT}, content=jpeg, headers={"X-Request-ID": "fault-1"})
    body = assert_error(failed, 500, "model_error")
    assert body["request_id"] == "fault-1"
    assert "simulated device fault" in body["detail"]
    monkeypatch.undo()
    assert client.post("/detect", params={"variant": VARIANT}, content=jpeg).status_code == 200


def _post_many(base_url: str, payloads: list[bytes], variant: str = VARIANT, **params) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(payloads)) as pool:
        futures = [pool.submit(post_image, base_url, data, variant, **params) for data in payloads]
        return [f.result() for f in futures]


def _submit_after_gate(base_url, gate, eventually, metric, payloads, **params):
    """Start a blocker request, wait until the model holds it, then queue ``payloads``."""
    executor = ThreadPoolExecutor(len(payloads) + 1)
    blocker = executor.submit(post_image, base_url, payloads[0], VARIANT, **params)
    assert gate.entered.wait(30)
    queued = []
    for data in payloads[1:]:
        queued.append(executor.submit(post_image, base_url, data, VARIANT, **params))
    return executor, blocker, queued


def test_batching_does_not_change_detections(live_server, hold_model, eventually, metric, make_scene, encode_image):
    base_url = live_server.base_url
    images = [encode_image(make_scene(320, 240, seed=seed), ".png") for seed in range(1, 5)]
    alone = [post_image(base_url, data, score_thr=0.05).json() for data in images]
    assert [r["batch_size"] for r in alone] == [1, 1, 1, 1]

    gate = hold_model(VARIANT)
    executor, blocker, queued = _submit_after_gate(base_url, gate, eventually, metric, [images[0], *images], score_thr=0.05)
    eventually(lambda: metric(base_url, "attnzoo_queue_depth", variant=VARIANT) == 4)
    gate.release()
    together = [f.result().json() for f in queued]
    blocker.result()
    executor.shutdown()
    assert [r["batch_size"] for r in together] == [4, 4, 4, 4]
    for solo, batched in zip(alone, together):
        # bit-identical: the same detections, floats, order and schema as when it ran alone
        assert len(solo["detections"]) > 0
        assert batched["detections"] == solo["detections"]


def test_overload_is_a_429_with_retry_after_and_the_service_recovers(live_server, hold_model, eventually, metric, jpeg):
    base_url = live_server.base_url
    gate = hold_model(VARIANT)
    executor, blocker, queued = _submit_after_gate(base_url, gate, eventually, metric, [jpeg] * 5)
    eventually(lambda: metric(base_url, "attnzoo_queue_depth", variant=VARIANT) == 4)  # the queue is full
    refused = _post_many(base_url, [jpeg] * 3)
    for response in refused:
        body = assert_error(response, 429, "overloaded")
        assert int(response.headers["Retry-After"]) >= 1
        assert "4 requests are already waiting" in body["detail"]
    gate.release()
    assert [f.result().status_code for f in [blocker, *queued]] == [200] * 5
    executor.shutdown()
    assert post_image(base_url, jpeg).status_code == 200


def test_a_burst_counts_itself_as_its_bodies_arrive(live_server, hold_model, jpeg):
    # requests whose bodies are read hold their places from then, before they are decoded and
    # queued: a burst that arrives at once sees itself, and what does not fit is refused at once
    queue_size = live_server.app.state.settings.queue_size
    gate = hold_model(VARIANT)
    executor = ThreadPoolExecutor(1)
    blocker = executor.submit(post_image, live_server.base_url, jpeg)
    assert gate.entered.wait(30)
    head = f"POST {VARIANT_DETECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
    connections = [socket.create_connection(("127.0.0.1", live_server.port), timeout=30) for _ in range(queue_size + 3)]
    try:
        for index, connection in enumerate(connections):
            connection.sendall(f"{head}X-Request-ID: burst-{index}\r\n\r\n".encode() + jpeg)
        refused = first_answered(connections, 3, timeout=30)
        assert len(refused) == 3
        for connection in refused:
            status, headers, body = read_http_response(connection)
            assert status == 429 and json.loads(body)["error"] == "overloaded"
            assert f"{queue_size} requests are already waiting" in json.loads(body)["detail"]
            assert int(headers["retry-after"]) >= 1
        admitted = [c for c in connections if c not in refused]
        assert first_answered(admitted, 1, timeout=0.5) == []  # waiting for the model, not refused
        gate.release()
        assert [read_http_response(c)[0] for c in admitted] == [200] * queue_size  # their places were kept
        assert blocker.result().status_code == 200
    finally:
        gate.release()
        executor.shutdown()
        for connection in connections:
            connection.close()


def test_requests_whose_bodies_have_not_arrived_hold_no_place_and_leave_none(live_server, access_log, eventually, jpeg):
    # a place counts once the body is read: clients that send a head and stall cannot fill the queue
    queue_size = live_server.app.state.settings.queue_size
    connections = upload_heads(live_server, VARIANT_DETECT, jpeg, queue_size + 1, "leaving")
    try:
        assert first_answered(connections, 1, timeout=0.5) == []  # none refused: they hold nothing
        assert post_image(live_server.base_url, jpeg).status_code == 200  # another request is served beside them
    finally:
        for connection in connections:
            connection.close()
    ended = lambda: [line for line in access_log if line["request_id"].startswith("leaving-")]  # noqa: E731
    eventually(lambda: len(ended()) == queue_size + 1)  # each logged once its request ended
    assert sorted(line["status"] for line in ended()) == [499] * (queue_size + 1)
    assert_every_place_is_free(live_server, VARIANT_DETECT)


def test_no_request_keeps_a_place_once_it_ended(live_server, client, jpeg):
    # every front door that admits, with an answer and with a refused upload
    bad = b"not an image at all"
    doors = [("/detect", {"variant": VARIANT}), ("/compare", {}), ("/attention", {"variant": VARIANT, "x": 10, "y": 10})]
    for path, params in doors:
        answers = [client.post(path, params=params, content=data, headers={"Content-Type": "image/jpeg"}) for data in (jpeg, bad)]
        assert [a.status_code // 100 for a in answers] == [2, 4], (path, [a.text[:200] for a in answers])
    for data in (jpeg, bad):
        image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]}
        answer = client.post(f"/v2/models/{VARIANT}/infer", json={"inputs": [image]})
        assert answer.status_code // 100 == (2 if data is jpeg else 4), answer.text[:200]
    assert_every_place_is_free(live_server, VARIANT_DETECT)


def request_timeout(app, zoo, seconds: float):
    """Requests that start inside get ``seconds`` as their deadline."""
    return serving_settings(app, zoo.settings(request_timeout_s=seconds))


def test_a_request_that_cannot_make_its_deadline_is_refused_at_once_and_never_runs(live_server, hold_model, metric, jpeg, zoo, caplog):
    # issue 12: refused at admission, with a Retry-After from the measured batches, not a 504 later
    base_url = live_server.base_url
    batcher = live_server.app.state.service.pool.served(VARIANT).batcher
    assert post_image(base_url, jpeg).status_code == 200  # a measured batch to predict from
    batches_before = metric(base_url, "attnzoo_batch_size_count", variant=VARIANT)
    own_counted_s = batcher.predicted_wait_s()  # idle: its own batch, as admission counts it (average + spread)
    gate = hold_model(VARIANT)
    executor = ThreadPoolExecutor(1)
    blocker = executor.submit(post_image, base_url, jpeg)
    assert gate.entered.wait(30)
    own_batch_s = batcher.cost.seconds(1)
    with request_timeout(live_server.app, zoo, own_batch_s / 2), caplog.at_level(logging.INFO, logger="attnzoo.errors"):
        refused = post_image(base_url, jpeg)  # less than its own batch alone
    body = assert_error(refused, 429, "overloaded")
    logged = [record for record in caplog.records if record.name == "attnzoo.errors"]
    assert [(r.levelno, r.exc_info) for r in logged] == [(logging.WARNING, None)]  # an expected condition: one line
    assert "past the deadline" in body["detail"]
    # the rest of the running batch (at most one batch) and its own batch, minus what it had left
    assert 1 <= int(refused.headers["Retry-After"]) <= math.ceil(2 * own_counted_s)
    gate.release()
    assert blocker.result().status_code == 200
    executor.shutdown()
    time.sleep(0.3)  # room for a (wrong) second batch
    assert metric(base_url, "attnzoo_batch_size_count", variant=VARIANT) == batches_before + 1
    assert gate.calls == 1


def test_a_request_past_its_deadline_is_a_504_and_never_runs(live_server, hold_model, eventually, metric, jpeg, zoo):
    base_url = live_server.base_url
    batcher = live_server.app.state.service.pool.served(VARIANT).batcher
    assert post_image(base_url, jpeg).status_code == 200  # a measured batch to predict from
    batches_before = metric(base_url, "attnzoo_batch_size_count", variant=VARIANT)
    gate = hold_model(VARIANT)
    executor = ThreadPoolExecutor(1)
    blocker = executor.submit(post_image, base_url, jpeg)
    assert gate.entered.wait(30)
    # admitted: while the gate holds the model the predicted wait only falls; then held past its deadline
    timeout = batcher.predicted_wait_s() + 5.0
    with request_timeout(live_server.app, zoo, timeout):
        started = time.monotonic()
        late = post_image(base_url, jpeg)
        waited = time.monotonic() - started
    assert_error(late, 504, "deadline_exceeded")
    assert waited >= timeout
    gate.release()
    assert blocker.result().status_code == 200
    executor.shutdown()
    time.sleep(0.3)  # room for a (wrong) second batch
    assert metric(base_url, "attnzoo_batch_size_count", variant=VARIANT) == batches_before + 1
    assert gate.calls == 1


def test_clients_that_disconnect_cost_the_others_nothing(live_server, hold_model, eventually, metric, jpeg):
    base_url = live_server.base_url
    batches_before = metric(base_url, "attnzoo_batch_size_count", variant=VARIANT)
    gone_before = metric(base_url, "attnzoo_requests_total", variant=VARIANT, endpoint="/detect", status="499")
    gate = hold_model(VARIANT)
    executor = ThreadPoolExecutor(1)
    blocker = executor.submit(post_image, base_url, jpeg)
    assert gate.entered.wait(30)
    sockets = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", live_server.port), timeout=30)
        sock.sendall(
            f"POST /detect?variant={VARIANT} HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg
        )
        sockets.append(sock)
    eventually(lambda: metric(base_url, "attnzoo_queue_depth", variant=VARIANT) == 3)
    for sock in sockets:
        sock.close()
    eventually(lambda: metric(base_url, "attnzoo_requests_total", variant=VARIANT, endpoint="/detect", status="499") == gone_before + 3)
    gate.release()
    assert blocker.result().status_code == 200
    executor.shutdown()
    time.sleep(0.3)
    assert metric(base_url, "attnzoo_batch_size_count", variant=VARIANT) == batches_before + 1  # only the blocker ran
    assert metric(base_url, "attnzoo_queue_depth", variant=VARIANT) == 0
    assert post_image(base_url, jpeg).status_code == 200
