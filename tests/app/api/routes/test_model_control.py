"""POST /models/{variant}/load and /unload against a real server: the token guard, a reload that
swaps the weights while a request is running, a refused file, and the memory an unload frees."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from app.main import create_app
from model_zoo import load_registry, write_synthetic_checkpoint
from model_zoo.weights import sha256_file
from tests.app.conftest import LiveServer, ModelGate, Zoo

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def control_server(zoo: Zoo, tmp_path: Path) -> Iterator[LiveServer]:
    """attn0010 served from a private copy of the weights (so the test may rewrite them), with an
    admin token and without hash verification (a replaced file keeps the registry's name)."""
    weights = tmp_path / "weights"
    shutil.copytree(zoo.weights_dir, weights)
    settings = zoo.settings(weights_dir=weights, variants=["attn0010"], admin_token=TOKEN, verify_hash=False)
    server = LiveServer(create_app(settings)).start()
    yield server
    server.stop()


def _weights_file(server: LiveServer, variant: str) -> Path:
    return server.app.state.service.pool.slot(variant).weights_path


def _rss_bytes() -> int:
    """Resident memory of this process (the in-process server's), from /proc."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def test_without_a_configured_token_control_is_forbidden(client):
    for action in ("load", "unload"):
        response = client.post(f"/models/attn0010/{action}", headers=AUTH)
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "model_control_disabled"
    assert client.post("/detect", params={"variant": "attn0010"}, content=b"x").status_code == 422  # still serving


def test_a_missing_or_wrong_token_is_a_401(control_server):
    base = control_server.base_url
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
        response = httpx.post(f"{base}/models/attn0010/unload", headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert httpx.get(f"{base}/models/attn0010").json()["state"] == "loaded"  # nothing happened


def test_reload_swaps_the_weights_and_running_requests_finish_on_the_old_model(control_server, zoo, jpeg, metric):
    base = control_server.base_url
    path = _weights_file(control_server, "attn0010")
    old_sha = sha256_file(path)
    old_model = control_server.app.state.service.pool.served("attn0010").detector.model
    gate = ModelGate()
    old_model.forward = gate.wrap(old_model.forward)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(httpx.post, f"{base}/detect", params={"variant": "attn0010"}, content=jpeg, timeout=120)
        assert gate.entered.wait(60)  # the request is inside the old model's forward
        write_synthetic_checkpoint(load_registry(zoo.metafile).resolve("attn0010"), path, seed=99)  # new weights
        new_sha = sha256_file(path)
        reloaded = pool.submit(httpx.post, f"{base}/models/attn0010/load", headers=AUTH, timeout=300)
        swapped = reloaded.result(300)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["sha256"] == new_sha != old_sha
        # a new request goes to the new model, whose forward waits for the device (held by the old one)
        later = pool.submit(httpx.post, f"{base}/detect", params={"variant": "attn0010"}, content=jpeg, timeout=120)
        gate.release()
        held, after = running.result(120), later.result(120)
    assert after.status_code == 200 and after.json()["sha256"] == new_sha  # new requests: the new model
    assert held.status_code == 200 and held.json()["sha256"] == old_sha  # it finished on the old model
    assert metric(base, "attnzoo_model_control_total", variant="attn0010", action="load", outcome="ok") == 1


def test_weights_that_fail_verification_leave_the_old_model_serving(zoo, tmp_path, jpeg, metric):
    weights = tmp_path / "weights"
    shutil.copytree(zoo.weights_dir, weights)
    server = LiveServer(create_app(zoo.settings(weights_dir=weights, variants=["attn0010"], admin_token=TOKEN))).start()
    try:
        base = server.base_url
        path = _weights_file(server, "attn0010")
        sha = sha256_file(path)
        path.write_bytes(b"not a checkpoint" * 1000)  # its hash no longer matches the file name
        refused = httpx.post(f"{base}/models/attn0010/load", headers=AUTH, timeout=300)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["error"] == "weights_refused" and "attn0010" in body["detail"] and "sha256" in body["detail"]
        still = httpx.post(f"{base}/detect", params={"variant": "attn0010"}, content=jpeg, timeout=120)
        assert still.status_code == 200 and still.json()["sha256"] == sha
        assert metric(base, "attnzoo_model_control_total", variant="attn0010", action="load", outcome="weights_refused") == 1
    finally:
        server.stop()


def test_unload_frees_the_model_memory_and_load_serves_it_again(control_server, jpeg):
    base = control_server.base_url
    core = control_server.app.state.service.pool.served("attn0010")
    parameter_bytes = sum(p.numel() * p.element_size() for p in core.detector.model.parameters())
    del core
    before = _rss_bytes()
    unloaded = httpx.post(f"{base}/models/attn0010/unload", headers=AUTH, timeout=120)
    freed = before - _rss_bytes()
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json()["state"] == "unavailable" and not unloaded.json()["ready"]
    # the weights (and the kept feature maps) go back to the OS: at least half the parameters' size
    assert freed >= parameter_bytes // 2, (freed, parameter_bytes)
    gone = httpx.post(f"{base}/detect", params={"variant": "attn0010"}, content=jpeg, timeout=120)
    assert gone.status_code == 404 and gone.json()["error"] == "variant_not_served"
    loaded = httpx.post(f"{base}/models/attn0010/load", headers=AUTH, timeout=300)
    assert loaded.status_code == 200 and loaded.json()["state"] == "loaded"
    assert httpx.post(f"{base}/detect", params={"variant": "attn0010"}, content=jpeg, timeout=120).status_code == 200


def test_load_serves_a_variant_the_service_was_not_started_with(control_server, jpeg):
    base = control_server.base_url
    assert httpx.post(f"{base}/detect", params={"variant": "attn1111"}, content=jpeg).status_code == 404
    loaded = httpx.post(f"{base}/models/attn1111/load", headers=AUTH, timeout=300)
    assert loaded.status_code == 200 and loaded.json()["ready"]
    answer = httpx.post(f"{base}/detect", params={"variant": "attn1111"}, content=jpeg, timeout=120)
    assert answer.status_code == 200 and answer.json()["variant"] == "attn1111"


def test_one_control_action_at_a_time(control_server, monkeypatch):
    base = control_server.base_url
    pool = control_server.app.state.service.pool
    started, release = threading.Event(), threading.Event()
    build = pool._build

    def slow_build(*args, **kwargs):
        started.set()
        release.wait(60)
        return build(*args, **kwargs)

    monkeypatch.setattr(pool, "_build", slow_build)  # holds the first load until released
    with ThreadPoolExecutor(1) as executor:
        first = executor.submit(httpx.post, f"{base}/models/attn0010/load", headers=AUTH, timeout=300)
        assert started.wait(60)
        busy = httpx.post(f"{base}/models/attn1111/load", headers=AUTH, timeout=60)
        release.set()
        assert first.result(300).status_code == 200
    assert busy.status_code == 409 and busy.json()["error"] == "control_busy" and "Retry-After" in busy.headers
