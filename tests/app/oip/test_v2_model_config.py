"""The model configuration extension: Triton's ``ModelConfig`` of each variant and of ``auto``, over
HTTP (Triton's JSON: every field) and gRPC (the message), through tritonclient."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from model_zoo import COCO_CLASSES

FULL_NAME = "faster-rcnn_r50_fpn_attention_0010_1x_coco"
# The keys of Triton 2.51's HTTP answer for a Python-backend model that batches (every field printed).
TRITON_CONFIG_KEYS = {
    "name", "platform", "backend", "runtime", "version_policy", "max_batch_size", "input", "output", "batch_input", "batch_output",
    "optimization", "dynamic_batching", "instance_group", "default_model_filename", "cc_model_filenames", "metric_tags", "parameters",
    "model_warmup",
}  # fmt: skip
TRITON_INPUT_KEYS = {"name", "data_type", "format", "dims", "is_shape_tensor", "allow_ragged_batch", "optional", "is_non_linear_format_io"}
TRITON_OUTPUT_KEYS = {"name", "data_type", "dims", "label_filename", "is_shape_tensor", "is_non_linear_format_io"}
TRITON_INSTANCE_KEYS = {"name", "kind", "count", "gpus", "secondary_devices", "profile", "passive", "host_policy"}
TRITON_BATCHING_KEYS = {
    "preferred_batch_size", "max_queue_delay_microseconds", "preserve_ordering", "priority_levels", "default_priority_level",
    "default_queue_policy", "priority_queue_policy",
}  # fmt: skip
OUTPUT_DIMS = [("num_detections", "TYPE_INT32", [1]), ("detection_boxes", "TYPE_FP32", [-1, 4]), ("detection_scores", "TYPE_FP32", [-1]),
               ("detection_classes", "TYPE_INT32", [-1])]  # fmt: skip


def test_http_config_is_tritons_json_of_the_variant(triton_http, live_server):
    settings = live_server.app.state.settings
    for config in (triton_http.get_model_config("attn0010"), triton_http.get_model_config(FULL_NAME, model_version="1")):
        assert set(config) == TRITON_CONFIG_KEYS and "sequence_batching" not in config
        assert (config["name"], config["platform"], config["backend"], config["runtime"]) == ("attn0010", "", "attnzoo", "")
        assert config["max_batch_size"] == settings.max_batch == 4
        assert config["version_policy"] == {"latest": {"num_versions": 1}}
        (image,) = config["input"]
        assert set(image) == TRITON_INPUT_KEYS and (image["name"], image["data_type"], image["dims"]) == ("IMAGE", "TYPE_STRING", [1])
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == OUTPUT_DIMS
        assert all(set(t) - {"reshape"} == TRITON_OUTPUT_KEYS for t in config["output"])
        assert config["output"][0]["reshape"] == {"shape": []} and all("reshape" not in t for t in config["output"][1:])
        batching = config["dynamic_batching"]
        assert set(batching) == TRITON_BATCHING_KEYS
        assert batching["max_queue_delay_microseconds"] == round(settings.max_wait_ms * 1000) == 20_000  # an int, as Triton's
        assert batching["preferred_batch_size"] == [4]
        assert batching["default_queue_policy"] == {
            "timeout_action": "REJECT", "default_timeout_microseconds": 300_000_000, "allow_timeout_override": True, "max_queue_size": 4,
        }  # fmt: skip
        (group,) = config["instance_group"]
        assert set(group) == TRITON_INSTANCE_KEYS and (group["name"], group["kind"], group["count"]) == ("attn0010_0", "KIND_CPU", 1)
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        assert all(set(value) == {"string_value"} for value in config["parameters"].values())
        assert parameters["variant"] == "attn0010" and parameters["full_name"] == FULL_NAME
        assert parameters["class_names"].split(",") == list(COCO_CLASSES)
        assert parameters["request_parameters"] == "score_thr,max_dets,classes" and parameters["default_score_thr"] == "0.3"
        assert parameters["weights_source"] in ("official", "synthetic", "custom") and len(parameters["sha256"]) == 64


def test_grpc_config_is_the_same_message(triton_grpc, triton_http):
    response = triton_grpc.get_model_config("attn0010")
    config = response.config
    assert (config.name, config.backend, config.max_batch_size) == ("attn0010", "attnzoo", 4)
    assert [(t.name, list(t.dims)) for t in config.input] == [("IMAGE", [1])]
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert config.dynamic_batching.max_queue_delay_microseconds == 20_000
    as_json = triton_grpc.get_model_config("attn0010", as_json=True)["config"]
    # protobuf's JSON mapping, as Triton's gRPC answer reads in tritonclient: int64 as strings
    assert as_json["input"] == [{"name": "IMAGE", "data_type": "TYPE_STRING", "dims": ["1"]}]
    assert as_json["output"][0] == {"name": "num_detections", "data_type": "TYPE_INT32", "dims": ["1"], "reshape": {}}
    assert as_json["dynamic_batching"]["max_queue_delay_microseconds"] == "20000"
    assert as_json["parameters"] == triton_http.get_model_config("attn0010")["parameters"]


def test_a_variant_not_loaded_and_auto_have_a_config(triton_http, triton_grpc):
    missing = triton_http.get_model_config("attn0010-dcn")
    assert missing["name"] == "attn0010-dcn" and "sha256" not in missing["parameters"]
    assert missing["instance_group"][0]["kind"] == "KIND_CPU"  # the service's device (ATTNZOO_DEVICE=cpu)
    auto = triton_grpc.get_model_config("auto", as_json=True)["config"]
    parameters = {key: value["string_value"] for key, value in auto["parameters"].items()}
    assert auto["name"] == "auto" and parameters["request_parameters"] == "score_thr,max_dets,classes,budget_ms"
    assert parameters["variants"] == "attn1111,attn0010" and float(parameters["default_budget_ms"]) > 0
    assert triton_http.get_model_metadata("auto")["inputs"] == [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1, 1]}]


@pytest.mark.parametrize(("model", "version", "fragment"), [("attn9999", "", "unknown variant 'attn9999'"), ("attn0010", "2", "no version '2'")])
def test_unknown_models_and_versions_are_not_found(triton_http, triton_grpc, client, model, version, fragment):
    with pytest.raises(InferenceServerException) as over_http:
        triton_http.get_model_config(model, model_version=version)
    with pytest.raises(InferenceServerException) as over_grpc:
        triton_grpc.get_model_config(model, model_version=version)
    assert over_http.value.status() == "404" and fragment in over_http.value.message()
    assert over_grpc.value.status() == "StatusCode.NOT_FOUND" and fragment in over_grpc.value.message()
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/config"
    assert set(client.get(path).json()) == {"error"}

