"""Fetching weights at start, run for real against a local HTTP server that holds the checkpoint:
docker/entrypoint.sh with ATTNZOO_FETCH_ON_START=1 fetches it into the (empty) weights dir and
serves it; the Kubernetes init container fetches what it can and never fails the pod."""

from __future__ import annotations

import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from deploy_support import ENTRYPOINT, TEST_VARIANT, clean_env, free_port, running, write_metafile

MISSING_VARIANT = "attn1111"  # a second variant whose checkpoint the weights server does not have


class _RecordingHandler(SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        self.requested.append(self.path)


@pytest.fixture
def weights_server(synthetic_weights) -> Iterator[tuple[str, list[str]]]:
    """(base URL, paths requested so far) of a real HTTP server over the synthetic weights store."""
    requested: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(synthetic_weights.store)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def weights(tmp_path: Path) -> Iterator[Path]:
    """An empty weights dir, deleted afterwards (it may receive a 160 MB checkpoint)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _entrypoint_env(metafile: Path, weights: Path) -> tuple[int, dict[str, str]]:
    port = free_port()
    env = clean_env(
        ATTNZOO_HOST="127.0.0.1",
        ATTNZOO_PORT=str(port),
        ATTNZOO_METAFILE=str(metafile),
        ATTNZOO_WEIGHTS_DIR=str(weights),
        ATTNZOO_FETCH_ON_START="1",
    )
    return port, env


def test_fetch_on_start_downloads_missing_weights_then_serves_them(
    tmp_path, weights, synthetic_weights, weights_server
):
    from model_zoo.weights import sha256_file

    base_url, requested = weights_server
    metafile = write_metafile(tmp_path / "registry", {TEST_VARIANT: f"{base_url}/{synthetic_weights.filename}"})
    port, env = _entrypoint_env(metafile, weights)
    with running(
        [str(ENTRYPOINT), "--device", "cpu"],
        env=env,
        url=f"http://127.0.0.1:{port}",
        log=tmp_path / "entrypoint.log",
        ready_path="/readyz",
    ) as service:
        fetched = weights / synthetic_weights.filename
        assert fetched.is_file(), service.log_tail()
        assert sha256_file(fetched) == synthetic_weights.sha256
        assert f"/{synthetic_weights.filename}" in requested
        assert [p.name for p in weights.iterdir() if p.is_file()] == [synthetic_weights.filename], "leftover files"


def test_a_failed_fetch_still_serves_and_reports_the_variant_unavailable(
    tmp_path, weights, synthetic_weights, weights_server
):
    base_url, requested = weights_server
    metafile = write_metafile(tmp_path / "registry", {TEST_VARIANT: f"{base_url}/gone/{synthetic_weights.filename}"})
    port, env = _entrypoint_env(metafile, weights)
    with running(
        [str(ENTRYPOINT), "--device", "cpu"],
        env=env,
        url=f"http://127.0.0.1:{port}",
        log=tmp_path / "entrypoint.log",
        ready_path="/healthz",
    ) as service:
        assert f"/gone/{synthetic_weights.filename}" in requested, "the entrypoint did not try to fetch"
        ready = service.get("/readyz")
        assert ready.status_code == 503
        assert "fetch failed" in service.log_tail()
        leftovers = [p.name for p in weights.iterdir() if p.is_file()]
        assert leftovers == [], "a failed download must leave nothing in the weights dir"


def test_k8s_init_container_fetches_what_it_can_and_never_blocks_the_pod(
    tmp_path, weights, synthetic_weights, weights_server, k8s_objects
):
    """The Deployment's init container command, run as written, with one checkpoint served and one
    missing (404): it fetches the first, reports the second, and exits 0 so the pod starts."""
    from model_zoo.weights import sha256_file

    base_url, requested = weights_server
    gone = f"/gone/{MISSING_VARIANT}-12345678.pth"
    metafile = write_metafile(
        tmp_path / "registry",
        {MISSING_VARIANT: f"{base_url}{gone}", TEST_VARIANT: f"{base_url}/{synthetic_weights.filename}"},
    )
    (init,) = k8s_objects[("Deployment", "attnzoo")]["spec"]["template"]["spec"]["initContainers"]
    env = clean_env(**{e["name"]: e["value"] for e in init.get("env", [])})
    env.update(ATTNZOO_METAFILE=str(metafile), ATTNZOO_WEIGHTS_DIR=str(weights))  # /weights, here
    result = subprocess.run(init["command"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert gone in requested, "the missing checkpoint was not even tried"
    fetched = weights / synthetic_weights.filename
    assert fetched.is_file() and sha256_file(fetched) == synthetic_weights.sha256, result.stderr
    assert MISSING_VARIANT in result.stderr and "the service serves the others" in result.stderr
