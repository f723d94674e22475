"""A real tritonserver (the PyPI wheel's) serving the repository ``attnzoo triton-repo`` wrote: it
loads a plain and a DCN variant with nothing but its folders and ports, answers readiness, model
configuration and metadata, and gives ``attnzoo serve``'s detections for the same checkpoints and
images over HTTP and gRPC, alone or batched by Triton.

Same answers, bit for bit: both servers decode with the same OpenCV, run the same engine on the
same checkpoint with the same CPU kernels ("fast") and the same number of intra-op threads (each
runs in a process of its own with torch's default), and on CPU ``Detector.infer`` runs one forward
per image whatever the batch; the outputs are the model's float32 values on both sides.
"""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException

from app.oip.contract import OUTPUTS
from model_zoo import COCO_CLASSES
from model_zoo.weights import sha256_file
from tests.triton.client_script import (
    CLIENT_SCRIPT,
    CLIENT_TIMEOUT_S,
    Detections,
    detections_of,
    http_client,
    image_input,
    infer,
    run_client_script,
    structure,
)
from tests.triton.conftest import PLAIN_VARIANT, VARIANTS

LOW_SCORE_THR = 0.05  # the test config's own threshold: every detection the model keeps is compared
MAX_BATCH_SIZE = 4  # the repository's default (ATTNZOO_MAX_BATCH's default)
MODULES = {"http": httpclient, "grpc": grpcclient}


@pytest.fixture(scope="module")
def serve_detections(attnzoo_serve, images) -> dict[str, list[Detections]]:
    """attnzoo serve's detections of every test photo at the low threshold, per variant (one v2 request each)."""
    with http_client(attnzoo_serve.http_url) as client:
        return {variant: infer(httpclient, client, variant, list(images.values()), "flat", {"score_thr": LOW_SCORE_THR}) for variant in VARIANTS}


@pytest.fixture(params=list(MODULES))
def transport(request, triton_http, triton_grpc, serve_http, serve_grpc):
    """(client module, Triton's client, attnzoo serve's client) of one transport."""
    if request.param == "http":
        return httpclient, triton_http, serve_http
    return grpcclient, triton_grpc, serve_grpc


def test_loads_both_variants_started_with_nothing_but_its_folders_and_ports(triton, triton_http, triton_grpc):
    assert {arg.split("=")[0] for arg in triton.command[1:]} == {
        "--model-repository", "--backend-directory", "--http-port", "--grpc-port", "--metrics-port",
    }  # fmt: skip
    assert set(triton.environment) == {"LD_LIBRARY_PATH", "PATH"}
    assert triton_http.is_server_live() and triton_http.is_server_ready() and triton_grpc.is_server_ready()
    for variant in VARIANTS:
        assert triton_http.is_model_ready(variant) and triton_grpc.is_model_ready(variant)
    assert triton_http.get_model_repository_index() == [{"name": variant, "version": "1", "state": "READY"} for variant in sorted(VARIANTS)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_config_declares_the_v2_contract_and_the_verified_checkpoint(triton_http, triton_grpc, triton_zoo, zoo_registry, variant):
    http_config = triton_http.get_model_config(variant)
    grpc_config = _grpc_as_http(triton_grpc.get_model_config(variant).config)
    for config in (http_config, grpc_config):
        assert (config["name"], config["backend"], config["max_batch_size"]) == (variant, "python", MAX_BATCH_SIZE)
        assert [(t["name"], t["data_type"], list(t["dims"])) for t in config["input"]] == [("IMAGE", "TYPE_STRING", [1])]
        assert [(t["name"], t["data_type"], list(t["dims"])) for t in config["output"]] == [
            ("num_detections", "TYPE_INT32", [1]),
            ("detection_boxes", "TYPE_FP32", [-1, 4]),
            ("detection_scores", "TYPE_FP32", [-1]),
            ("detection_classes", "TYPE_INT32", [-1]),
        ]
        assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == 10_000  # ATTNZOO_MAX_WAIT_MS's default
        assert [(group["kind"], group["count"]) for group in config["instance_group"]] == [("KIND_CPU", 1)]
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        checkpoint = zoo_registry.resolve(variant).weights_filename
        assert parameters["variant"] == variant and parameters["weights_file"] == checkpoint
        assert parameters["sha256"] == sha256_file(triton_zoo.weights_dir / checkpoint)
        assert parameters["class_names"].split(",") == list(COCO_CLASSES)


def _grpc_as_http(config) -> dict:
    """The fields of a gRPC ModelConfig this test reads, as the HTTP answer holds them."""
    plain = MessageToDict(config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for tensor in plain["input"] + plain["output"]:
        tensor["dims"] = [int(dim) for dim in tensor["dims"]]
    return plain


def test_model_metadata_is_attnzoo_serves(triton_http, serve_http):
    """Names, datatypes and shapes are attnzoo serve's: both declare a model that batches, IMAGE and
    num_detections as [B, 1]."""
    for variant in VARIANTS:
        ours, theirs = serve_http.get_model_metadata(variant), triton_http.get_model_metadata(variant)
        assert (theirs["name"], theirs["versions"]) == (variant, ["1"])
        for kind in ("inputs", "outputs"):
            assert theirs[kind] == ours[kind]
        assert [t["name"] for t in ours["outputs"]] == [spec.name for spec in OUTPUTS]


@pytest.mark.parametrize("variant", VARIANTS)
def test_detections_equal_attnzoo_serves_bit_for_bit(transport, images, serve_detections, variant):
    module, triton_client, _ = transport
    photos = list(images.values())
    # Several images per request, in requests of two sizes.
    detections = [found for start in (0, 3) for found in infer(module, triton_client, variant, photos[start : start + 3], "rows", {"score_thr": LOW_SCORE_THR})]
    assert sum(len(found.scores) for found in serve_detections[variant]) > 0, "the synthetic weights detect something in the photos"
    assert detections == serve_detections[variant]


def test_request_parameters_filter_as_attnzoo_serve(transport, images, serve_detections):
    module, triton_client, serve_client = transport
    unfiltered = serve_detections[PLAIN_VARIANT][list(images).index("coffee_landscape.png")]
    classes = sorted({int(label) for label in unfiltered.classes[:4]})
    parameters = {
        "score_thr": float(unfiltered.scores[len(unfiltered.scores) // 2]),
        "max_dets": 2,
        "classes": ",".join(COCO_CLASSES[label] for label in classes),
    }
    (theirs,) = infer(module, triton_client, PLAIN_VARIANT, [images["coffee_landscape.png"]], "rows", parameters)
    (ours,) = infer(module, serve_client, PLAIN_VARIANT, [images["coffee_landscape.png"]], "flat", parameters)
    assert 0 < len(theirs.scores) <= 2 and set(theirs.classes.tolist()) <= set(classes)
    assert theirs == ours


BAD_REQUESTS = {
    "score_thr out of range": ({"score_thr": 2}, None),
    "unknown parameter": ({"bogus": 1}, None),
    "unknown class": ({"classes": "unicorn"}, None),
    "negative max_dets": ({"max_dets": -1}, None),
    "not an image": ({}, b"<html>not an image</html>"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_gets_attnzoo_serves_message(triton_http, triton_grpc, serve_http, images, case):
    """The same message as attnzoo serve's v2 door; Triton answers it as INVALID_ARG (HTTP 400,
    gRPC INVALID_ARGUMENT), where attnzoo serve answers 422 for a bad parameter or image."""
    parameters, image = BAD_REQUESTS[case]
    image = image or images["chelsea_small.png"]
    raised = {}
    for name, (module, client, shape) in {
        "triton http": (httpclient, triton_http, "rows"),
        "triton grpc": (grpcclient, triton_grpc, "rows"),
        "serve http": (httpclient, serve_http, "flat"),
    }.items():
        with pytest.raises(InferenceServerException) as error:
            client.infer(PLAIN_VARIANT, [image_input(module, [image], shape)], parameters=parameters)
        raised[name] = error.value
    assert raised["triton http"].status() == "400" and raised["triton grpc"].status() == "StatusCode.INVALID_ARGUMENT"
    assert raised["triton http"].message() == raised["triton grpc"].message() == raised["serve http"].message()


def test_concurrent_requests_are_batched_and_each_answer_is_unchanged(triton_http, triton_grpc, images):
    """Requests sent together queue behind the one the instance is running, and Triton's dynamic
    batcher hands them to one execution; an image's detections stay those it gets alone."""
    chosen = [images["astronaut_portrait.jpg"], images["coffee_landscape.png"]]
    alone = [infer(grpcclient, triton_grpc, PLAIN_VARIANT, [image], "rows")[0] for image in chosen]
    before = _executions_by_batch_size(triton_http)
    futures: list[Future] = []
    for index in range(2 * MAX_BATCH_SIZE):
        future: Future = Future()
        futures.append(future)
        triton_grpc.async_infer(
            PLAIN_VARIANT, [image_input(grpcclient, [chosen[index % 2]], "rows")], client_timeout=CLIENT_TIMEOUT_S,
            callback=lambda result, error, future=future: future.set_exception(error) if error else future.set_result(result),
        )  # fmt: skip
    answers = [future.result(timeout=CLIENT_TIMEOUT_S) for future in futures]
    executions = {size: count - before.get(size, 0) for size, count in _executions_by_batch_size(triton_http).items()}
    assert sum(size * count for size, count in executions.items()) == 2 * MAX_BATCH_SIZE
    assert max(size for size, count in executions.items() if count) > 1, executions
    for index, answer in enumerate(answers):
        assert detections_of(answer) == [alone[index % 2]]


def _executions_by_batch_size(client) -> dict[int, int]:
    """batch size → executions of the plain variant so far, from Triton's statistics."""
    (stats,) = client.get_inference_statistics(PLAIN_VARIANT)["model_stats"]
    return {entry["batch_size"]: entry["compute_infer"]["count"] for entry in stats["batch_stats"]}


def test_the_client_script_gets_tritons_answers_of_this_structure(triton, images):
    """What ``attnzoo serve`` must answer for the same client script (the structure it will be
    compared with): Triton's fields and their types, over both transports."""
    answers = run_client_script(triton.http_url, triton.grpc_url, PLAIN_VARIANT, images["chelsea_small.png"], "rows")
    summary = {transport: {call: structure(answer) for call, answer in calls.items()} for transport, calls in answers.items()}
    assert set(summary) == {"http", "grpc"} and all(tuple(calls) == CLIENT_SCRIPT for calls in summary.values())
    http, grpc = summary["http"], summary["grpc"]
    assert http["metadata"] == {
        "inputs": [{"datatype": "str", "name": "str", "shape": ["int"]}],
        "name": "str", "outputs": [{"datatype": "str", "name": "str", "shape": ["int"]}], "platform": "str", "versions": ["str"],
    }  # fmt: skip
    assert {"name", "backend", "max_batch_size", "input", "output", "dynamic_batching", "instance_group", "parameters"} <= set(http["config"])
    assert http["config"]["input"] == [
        {"allow_ragged_batch": "bool", "data_type": "str", "dims": ["int"], "format": "str", "is_non_linear_format_io": "bool",
         "is_shape_tensor": "bool", "name": "str", "optional": "bool"}
    ]  # fmt: skip
    assert http["infer"] == {
        "model_name": "str", "model_version": "str",
        "outputs": [{"datatype": "str", "name": "str", "parameters": {"binary_data_size": "int"}, "shape": ["int"]}],
    }  # fmt: skip
    (model_stats,) = http["statistics"]["model_stats"]
    assert {"name", "version", "last_inference", "inference_count", "execution_count", "inference_stats", "batch_stats"} <= set(model_stats)
    assert model_stats["batch_stats"] == [
        {"batch_size": "int", **{stage: {"count": "int", "ns": "int"} for stage in ("compute_input", "compute_infer", "compute_output")}}
    ]
    assert http["repository_index"] == [{"name": "str", "state": "str", "version": "str"}]
    # gRPC through protobuf's JSON mapping: 64-bit integers are strings, default values left out.
    assert grpc["metadata"]["inputs"] == [{"datatype": "str", "name": "str", "shape": ["str"]}]
    assert set(grpc["infer"]) == {"model_name", "model_version", "outputs", "raw_output_contents"}
    assert grpc["statistics"]["model_stats"][0]["batch_stats"][0]["batch_size"] == "str"
    assert grpc["repository_index"] == {"models": [{"name": "str", "state": "str", "version": "str"}]}
    assert len(answers["http"]["repository_index"]) == len(answers["grpc"]["repository_index"]["models"]) == len(VARIANTS)


# Where attnzoo serve's answers to the client script differ from Triton's in structure (the README's
# "At scale: Triton and KServe" lists them): path (``[]``: a list's elements) → why.
KNOWN_DIFFERENCES = {
    # attnzoo serve's model metadata carries the variant's facts as parameters (an extension); Triton's has none
    **{f"http.metadata.parameters.{name}": "serve's metadata parameters" for name in (
        "class_names", "default_score_thr", "full_name", "sha256", "state", "variant", "weights_source", "published_backend",
        "published_batch_size", "published_box_ap", "published_fps", "published_hardware", "published_inference_ms", "published_mode",
        "published_resolution", "published_train_memory_gb",
    )},  # fmt: skip
    # the Python backend's own configuration (its file, its memory settings), and serve's weights_source
    **{f"{transport}.parameters.{name}.string_value": "backend parameters" for transport in ("http.config", "grpc.config.config")
       for name in ("keep_freed_memory", "malloc_arenas", "weights_file", "weights_source")},  # fmt: skip
    "grpc.config.config.default_model_filename": 'Triton\'s Python backend reads "model.py"; serve has no model file ("", left out)',
    # serve's index lists every registry variant, those it does not serve UNAVAILABLE with the reason
    "http.repository_index[].reason": "serve's index has unavailable variants",
    "grpc.repository_index.models[].reason": "serve's index has unavailable variants",
    # a batch has no input or output stage of its own in serve: 0 ns, left out over gRPC
    "grpc.statistics.model_stats[].batch_stats[].compute_input.ns": "no batch input stage",
    "grpc.statistics.model_stats[].batch_stats[].compute_output.ns": "no batch output stage",
}


def _paths(value, prefix: str = "") -> dict[str, str]:
    """A structure (:func:`structure`) as ``path → type`` of its leaves (an empty mapping: ``{}``);
    ``[]`` marks a list's elements."""
    if isinstance(value, dict):
        if not value:
            return {prefix: "{}"}
        return {path: kind for key, item in value.items() for path, kind in _paths(item, f"{prefix}.{key}" if prefix else key).items()}
    if isinstance(value, list):
        return _paths(value[0], f"{prefix}[]") if value else {prefix: "[]"}
    return {prefix: value}


def _zero_on_one_side(path: str, theirs: dict[str, str], ours: dict[str, str]) -> bool:
    """Whether ``path`` differs only because a message holds nothing but default values on one side,
    which gRPC's JSON writes as ``{}``: a duration of no requests (``fail`` on a server that has failed
    none yet), a setting that is off (serve's pinned memory, on in Triton)."""
    parent = path.rsplit(".", 1)[0]
    return any(side.get(candidate) == "{}" for side in (theirs, ours) for candidate in (path, parent))


def test_attnzoo_serve_answers_the_client_script_with_tritons_structure(triton, attnzoo_serve, images):
    """The same tritonclient calls against both servers: the same field names and types, but for
    :data:`KNOWN_DIFFERENCES` (each of which must still be one)."""
    image = images["chelsea_small.png"]
    theirs = _paths(structure(run_client_script(triton.http_url, triton.grpc_url, PLAIN_VARIANT, image, "rows")))
    ours = _paths(structure(run_client_script(attnzoo_serve.http_url, attnzoo_serve.grpc_url, PLAIN_VARIANT, image, "rows")))
    differences = {path for path in set(theirs) | set(ours) if theirs.get(path) != ours.get(path) and not _zero_on_one_side(path, theirs, ours)}
    assert differences == set(KNOWN_DIFFERENCES), sorted(differences ^ set(KNOWN_DIFFERENCES))
