"""/healthz and /readyz: live while loading; ready when every requested variant answers (strict,
the default) or when one does (ATTNZOO_STRICT_READINESS=false); each variant's state either way."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from importlib.metadata import version

import httpx
import pytest

from app.main import create_app
from model_zoo import build_info
from tests.app.conftest import LOADED_VARIANTS, MISSING_VARIANT, REFUSED_VARIANT, serving_settings

MISSING_FILE = f"{MISSING_VARIANT}-12345678.pth"  # the name the test zoo's registry gives it
VERSION = version("attnzoo")  # the package's own version: the build that answers


def non_strict(app):
    """``app``'s settings with ATTNZOO_STRICT_READINESS=false (what its routes read from ``app.state``)."""
    return app.state.settings.model_copy(update={"strict_readiness": False})


def test_healthz_says_which_build_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok", "build": {"version": VERSION, "commit": build_info().revision}}


def test_readyz_when_every_requested_variant_is_loaded(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "strict": True,
        "variants": {"attn1111": "loaded", "attn0010": "loaded"},
        "reasons": {},
        "missing_weights": {},
        "hint": None,
    }


def test_readyz_is_503_with_reasons_when_weights_are_missing_or_refused(broken_server, zoo):
    health = httpx.get(f"{broken_server.base_url}/healthz")
    ready = httpx.get(f"{broken_server.base_url}/readyz")
    assert health.status_code == 200  # the process is fine
    assert ready.status_code == 503
    body = ready.json()
    assert body["error"] == "not_ready" and body["strict"] is True
    assert body["variants"] == {REFUSED_VARIANT: "unavailable", MISSING_VARIANT: "unavailable"}
    assert set(body["reasons"]) == {REFUSED_VARIANT, MISSING_VARIANT}
    assert "sha256" in body["reasons"][REFUSED_VARIANT]
    assert "attnzoo fetch attn0010-dcn" in body["reasons"][MISSING_VARIANT]
    assert REFUSED_VARIANT in body["detail"] and "Retry-After" in ready.headers


def test_readyz_says_where_missing_weights_go_and_that_demo_exists(broken_server, zoo):
    body = httpx.get(f"{broken_server.base_url}/readyz").json()
    # only the missing file: the refused one is there (its hash is wrong, not its place)
    assert body["missing_weights"] == {MISSING_VARIANT: {"file": MISSING_FILE, "url": f"http://127.0.0.1:9/{MISSING_FILE}"}}
    assert f"put {MISSING_FILE} into the weights dir (ATTNZOO_WEIGHTS_DIR" in body["hint"]
    assert str(zoo.weights_dir) not in json.dumps(body)  # the server's paths are only in its log
    assert "`attnzoo serve --demo`" in body["hint"] and "attnzoo fetch" in body["hint"]


def test_non_strict_readiness_still_needs_one_variant(broken_server):
    with serving_settings(broken_server.app, non_strict(broken_server.app)):
        ready = httpx.get(f"{broken_server.base_url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["strict"] is False
    assert ready.json()["variants"] == {REFUSED_VARIANT: "unavailable", MISSING_VARIANT: "unavailable"}


@asynccontextmanager
async def serving(app):
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


@pytest.mark.anyio
async def test_one_loaded_and_one_missing_variant_strict_and_not(zoo, jpeg, wait_settled):
    import anyio

    loaded = LOADED_VARIANTS[0]
    app = create_app(zoo.settings(variants=[loaded, MISSING_VARIANT]))
    async with serving(app) as http:
        assert await anyio.to_thread.run_sync(wait_settled, app.state.service.pool, 300)
        strict = await http.get("/readyz")
        app.state.settings = non_strict(app)
        relaxed = await http.get("/readyz")
        detect = await http.post("/detect", params={"variant": loaded}, content=jpeg)
        model = (await http.get(f"/models/{loaded}")).json()
        missing = (await http.get(f"/models/{MISSING_VARIANT}")).json()
    states = {loaded: "loaded", MISSING_VARIANT: "unavailable"}
    assert strict.status_code == 503
    assert strict.json()["error"] == "not_ready" and strict.json()["strict"] is True
    assert strict.json()["variants"] == states and list(strict.json()["reasons"]) == [MISSING_VARIANT]
    assert relaxed.status_code == 200
    body = relaxed.json()
    assert (body["status"], body["strict"], body["variants"]) == ("ready", False, states)
    assert list(body["reasons"]) == [MISSING_VARIANT] and body["missing_weights"][MISSING_VARIANT]["file"] == MISSING_FILE
    assert "attnzoo serve --demo" in body["hint"]
    assert detect.status_code == 200
    assert (model["state"], model["ready"], model["requested"], model["missing_weights"]) == ("loaded", True, True, None)
    assert (missing["state"], missing["ready"], missing["requested"]) == ("unavailable", False, True)
    assert missing["missing_weights"] == {"file": MISSING_FILE, "url": f"http://127.0.0.1:9/{MISSING_FILE}"}


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
    async with serving(app) as http:
        loading = await http.get("/readyz")
        early = await http.post("/detect", params={"variant": "attn0010"}, content=jpeg)
        assert (await http.get("/healthz")).status_code == 200
        assert await anyio.to_thread.run_sync(wait_settled, app.state.service.pool, 300)
        ready = await http.get("/readyz")
        answered = await http.post("/detect", params={"variant": "attn0010"}, content=jpeg)
    assert loading.status_code == 503 and loading.json()["reasons"] == {"attn0010": "loading"}
    assert loading.json()["variants"] == {"attn0010": "loading"}
    assert early.status_code == 503 and early.json()["detail"] == "variant 'attn0010' is still loading"
    assert ready.status_code == 200 and answered.status_code == 200
    assert not app.state.service.started  # the lifespan released the models
