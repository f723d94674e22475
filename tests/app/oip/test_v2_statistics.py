"""The statistics extension: Triton's model statistics of each loaded variant, recorded by the core
for every front door (images, forwards, per-request stages, failures), over HTTP and gRPC, and the
same figures as Triton's ``nv_inference_*`` metrics."""

from __future__ import annotations

import base64

import httpx
import numpy as np
from oip_support import grpcclient, httpclient, image_input

VARIANT = "attn0010"
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def statistics(client, model: str = VARIANT) -> dict:
    (entry,) = client.get_inference_statistics(model)["model_stats"]
    return entry


def test_statistics_rise_by_exactly_the_images_and_forwards_sent(live_server, triton_http, triton_grpc, jpeg, metric):
    base = live_server.base_url
    before = statistics(triton_http)
    forwards_before = metric(base, "attnzoo_batch_size_count", variant=VARIANT)
    column = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    column.set_data_from_numpy(np.array([[jpeg]], dtype=np.object_))
    triton_http.infer(VARIANT, [column])  # one image, [B, 1] as a Triton client sends it
    triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg, jpeg])])  # two images in one request
    assert httpx.post(f"{base}/detect", params={"variant": VARIANT}, content=jpeg, timeout=300).status_code == 200
    after = statistics(triton_http)
    forwards = metric(base, "attnzoo_batch_size_count", variant=VARIANT) - forwards_before
    assert after["inference_count"] - before["inference_count"] == 4  # images
    assert after["execution_count"] - before["execution_count"] == forwards >= 2  # forwards, however the batcher grouped them
    stats_before, stats_after = before["inference_stats"], after["inference_stats"]
    assert stats_after["success"]["count"] - stats_before["success"]["count"] == 3  # requests
    assert stats_after["fail"] == stats_before["fail"]
    for stage in STAGES:  # per successful request, as Triton (perf_analyzer needs these counts equal)
        assert stats_after[stage]["count"] - stats_before[stage]["count"] == 3, stage
        assert stats_after[stage]["ns"] >= stats_before[stage]["ns"], stage
    assert stats_after["success"]["ns"] > stats_before["success"]["ns"]
    assert stats_after["compute_infer"]["ns"] > stats_before["compute_infer"]["ns"]
    batches = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in after["batch_stats"]}
    batches_before = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in before["batch_stats"]}
    images_forwarded = sum(size * (count - batches_before.get(size, 0)) for size, count in batches.items())
    assert images_forwarded == 4
    assert after["last_inference"] > before["last_inference"]  # milliseconds since the epoch; 0 before the first
    assert (after["name"], after["version"]) == (VARIANT, "1")
    over_grpc = triton_grpc.get_inference_statistics(VARIANT, as_json=True)["model_stats"][0]
    assert int(over_grpc["inference_count"]) == after["inference_count"] and over_grpc["version"] == "1"


def test_the_metrics_are_the_statistics(live_server, triton_http, jpeg, metric):
    base = live_server.base_url
    triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])])
    entry = statistics(triton_http)
    labels = {"model": VARIANT, "version": "1"}
    stats = entry["inference_stats"]
    assert metric(base, "nv_inference_count", **labels) == entry["inference_count"]
    assert metric(base, "nv_inference_exec_count", **labels) == entry["execution_count"]
    assert metric(base, "nv_inference_request_success", **labels) == stats["success"]["count"]
    assert metric(base, "nv_inference_request_duration_us", **labels) == stats["success"]["ns"] // 1000
    for stage in STAGES:
        assert metric(base, f"nv_inference_{stage}_duration_us", **labels) == stats[stage]["ns"] // 1000, stage
    assert metric(base, "nv_inference_request_failure", **labels) == stats["fail"]["count"]
    assert metric(base, "nv_inference_pending_request_count", **labels) == 0


def test_a_request_the_variant_failed_counts_as_a_failure_and_a_refused_one_nowhere(live_server, triton_http, jpeg, metric):
    base = live_server.base_url
    before = statistics(triton_http)
    failures_before = metric(base, "nv_inference_request_failure", model=VARIANT, reason="OTHER")
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(b"not an image").decode()]}
    assert httpx.post(f"{base}/v2/models/{VARIANT}/infer", json={"inputs": [image]}, timeout=60).status_code == 422
    bad_parameter = {"inputs": [{**image, "data": [base64.b64encode(jpeg).decode()]}], "parameters": {"score_thr": 7}}
    assert httpx.post(f"{base}/v2/models/{VARIANT}/infer", json=bad_parameter, timeout=60).status_code == 422
    after = statistics(triton_http)
    assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1  # the bad image only
    assert after["inference_stats"]["success"] == before["inference_stats"]["success"]
    assert after["inference_count"] == before["inference_count"]
    assert metric(base, "nv_inference_request_failure", model=VARIANT, reason="OTHER") == failures_before + 1


def test_all_models_lists_the_loaded_variants_and_stats_is_no_model(triton_http, triton_grpc, client):
    every = triton_http.get_inference_statistics()["model_stats"]
    assert [entry["name"] for entry in every] == ["attn1111", "attn0010"]  # registry order; the others are not loaded
    assert [entry["name"] for entry in triton_grpc.get_inference_statistics(as_json=True)["model_stats"]] == ["attn1111", "attn0010"]
    entry = every[1]
    assert set(entry) == {
        "name", "version", "last_inference", "inference_count", "execution_count", "inference_stats", "response_stats", "batch_stats",
        "memory_usage",
    }  # fmt: skip
    assert set(entry["inference_stats"]) == {*STAGES, "success", "fail", "cache_hit", "cache_miss"}
    assert entry["response_stats"] == {} and entry["memory_usage"] == []
    assert client.post("/v2/models/stats").status_code == 405
    assert client.get(f"/v2/models/{VARIANT}/versions/1/stats").json()["model_stats"][0]["name"] == VARIANT


def test_statistics_of_what_has_none_are_refused(client):
    cases = [
        ("attn0010-dcn", 404, "is not served by this process"),
        ("attn9999", 404, "unknown variant"),
        ("auto", 400, "no statistics of its own"),
        ("attn0010/versions/2", 404, "no version '2'"),
    ]
    for model, status, fragment in cases:
        response = client.get(f"/v2/models/{model}/stats")
        assert response.status_code == status and fragment in response.json()["error"], response.text
