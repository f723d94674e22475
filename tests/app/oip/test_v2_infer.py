"""Inference over the Open Inference Protocol: Triton's clients (HTTP binary, gRPC) and the plain
JSON form, against ``/detect`` on the same images and parameters."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from oip_support import OUTPUTS, detect_arrays, detections_of, grpcclient, httpclient, image_input

from tools.parity import match_detections

VARIANT = "attn0010"


def detect(base_url: str, image: bytes, variant: str = VARIANT, **params) -> dict:
    response = httpx.post(f"{base_url}/detect", params={"variant": variant, **params}, content=image, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def json_infer(base_url: str, images: list[bytes], variant: str = VARIANT, **body) -> httpx.Response:
    """The JSON form, no client library: BYTES elements as base64 strings."""
    request = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [len(images)], "data": [base64.b64encode(i).decode() for i in images]}], **body}
    return httpx.post(f"{base_url}/v2/models/{variant}/infer", json=request, timeout=300)


def assert_same(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Bit-identical detections: same count, order, boxes, scores and labels."""
    assert len(expected["scores"]) > 0
    for key in ("boxes", "scores", "classes"):
        assert actual[key].dtype == expected[key].dtype
        assert np.array_equal(actual[key], expected[key]), key


@pytest.mark.parametrize("transport", ["http-binary", "http-json-tensors", "grpc", "json-body"])
def test_one_image_is_exactly_what_detect_answers(live_server, triton_http, triton_grpc, jpeg, transport):
    expected = detect(live_server.base_url, jpeg, score_thr=0.05)
    assert expected["batch_size"] == 1
    if transport == "json-body":
        response = json_infer(live_server.base_url, [jpeg], parameters={"score_thr": 0.05})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json", response.text
        body = response.json()
        assert (body["model_name"], body["model_version"]) == (VARIANT, "1")
        outputs = {o["name"]: o for o in body["outputs"]}
        assert list(outputs) == list(OUTPUTS)
        count = len(expected["detections"])
        assert outputs["num_detections"] == {"name": "num_detections", "datatype": "INT32", "shape": [1], "data": [count]}
        assert outputs["detection_boxes"]["shape"] == [1, count, 4]
        # the JSON numbers are /detect's own: the model's float32 values, printed alike
        assert outputs["detection_boxes"]["data"] == [x for d in expected["detections"] for x in d["bbox"]]
        assert outputs["detection_scores"]["data"] == [d["score"] for d in expected["detections"]]
        assert outputs["detection_classes"]["data"] == [d["label"] for d in expected["detections"]]
        return
    if transport == "grpc":
        client, tensor = triton_grpc, image_input(grpcclient, [jpeg])
    elif transport == "http-binary":
        client, tensor = triton_http, image_input(httpclient, [jpeg])
    else:  # tritonclient's JSON data of BYTES is UTF-8 text: the image as base64, as the contract says
        client, tensor = triton_http, httpclient.InferInput("IMAGE", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([base64.b64encode(jpeg)], dtype=np.object_), binary_data=False)
    result = client.infer(VARIANT, [tensor], parameters={"score_thr": 0.05})
    assert result.as_numpy("num_detections").tolist() == [len(expected["detections"])]
    assert_same(detections_of(result), detect_arrays(expected["detections"]))


@pytest.mark.parametrize("client_module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_a_batch_of_two_images_pads_with_zeros_and_matches_detect(live_server, triton_http, triton_grpc, make_scene, encode_image, client_module):
    images = [encode_image(make_scene(320, 240, seed=1)), encode_image(make_scene(200, 300, seed=2), ".png")]
    expected = [detect(live_server.base_url, image, score_thr=0.05)["detections"] for image in images]
    counts = [len(e) for e in expected]
    assert counts[0] != counts[1] and min(counts) > 0  # so that one row is padded
    client = triton_http if client_module is httpclient else triton_grpc
    result = client.infer(VARIANT, [image_input(client_module, images)], parameters={"score_thr": 0.05})
    most = max(counts)
    assert result.as_numpy("num_detections").tolist() == counts
    assert result.as_numpy("detection_boxes").shape == (2, most, 4)
    assert result.as_numpy("detection_scores").shape == result.as_numpy("detection_classes").shape == (2, most)
    short = int(np.argmin(counts))
    for name in ("detection_boxes", "detection_scores", "detection_classes"):
        assert not result.as_numpy(name)[short, counts[short] :].any(), name  # rows past num_detections are zero
    for row, detections in enumerate(expected):
        # The two images may share one model call here, and /detect ran each alone: the project's
        # parity criterion (same label, IoU >= 0.99, |dscore| <= 2e-3), every detection matched.
        ours, theirs = detections_of(result, row), detect_arrays(detections)
        match = match_detections(theirs["boxes"], theirs["scores"], theirs["classes"], ours["boxes"], ours["scores"], ours["classes"])
        assert match.matched == match.reference == match.ours, match


@pytest.mark.parametrize("client_module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_parameters_filter_as_detect_does(live_server, triton_http, triton_grpc, jpeg, client_module):
    client = triton_http if client_module is httpclient else triton_grpc
    every = detect(live_server.base_url, jpeg, score_thr=0.05)["detections"]
    names = sorted({d["class_name"] for d in every})[:2]
    cases = [
        ({}, {}),  # the default score_thr, 0.3
        ({"score_thr": 0.05, "max_dets": 3}, {"score_thr": 0.05, "max_dets": 3}),
        ({"score_thr": 0.05, "classes": ",".join(names)}, {"score_thr": 0.05, "classes": ",".join(names)}),
        ({"score_thr": 0, "max_dets": 5}, {"score_thr": 0, "max_dets": 5}),  # an integer threshold
    ]
    for v2_parameters, detect_parameters in cases:
        expected = detect(live_server.base_url, jpeg, **detect_parameters)["detections"]
        result = client.infer(VARIANT, [image_input(client_module, [jpeg])], parameters=v2_parameters)
        assert_same(detections_of(result), detect_arrays(expected))
    assert len(detect(live_server.base_url, jpeg)["detections"]) < len(every)


def test_requested_outputs_some_binary_some_json(triton_http, triton_grpc, jpeg):
    asked = [httpclient.InferRequestedOutput("detection_scores", binary_data=True), httpclient.InferRequestedOutput("num_detections", binary_data=False)]
    result = triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])], outputs=asked, request_id="req-7")
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["detection_scores", "num_detections"]
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 4 * result.as_numpy("detection_scores").size
    assert response["outputs"][1]["data"] == result.as_numpy("num_detections").tolist()
    assert response["id"] == "req-7" and response["model_name"] == VARIANT and response["model_version"] == "1"
    assert result.as_numpy("detection_boxes") is None
    over_grpc = triton_grpc.infer(
        VARIANT, [image_input(grpcclient, [jpeg])], outputs=[grpcclient.InferRequestedOutput("detection_classes")], request_id="req-8", model_version="1"
    )
    message = over_grpc.get_response()
    assert [o.name for o in message.outputs] == ["detection_classes"] and message.id == "req-8"
    assert over_grpc.as_numpy("detection_classes").shape == (1, result.as_numpy("num_detections")[0])


def test_full_names_and_the_versioned_path_infer_too(live_server, triton_http, triton_grpc, jpeg):
    full = "faster-rcnn_r50_fpn_attention_1111_1x_coco"
    expected = detect_arrays(detect(live_server.base_url, jpeg, variant="attn1111")["detections"])
    for client, module in ((triton_http, httpclient), (triton_grpc, grpcclient)):
        result = client.infer(full, [image_input(module, [jpeg])], model_version="1")
        assert_same(detections_of(result), expected)
    assert json_infer(live_server.base_url, [jpeg], variant=f"{full}/versions/1").json()["model_name"] == "attn1111"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_model_auto_chooses_by_the_budget_parameter(live_server, triton_http, triton_grpc, jpeg, metric, transport):
    client, module = (triton_http, httpclient) if transport == "http" else (triton_grpc, grpcclient)
    before = metric(live_server.base_url, "attnzoo_auto_choices_total", variant="attn1111", budget_met="true")
    result = client.infer("auto", [image_input(module, [jpeg])], parameters={"budget_ms": 1e7})
    response = result.get_response()
    model_name = response["model_name"] if transport == "http" else response.model_name
    assert model_name == "attn1111"  # the most accurate of attn0010 (39.1) and attn1111 (40.0) fits
    assert metric(live_server.base_url, "attnzoo_auto_choices_total", variant="attn1111", budget_met="true") == before + 1
    with pytest.raises(Exception, match="budget_ms"):
        client.infer("auto", [image_input(module, [jpeg])], parameters={"budget_ms": -1})
