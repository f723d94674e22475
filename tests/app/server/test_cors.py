"""CORS: off by default; ATTNZOO_CORS_ORIGINS lets the named browser origins call the API."""

from __future__ import annotations

from typing import Iterator

import httpx
import pydantic
import pytest

from app.main import create_app
from app.settings import Settings
from tests.app.conftest import MISSING_VARIANT, LiveServer, Zoo

ALLOWED = "https://app.example.com"
OTHER = "https://elsewhere.example.org"


def preflight(base_url: str, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    return httpx.request("OPTIONS", f"{base_url}/detect?variant=attn1111", headers=headers, timeout=30)


@pytest.fixture(scope="module")
def cors_server(zoo: Zoo) -> Iterator[LiveServer]:
    """A server with CORS for ALLOWED (it loads nothing: the preflight needs no model)."""
    server = LiveServer(create_app(zoo.settings(variants=[MISSING_VARIANT], cors_origins=[ALLOWED, "http://localhost:3000"]))).start()
    yield server
    server.stop()


def test_cors_is_off_by_default(live_server):
    assert live_server.app.state.settings.cors_origins is None
    answer = preflight(live_server.base_url, ALLOWED)
    assert answer.status_code == 405  # no CORS: OPTIONS is just a method /detect does not take
    assert "access-control-allow-origin" not in answer.headers
    models = httpx.get(f"{live_server.base_url}/models", headers={"Origin": ALLOWED}, timeout=30)
    assert models.status_code == 200 and "access-control-allow-origin" not in models.headers


def test_preflight_of_an_allowed_origin(cors_server, metric, eventually):
    before = metric(cors_server.base_url, "attnzoo_requests_total", endpoint="cors_preflight", status="200")
    answer = preflight(cors_server.base_url, ALLOWED)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "content-type" in answer.headers["access-control-allow-headers"].lower()
    eventually(lambda: metric(cors_server.base_url, "attnzoo_requests_total", endpoint="cors_preflight", status="200") == before + 1)


def test_preflight_of_another_origin_is_refused(cors_server):
    answer = preflight(cors_server.base_url, OTHER)
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


def test_responses_to_an_allowed_origin_carry_the_cors_headers(cors_server, jpeg):
    models = httpx.get(f"{cors_server.base_url}/models", headers={"Origin": ALLOWED}, timeout=30)
    assert models.status_code == 200 and models.headers["access-control-allow-origin"] == ALLOWED
    exposed = {name.strip().lower() for name in models.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "retry-after"} <= exposed
    # errors too, so that a page on that origin can read why
    refused = httpx.post(f"{cors_server.base_url}/detect", params={"variant": MISSING_VARIANT}, content=jpeg, headers={"Origin": ALLOWED})
    assert refused.status_code == 503 and refused.headers["access-control-allow-origin"] == ALLOWED
    other = httpx.get(f"{cors_server.base_url}/models", headers={"Origin": OTHER}, timeout=30)
    assert "access-control-allow-origin" not in other.headers


def test_cors_origins_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv("ATTNZOO_CORS_ORIGINS", f"{ALLOWED}, http://localhost:3000")
    assert Settings().cors_origins == [ALLOWED, "http://localhost:3000"]
    monkeypatch.setenv("ATTNZOO_CORS_ORIGINS", "*")
    assert Settings().cors_origins == ["*"]
    monkeypatch.setenv("ATTNZOO_CORS_ORIGINS", "")
    assert Settings().cors_origins is None


@pytest.mark.parametrize("origin", ["https://app.example.com/", "app.example.com", "https://app.example.com/path", "ftp://x"])
def test_an_origin_a_browser_never_sends_is_refused_at_startup(monkeypatch, origin):
    monkeypatch.setenv("ATTNZOO_CORS_ORIGINS", origin)
    with pytest.raises(pydantic.ValidationError, match="invalid CORS origin"):
        Settings()
