"""Triton's metrics beside the service's own: the ``nv_inference_*`` families (labels ``model`` and
``version``) that a Triton dashboard reads, scraped by a real Prometheus (Debian's binary, the repo's
scrape configuration) and moving with the requests; a count of images inferred; the build; and
``promtool check metrics`` finding nothing but the naming lints Triton's own exact names draw."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml
from oip_support import grpcclient, httpclient, image_input

from model_zoo import build_info
from tests.app.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_CONFIG = REPO_ROOT / "docker" / "prometheus" / "prometheus.yml"
VARIANT = "attn0010"
TRITON_COUNTERS = (
    "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count",
    "nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us",
)  # fmt: skip
# What promtool 2.42 says of Triton's own names (it says the same of Triton's /metrics): the
# durations' unit is abbreviated (_us) and a gauge ends in _count. They are kept for Triton's
# dashboards; nothing else may be found.
NAMING_LINTS = {
    **{name: "metric names should not contain abbreviated units" for name in TRITON_COUNTERS if name.endswith("_us")},
    "nv_inference_pending_request_count": 'non-histogram and non-summary metrics should not have "_count" suffix',
}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian's prometheus package: apt-get install prometheus)")
    return path


def test_promtool_finds_only_the_naming_lints_of_tritons_names(live_server, triton_http, jpeg):
    triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])])  # every family has samples
    exposition = httpx.get(f"{live_server.base_url}/metrics", timeout=30).content
    checked = subprocess.run([binary("promtool"), "check", "metrics"], input=exposition, capture_output=True, timeout=60, check=False)
    assert checked.returncode == 3, checked  # 3: lint findings, no parse error (1)
    findings = dict(line.split(" ", 1) for line in checked.stderr.decode().splitlines() if line.strip())
    assert findings == NAMING_LINTS


def test_the_build_and_the_images_inferred_are_exported(live_server, triton_grpc, jpeg, metric):
    build = build_info()
    assert metric(live_server.base_url, "attnzoo_build_info", version=build.version, commit=build.revision or "") == 1
    before = metric(live_server.base_url, "attnzoo_images_inferred_total", variant=VARIANT)
    triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg, jpeg])])
    assert metric(live_server.base_url, "attnzoo_images_inferred_total", variant=VARIANT) == before + 2


@pytest.fixture(scope="module")
def prometheus(live_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus with the repo's attnzoo scrape job aimed at the shared server, every second; its URL."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "attnzoo"]
    job["static_configs"] = [{"targets": [live_server.base_url.removeprefix("http://")]}]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"] = [job]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary("prometheus"), f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]  # fmt: skip
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait(lambda: _ready(url), 60, f"Prometheus at {url} did not start:\n{(folder / 'prometheus.log').read_text()[-3000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait(condition: Callable[[], bool], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(message)
        time.sleep(0.25)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=30).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def value(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_tritons_metrics_and_they_move_with_the_requests(prometheus, live_server, triton_http, triton_grpc, jpeg):
    selector = f'{{job="attnzoo", model="{VARIANT}", version="1"}}'
    for name in TRITON_COUNTERS:
        wait(lambda name=name: bool(query(prometheus, f"{name}{selector}")), 30, f"{name} was not scraped")
    assert {series["metric"]["reason"] for series in query(prometheus, f"nv_inference_request_failure{selector}")} == {
        "OTHER", "BACKEND", "CANCELED", "REJECTED",
    }  # fmt: skip

    def scraped(name: str) -> float | None:
        return value(prometheus, f"{name}{selector}")

    def served(name: str) -> float:
        (entry,) = triton_http.get_inference_statistics(VARIANT)["model_stats"]
        return {"nv_inference_count": entry["inference_count"], "nv_inference_request_success": entry["inference_stats"]["success"]["count"]}[name]

    wait(lambda: scraped("nv_inference_count") == served("nv_inference_count"), 30, "the scrape did not catch up with the statistics")
    images_before, requests_before = scraped("nv_inference_count"), scraped("nv_inference_request_success")
    triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])])
    triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg, jpeg])])
    wait(lambda: scraped("nv_inference_count") == images_before + 3, 30, f"nv_inference_count is {scraped('nv_inference_count')}")
    wait(lambda: scraped("nv_inference_request_success") == requests_before + 2, 30, "nv_inference_request_success did not move")
    assert scraped("nv_inference_count") == served("nv_inference_count")
    # as a Triton dashboard asks: a rate of the untyped counters
    exec_rate = f"sum(rate(nv_inference_exec_count{selector}[1m]))"
    wait(lambda: (value(prometheus, exec_rate) or 0.0) > 0, 30, f"{exec_rate} stayed empty or 0")
