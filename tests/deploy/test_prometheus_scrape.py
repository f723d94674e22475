"""The real service, with a synthetic attn0010 checkpoint loaded, scraped by a real Prometheus
(Debian's binary) started from the repo's scrape config pointed at the test's port. Everything
the dashboard and the autoscaler ask of Prometheus is asked here, through its HTTP API."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml
from deploy_support import (
    PROMETHEUS_CONFIG,
    TEST_VARIANT,
    Process,
    clean_env,
    dashboard_exprs,
    free_port,
    grafana_to_promql,
    load_yaml,
    running,
    serve_command,
    write_metafile,
)

DETECT_CALLS = 3
STAGES = {"queue", "preprocess", "model", "postprocess"}


@pytest.fixture(scope="module")
def loaded_service(tmp_path_factory: pytest.TempPathFactory, synthetic_weights) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("loaded")
    weights = folder / "weights"
    weights.mkdir()
    try:
        os.link(synthetic_weights.path, weights / synthetic_weights.filename)
    except OSError:
        shutil.copy(synthetic_weights.path, weights / synthetic_weights.filename)
    # The URL is never fetched: the file is already in place under its name.
    metafile = write_metafile(folder / "registry", {TEST_VARIANT: f"https://weights.invalid/{synthetic_weights.filename}"})
    port = free_port()
    env = clean_env(ATTNZOO_METAFILE=str(metafile), ATTNZOO_WEIGHTS_DIR=str(weights))
    try:
        with running(
            serve_command(port, "--variants", TEST_VARIANT, "--device", "cpu"),
            env=env,
            url=f"http://127.0.0.1:{port}",
            log=folder / "service.log",
            ready_path="/readyz",
        ) as process:
            yield process
    finally:
        shutil.rmtree(weights, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, prometheus_bin, loaded_service) -> Iterator[Process]:
    """Prometheus with the repo's attnzoo scrape job, retargeted at the test service, 1 s interval."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "attnzoo"]
    job["static_configs"] = [{"targets": [loaded_service.url.removeprefix("http://")]}]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"] = [job]
    config_path = folder / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    cmd = [
        prometheus_bin,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with running(
        cmd,
        env=clean_env(),
        url=f"http://127.0.0.1:{port}",
        log=folder / "prometheus.log",
        ready_path="/-/ready",
        timeout_s=60,
    ) as process:
        yield process


@pytest.fixture(scope="module")
def detected(loaded_service, test_image_png) -> list[dict[str, Any]]:
    """A few real /detect calls; their JSON answers."""
    answers = []
    for _ in range(DETECT_CALLS):
        response = httpx.post(
            f"{loaded_service.url}/detect",
            params={"variant": TEST_VARIANT, "score_thr": 0.05},
            files={"file": ("shapes.png", test_image_png, "image/png")},
            timeout=120,
        )
        assert response.status_code == 200, f"{response.status_code} {response.text}\n{loaded_service.log_tail()}"
        answers.append(response.json())
    return answers


def query(prometheus: Process, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": promql}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{promql}\n{body}"
    return body["data"]["result"]


def eventually(
    prometheus: Process, promql: str, accept: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0
):
    """Poll an instant query until ``accept(result)``; scrapes come every second."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = query(prometheus, promql)
        if accept(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{promql} → {result} after {timeout_s:.0f} s\n{prometheus.log_tail()}")
        time.sleep(0.5)


def test_prometheus_scrapes_the_service(prometheus):
    result = eventually(prometheus, 'up{job="attnzoo"}', lambda r: bool(r) and r[0]["value"][1] == "1")
    assert len(result) == 1


def test_latency_histogram_has_samples_after_detect_calls(prometheus, detected):
    assert all(answer["variant"] == TEST_VARIANT for answer in detected)
    promql = f'sum(attnzoo_request_duration_seconds_count{{variant="{TEST_VARIANT}"}})'
    eventually(prometheus, promql, lambda r: bool(r) and float(r[0]["value"][1]) >= DETECT_CALLS)
    # The per-stage histogram behind the dashboard's stage panel, one series per stage.
    promql = f'count by (stage) (attnzoo_stage_duration_seconds_count{{variant="{TEST_VARIANT}"}})'
    result = eventually(prometheus, promql, lambda r: {s["metric"]["stage"] for s in r} >= STAGES)
    assert {s["metric"]["stage"] for s in result} == STAGES
    promql = f'sum(attnzoo_requests_total{{variant="{TEST_VARIANT}", status="200"}})'
    eventually(prometheus, promql, lambda r: bool(r) and float(r[0]["value"][1]) >= DETECT_CALLS)


def test_every_dashboard_query_is_accepted_by_prometheus(prometheus, detected, dashboard):
    eventually(prometheus, "sum(attnzoo_batch_size_count)", lambda r: bool(r) and float(r[0]["value"][1]) >= 1)
    for expr in dashboard_exprs(dashboard):
        query(prometheus, grafana_to_promql(expr))  # a PromQL error fails here
    # The dashboard's variant picker lists the loaded variant.
    response = httpx.get(
        f"{prometheus.url}/api/v1/label/variant/values", params={"match[]": "attnzoo_model_ready"}, timeout=30
    )
    assert TEST_VARIANT in response.json()["data"]


def test_autoscaling_queries_return_a_value_per_pod(prometheus, detected, k8s_objects):
    """prometheus-adapter's metricsQuery, filled in the way the adapter fills it."""
    rules = yaml.safe_load(k8s_objects[("ConfigMap", "prometheus-adapter")]["data"]["config.yaml"])["rules"]
    for rule in rules:
        series = rule["name"]["as"]
        promql = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'job="attnzoo"')
            .replace("<<.GroupBy>>", "instance")
        )
        result = eventually(prometheus, promql, bool)
        assert len(result) == 1 and float(result[0]["value"][1]) >= 0
