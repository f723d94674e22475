"""`--demo`: a service without the official weights serves synthetic stand-ins, and says so."""

from __future__ import annotations

import httpx

from app.main import create_app
from model_zoo import load_registry, weights_path_for
from tests.app.conftest import LiveServer, Zoo

VARIANT = "attn0010"


def test_demo_serves_stand_ins_and_says_so_everywhere(zoo: Zoo, tmp_path, jpeg, caplog):
    weights = tmp_path / "weights"  # no official file in it
    settings = zoo.settings(weights_dir=weights, variants=[VARIANT], demo=True)
    with caplog.at_level("WARNING", logger="attnzoo"):
        server = LiveServer(create_app(settings)).start()
    try:
        base = server.base_url
        model = httpx.get(f"{base}/models/{VARIANT}").json()
        assert model["state"] == "loaded" and model["weights_source"] == "synthetic"
        stand_in = model["weights_file"]
        assert stand_in.startswith("demo/") and "-synthetic-" in stand_in and stand_in.endswith(f"{model['sha256'][:8]}.pth")
        assert (weights / stand_in).is_file()
        entry = load_registry(zoo.metafile).resolve(VARIANT)
        assert weights / stand_in != weights_path_for(entry, weights)  # never the official name
        answer = httpx.post(f"{base}/detect", params={"variant": VARIANT}, content=jpeg, timeout=120).json()
        assert answer["weights_source"] == "synthetic" and answer["sha256"] == model["sha256"]
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        server.stop()
    assert any("demo mode" in r.getMessage() for r in caplog.records)
    assert any("synthetic stand-in weights" in r.getMessage() and VARIANT in r.getMessage() for r in caplog.records)

    # a second start reuses the cached stand-in
    again = LiveServer(create_app(settings)).start()
    try:
        assert httpx.get(f"{again.base_url}/models/{VARIANT}").json()["weights_file"] == stand_in
    finally:
        again.stop()


def test_official_weights_are_served_as_official_when_present(client):
    """The shared server's weights carry their own hash prefix under a user metafile: custom."""
    sources = {m["variant"]: m["weights_source"] for m in client.get("/models").json()["models"]}
    assert sources["attn0010"] == sources["attn1111"] == "custom"
    assert sources["attn1111-dcn"] is None  # not loaded
