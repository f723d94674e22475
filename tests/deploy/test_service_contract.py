"""What the deployment files expect of the running service, asked of the real service.

The service is started the way the container starts it (docker/entrypoint.sh, no weights, no
ATTNZOO_FETCH_ON_START): every variant is unavailable, and no request has reached /detect yet.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from deploy_support import (
    ENTRYPOINT,
    PROMETHEUS_CONFIG,
    Process,
    clean_env,
    dashboard_exprs,
    free_port,
    load_yaml,
    metric_names_in,
    parse_dockerfile,
    running,
)
from prometheus_client.parser import text_string_to_metric_families

# Sample names each metric type exposes (prometheus-client's parser strips a counter's _total).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "unknown": ("",),
}


@pytest.fixture(scope="module")
def empty_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("unfetched-weights")


@pytest.fixture(scope="module")
def unfetched(tmp_path_factory: pytest.TempPathFactory, empty_weights_dir: Path) -> Iterator[Process]:
    folder = tmp_path_factory.mktemp("unfetched")
    port = free_port()
    env = clean_env(ATTNZOO_HOST="127.0.0.1", ATTNZOO_PORT=str(port), ATTNZOO_WEIGHTS_DIR=str(empty_weights_dir))
    with running(
        [str(ENTRYPOINT), "--device", "cpu"],
        env=env,
        url=f"http://127.0.0.1:{port}",
        log=folder / "service.log",
        ready_path="/healthz",
    ) as process:
        yield process


@pytest.fixture(scope="module")
def exposition(unfetched) -> dict[str, str]:
    """{sample name: metric type} that /metrics declares, before any /detect request."""
    response = unfetched.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    declared = {}
    for family in text_string_to_metric_families(response.text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            declared[family.name + suffix] = family.type
    return declared


def _probe_paths(compose: dict[str, Any], k8s_objects: dict[tuple[str, str], Any]) -> dict[str, str]:
    """Every HTTP path a deployment file sends to the service, with where it comes from."""
    paths = {}
    _, *stages = parse_dockerfile()
    healthcheck = next(i.args for i in stages[-1] if i.keyword == "HEALTHCHECK")
    paths.update({p: "Dockerfile HEALTHCHECK" for p in re.findall(r"/(?:healthz|readyz)\b", healthcheck)})
    for name, service in compose["services"].items():
        if "healthcheck" in service:
            for path in re.findall(r"127\.0\.0\.1:\d+(/[a-z]+)", service["healthcheck"]["test"][-1]):
                paths[path] = f"docker-compose.yml {name} healthcheck"
    pod = k8s_objects[("Deployment", "attnzoo")]["spec"]["template"]
    for container in pod["spec"]["containers"]:
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind in container:
                paths[container[kind]["httpGet"]["path"]] = f"deployment.yaml {kind}"
    paths[pod["metadata"]["annotations"]["prometheus.io/path"]] = "deployment.yaml annotation"
    for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]:
        if job["job_name"] == "attnzoo":
            paths[job.get("metrics_path", "/metrics")] = "prometheus.yml"
    return paths


def test_every_path_the_deployment_probes_exists(unfetched, compose, k8s_objects, empty_weights_dir):
    from app.main import create_app
    from app.settings import Settings

    paths = _probe_paths(compose, k8s_objects)
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)
    # The app's own list of its routes (FastAPI nests included routers; the schema lists them all).
    routes = set(create_app(Settings(weights_dir=empty_weights_dir)).openapi()["paths"])
    assert set(paths) <= routes, f"not routes of the app: {sorted(set(paths) - routes)}"
    for path, source in paths.items():
        status = unfetched.get(path).status_code
        assert status not in (404, 405), f"{source} probes {path}, the service answers {status}"


def test_liveness_passes_and_readiness_fails_without_weights(unfetched):
    assert unfetched.get("/healthz").status_code == 200
    assert unfetched.get("/metrics").status_code == 200
    ready = unfetched.get("/readyz")
    assert ready.status_code == 503, "a service with no weights must not report ready"
    assert "attnzoo fetch" in ready.text or "missing" in ready.text.lower(), ready.text


def test_nothing_is_downloaded_unless_asked(unfetched, empty_weights_dir):
    assert list(empty_weights_dir.iterdir()) == []


def test_image_healthcheck_command_passes_on_a_live_service(unfetched):
    _, *stages = parse_dockerfile()
    command = next(i.args for i in stages[-1] if i.keyword == "HEALTHCHECK").partition(" CMD ")[2]
    port = unfetched.url.rsplit(":", 1)[1]
    result = subprocess.run(["sh", "-c", command], env=clean_env(ATTNZOO_PORT=port), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()


def test_compose_healthcheck_command_fails_while_not_ready(unfetched, compose):
    port = unfetched.url.rsplit(":", 1)[1]
    test = compose["services"]["attnzoo"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", word) for word in test[1:]]
    result = subprocess.run(command, env=clean_env(), capture_output=True, timeout=60)
    assert result.returncode != 0, "the readiness health check passed on a service with no model loaded"
    assert "503" in result.stderr.decode()


def test_every_metric_in_the_dashboard_is_declared_before_any_request(exposition, dashboard):
    used = set().union(*(metric_names_in(expr) for expr in dashboard_exprs(dashboard)))
    used |= metric_names_in(json.dumps(dashboard["templating"]))
    missing = sorted(name for name in used if name not in exposition)
    assert not missing, f"the dashboard queries metrics /metrics does not declare: {missing}"
    # Histogram quantiles need histograms, rates of *_total need counters.
    for name in used:
        if name.endswith("_bucket"):
            assert exposition[name] == "histogram"
        if name.endswith("_total"):
            assert exposition[name] == "counter"


def test_autoscaling_metrics_are_gauges_the_service_declares(exposition, k8s_objects):
    rules = yaml.safe_load(k8s_objects[("ConfigMap", "prometheus-adapter")]["data"]["config.yaml"])["rules"]
    for rule in rules:
        series = re.match(r"'?([a-z_:][a-z0-9_:]*)", rule["seriesQuery"])[1]
        assert exposition.get(series) == "gauge", f"{series}: {exposition.get(series)}"


def test_promtool_accepts_the_prometheus_config(promtool_bin):
    result = subprocess.run(
        [promtool_bin, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
