"""Health and metadata of the Open Inference Protocol, through Triton's own clients (HTTP and gRPC)."""

from __future__ import annotations

import httpx
import pytest
from oip_support import grpcclient, http_client
from tritonclient.utils import InferenceServerException

from app.main import create_app
from app.oip.proto import grpc_predict_v2_pb2 as pb
from model_zoo import build_info
from model_zoo.categories import COCO_CLASSES

FULL_NAME = "faster-rcnn_r50_fpn_attention_1111_1x_coco"
# As Triton declares a model that batches: B rows of one image, B rows of one count.
INPUTS = [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1, 1]}]
OUTPUTS = [
    {"name": "num_detections", "datatype": "INT32", "shape": [-1, 1]},
    {"name": "detection_boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
    {"name": "detection_scores", "datatype": "FP32", "shape": [-1, -1]},
    {"name": "detection_classes", "datatype": "INT32", "shape": [-1, -1]},
]


def test_live_and_ready_over_both_transports(triton_http, triton_grpc):
    for client in (triton_http, triton_grpc):
        assert client.is_server_live() is True
        assert client.is_server_ready() is True
        assert client.is_model_ready("attn0010") is True
        assert client.is_model_ready(FULL_NAME) is True
        assert client.is_model_ready("attn1111", model_version="1") is True
        assert client.is_model_ready("attn1111-dcn") is False  # in the registry, not loaded


def test_unknown_models_and_versions_are_not_found(triton_http, triton_grpc, client):
    assert triton_http.is_model_ready("attn9999") is False
    assert triton_http.is_model_ready("attn0010", model_version="2") is False
    for name, version in (("attn9999", ""), ("attn0010", "2")):
        with pytest.raises(InferenceServerException) as error:
            triton_grpc.is_model_ready(name, model_version=version)
        assert error.value.status() == "StatusCode.NOT_FOUND"
    unknown = client.get("/v2/models/attn9999/ready")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown variant 'attn9999'; valid variants: attn1111, attn0010, attn1111-dcn, attn0010-dcn"}


def test_a_server_still_loading_or_without_models_is_live_but_not_ready(zoo, start_server, unused_port):
    server = start_server(create_app(zoo.settings(variants=["attn1111-dcn", "attn0010-dcn"], grpc_port=unused_port())))
    triton_http = http_client(server.base_url)
    triton_grpc = grpcclient.InferenceServerClient(server.grpc_url)
    assert triton_http.is_server_live() and triton_grpc.is_server_live()
    assert not triton_http.is_server_ready() and not triton_grpc.is_server_ready()
    ready = httpx.get(f"{server.base_url}/v2/health/ready", timeout=30)
    assert ready.status_code == 503 and set(ready.json()) == {"error"} and int(ready.headers["Retry-After"]) >= 1
    assert "attn0010-dcn" in ready.json()["error"] and "attn1111-dcn" in ready.json()["error"]
    triton_http.close()
    triton_grpc.close()


def test_server_metadata(triton_http, triton_grpc):
    expected = {
        "name": "attnzoo",
        "version": build_info().version,  # the installed package's
        "extensions": ["binary_tensor_data", "model_configuration", "statistics", "model_repository", "parameters"],
    }
    assert triton_http.get_server_metadata() == expected
    assert triton_grpc.get_server_metadata(as_json=True) == expected


def test_model_metadata_over_http(triton_http, zoo):
    published = zoo.registry().resolve("attn1111").published
    for metadata in (triton_http.get_model_metadata(FULL_NAME), triton_http.get_model_metadata("attn1111", model_version="1")):
        assert {key: metadata[key] for key in ("name", "versions", "platform", "inputs", "outputs")} == {
            "name": "attn1111", "versions": ["1"], "platform": "pytorch", "inputs": INPUTS, "outputs": OUTPUTS,
        }  # fmt: skip
        parameters = metadata["parameters"]
        assert parameters["class_names"].split(",") == list(COCO_CLASSES) and len(COCO_CLASSES) == 80
        assert parameters["variant"] == "attn1111" and parameters["full_name"] == FULL_NAME
        assert parameters["published_box_ap"] == published.box_ap and parameters["published_fps"] == published.fps
        assert parameters["published_inference_ms"] == published.inference_ms
        assert parameters["default_score_thr"] == 0.3 and parameters["state"] == "loaded"
        assert len(parameters["sha256"]) == 64


def test_model_metadata_over_grpc(triton_grpc, zoo):
    response = triton_grpc.get_model_metadata("attn1111")
    assert triton_grpc.get_model_metadata(FULL_NAME, model_version="1") == response
    as_json = triton_grpc.get_model_metadata("attn1111", as_json=True)
    assert as_json == {
        "name": "attn1111", "versions": ["1"], "platform": "pytorch",
        "inputs": [{**spec, "shape": [str(d) for d in spec["shape"]]} for spec in INPUTS],  # int64 as JSON strings
        "outputs": [{**spec, "shape": [str(d) for d in spec["shape"]]} for spec in OUTPUTS],
    }  # fmt: skip
    # The parameters (field 6, an extension) reach a Triton client as an unknown field: read them with ours.
    parameters = pb.ModelMetadataResponse.FromString(response.SerializeToString()).parameters
    assert parameters["class_names"].string_param.split(",") == list(COCO_CLASSES)
    assert parameters["published_box_ap"].double_param == zoo.registry().resolve("attn1111").published.box_ap
    assert parameters["default_score_thr"].double_param == 0.3


def test_metadata_of_a_variant_that_is_not_loaded_says_so(triton_http):
    metadata = triton_http.get_model_metadata("attn0010-dcn")
    assert metadata["outputs"] == OUTPUTS and metadata["parameters"]["state"] == "unavailable"
    assert "sha256" not in metadata["parameters"]
