"""/healthz and /readyz: live while loading, ready only when every requested variant answers."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_when_every_requested_variant_is_loaded(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "variants": {"attn1111": "loaded", "attn0010": "loaded"}}


def test_readyz_is_503_with_reasons_when_weights_are_missing_or_refused(broken_server):
    health = httpx.get(f"{broken_server.base_url}/healthz")
    ready = httpx.get(f"{broken_server.base_url}/readyz")
    assert health.status_code == 200  # the process is fine
    assert ready.status_code == 503
    body = ready.json()
    assert body["error"] == "not_ready"
    assert set(body["reasons"]) == {"attn1111-dcn", "attn0010-dcn"}
    assert "sha256" in body["reasons"]["attn1111-dcn"]
    assert "attnzoo fetch attn0010-dcn" in body["reasons"]["attn0010-dcn"]
    assert "attn1111-dcn" in body["detail"] and "Retry-After" in ready.headers


def test_detect_on_a_refused_variant_is_503_with_retry_after(broken_server, jpeg):
    response = httpx.post(f"{broken_server.base_url}/detect", params={"variant": "attn1111-dcn"}, content=jpeg)
    assert response.status_code == 503
    assert response.json()["error"] == "variant_unavailable"
    assert "does not start with" in response.json()["detail"]
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.anyio
async def test_not_ready_while_loading_then_ready(zoo, jpeg, wait_settled):
    import anyio

    app = create_app(zoo.settings(variants=["attn0010"]))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        loading = await http.get("/readyz")
        early = await http.post("/detect", params={"variant": "attn0010"}, content=jpeg)
        assert (await http.get("/healthz")).status_code == 200
        assert await anyio.to_thread.run_sync(wait_settled, app.state.pool, 300)
        ready = await http.get("/readyz")
        answered = await http.post("/detect", params={"variant": "attn0010"}, content=jpeg)
    assert loading.status_code == 503 and loading.json()["reasons"] == {"attn0010": "loading"}
    assert early.status_code == 503 and early.json()["detail"] == "variant 'attn0010' is still loading"
    assert ready.status_code == 200 and answered.status_code == 200
    assert app.state.pool is None  # the lifespan released the models
