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
    stages = ("queue", "preprocess", "model", "postprocess")
    stages_before = {s: metric(base, "attnzoo_stage_duration_seconds_count", variant="attn1111", stage=s) for s in stages}
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


def test_pages_and_their_files_are_labelled_by_their_route(client, metric, eventually, live_server):
    base = live_server.base_url
    labels = {  # path → the endpoint label it is counted under
        "/": "/",
        "/static/app.js": "/static/{path}",
        "/static/style.css": "/static/{path}",
        "/docs": "/docs",
        "/openapi.json": "/openapi.json",
        "/docs-assets/swagger-ui.css": "/docs-assets/{path}",
        "/models/attn1111": "/models/{variant}",
    }
    before = {path: metric(base, "attnzoo_requests_total", variant="", endpoint=label, status="200") for path, label in labels.items()}
    unmatched_ok_before = metric(base, "attnzoo_requests_total", endpoint="unmatched", status="200")
    for path in labels:
        assert client.get(path).status_code == 200, path
    for path, label in labels.items():
        expected = before[path] + sum(1 for other, other_label in labels.items() if other_label == label)
        eventually(lambda: metric(base, "attnzoo_requests_total", variant="", endpoint=label, status="200") == expected)
    assert metric(base, "attnzoo_requests_total", endpoint="unmatched", status="200") == unmatched_ok_before == 0
    # a file the mount does not have is its 404, not an unmatched path
    missing_before = metric(base, "attnzoo_requests_total", endpoint="/static/{path}", status="404")
    assert client.get("/static/nothing.js").status_code == 404
    eventually(lambda: metric(base, "attnzoo_requests_total", endpoint="/static/{path}", status="404") == missing_before + 1)


def test_compare_is_labelled_with_the_variants_that_ran_in_registry_order(client, metric, eventually, live_server, jpeg):
    base = live_server.base_url
    both = "attn1111,attn0010"  # registry order
    before = {label: metric(base, "attnzoo_requests_total", variant=label, endpoint="/compare", status="200") for label in (both, "attn0010")}
    for variants in (None, "attn0010,attn1111", "attn1111,attn0010", "attn0010"):
        params = {"variants": variants} if variants else {}
        assert client.post("/compare", params=params, content=jpeg).status_code == 200
    eventually(lambda: metric(base, "attnzoo_requests_total", variant="attn0010", endpoint="/compare", status="200") == before["attn0010"] + 1)
    assert metric(base, "attnzoo_requests_total", variant=both, endpoint="/compare", status="200") == before[both] + 3
    assert metric(base, "attnzoo_requests_total", variant="", endpoint="/compare", status="200") == 0
    assert metric(base, "attnzoo_requests_total", variant="attn0010,attn1111", endpoint="/compare", status="200") == 0


def test_process_metrics_and_no_created_series(client):
    text = client.get("/metrics").text
    found = families(client)
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds", "process_open_fds"):
        assert name in found, name
    assert [line for line in text.splitlines() if "_created" in line] == []
