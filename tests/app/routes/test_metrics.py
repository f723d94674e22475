"""GET /metrics: the contract's metric names, and values that move with the requests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

METRIC_NAMES = {  # the contract with docker/ and Grafana (base names, as the parser reports them)
    "attnzoo_requests": "counter",
    "attnzoo_request_duration_seconds": "histogram",
    "attnzoo_stage_duration_seconds": "histogram",
    "attnzoo_batch_size": "histogram",
    "attnzoo_inflight_requests": "gauge",
    "attnzoo_queue_depth": "gauge",
    "attnzoo_model_load_seconds": "gauge",
    "attnzoo_gpu_memory_bytes": "gauge",
    "attnzoo_model_ready": "gauge",
}


def families(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def test_every_contract_metric_is_exposed_with_its_type(client):
    found = families(client)
    for name, kind in METRIC_NAMES.items():
        assert name in found, name
        assert found[name].type == kind
    assert "attnzoo_requests_total" in client.get("/metrics").text


def test_metrics_move_with_requests(client, metric, eventually, live_server, jpeg):
    base = live_server.base_url
    ok_before = metric(base, "attnzoo_requests_total", variant="attn1111", endpoint="/detect", status="200")
    missing_before = metric(base, "attnzoo_requests_total", variant="", endpoint="/detect", status="404")
    latency_before = metric(base, "attnzoo_request_duration_seconds_count", variant="attn1111", endpoint="/detect")
    stages_before = {s: metric(base, "attnzoo_stage_duration_seconds_count", variant="attn1111", stage=s) for s in ("queue", "preprocess", "model", "postprocess")}
    batches_before = metric(base, "attnzoo_batch_size_count", variant="attn1111")

    for _ in range(2):
        assert client.post("/detect", params={"variant": "attn1111"}, content=jpeg).status_code == 200
    assert client.post("/detect", params={"variant": "nope"}, content=jpeg).status_code == 404

    # request metrics are recorded once the response is sent: they may trail the client a little
    eventually(lambda: metric(base, "attnzoo_requests_total", variant="", endpoint="/detect", status="404") == missing_before + 1)
    assert metric(base, "attnzoo_requests_total", variant="attn1111", endpoint="/detect", status="200") == ok_before + 2
    assert metric(base, "attnzoo_request_duration_seconds_count", variant="attn1111", endpoint="/detect") == latency_before + 2
    for stage, before in stages_before.items():
        assert metric(base, "attnzoo_stage_duration_seconds_count", variant="attn1111", stage=stage) == before + 2
    assert metric(base, "attnzoo_batch_size_count", variant="attn1111") == batches_before + 2
    assert metric(base, "attnzoo_inflight_requests", variant="attn1111") == 0
    assert metric(base, "attnzoo_queue_depth", variant="attn1111") == 0


def test_model_state_metrics(client, metric, eventually, live_server):
    base = live_server.base_url
    for variant in ("attn1111", "attn0010"):
        assert metric(base, "attnzoo_model_ready", variant=variant) == 1
        assert metric(base, "attnzoo_model_load_seconds", variant=variant) > 0
    for variant in ("attn1111-dcn", "attn0010-dcn"):
        assert metric(base, "attnzoo_model_ready", variant=variant) == 0
    before = metric(base, "attnzoo_requests_total", variant="", endpoint="/healthz", status="200")
    client.get("/healthz")
    eventually(lambda: metric(base, "attnzoo_requests_total", variant="", endpoint="/healthz", status="200") == before + 1)


def test_unmatched_paths_share_one_label(client, metric, eventually, live_server):
    before = metric(live_server.base_url, "attnzoo_requests_total", endpoint="unmatched", status="404")
    for path in ("/nothing", "/wp-admin/x.php"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"] == "not_found"
    eventually(lambda: metric(live_server.base_url, "attnzoo_requests_total", endpoint="unmatched", status="404") == before + 2)
