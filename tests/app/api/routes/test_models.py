"""GET /models and /models/{variant}: registry, published and measured figures, live state."""

from __future__ import annotations

import json
import os

import pytest

from model_zoo.weights import sha256_file

PUBLISHED = {  # the bundled metafile's table: box AP, fps, training memory
    "attn1111": (40.0, 13.8, 8.0),
    "attn0010": (39.1, 18.4, 4.2),
    "attn1111-dcn": (42.1, 12.7, 8.0),
    "attn0010-dcn": (42.0, 17.1, 4.2),
}


@pytest.fixture()
def table(zoo):
    path = zoo.results_dir / "table.json"
    yield path
    path.unlink(missing_ok=True)


def test_models_lists_every_registry_variant_with_its_state(client, zoo):
    response = client.get("/models")
    assert response.status_code == 200
    assert response.json()["hint"] is None  # every requested checkpoint is there
    assert response.json()["build"] == client.get("/healthz").json()["build"]  # the build that answers
    models = {m["variant"]: m for m in response.json()["models"]}
    assert list(models) == ["attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn"]
    for variant, (box_ap, fps, memory) in PUBLISHED.items():
        published = models[variant]["published"]
        assert (published["box_ap"], published["fps"], published["train_memory_gb"]) == (box_ap, fps, memory)
        assert published["hardware"] == "V100" and published["training_resources"] == "8x V100 GPUs"
    for variant in ("attn0010", "attn1111"):
        model = models[variant]
        assert (model["state"], model["reason"], model["device"]) == ("loaded", None, "cpu")
        assert (model["ready"], model["requested"], model["missing_weights"]) == (True, True, None)
        assert model["sha256"] == sha256_file(zoo.weights_dir / model["weights_file"])
        assert "/" not in model["weights_file"]  # a file name: the server's paths are never shown
        assert model["load_seconds"] > 0
    for variant in ("attn1111-dcn", "attn0010-dcn"):
        assert models[variant]["state"] == "unavailable" and "ATTNZOO_VARIANTS" in models[variant]["reason"]
        assert models[variant]["sha256"] is None
        # never requested: not loaded, and no checkpoint was looked for
        assert (models[variant]["ready"], models[variant]["requested"], models[variant]["missing_weights"]) == (False, False, None)


def test_one_variant_with_its_readiness(client):
    loaded, never = client.get("/models/attn1111"), client.get("/models/faster-rcnn_r50_fpn_attention_0010_dcn_1x_coco")
    assert loaded.status_code == never.status_code == 200
    assert (loaded.json()["variant"], loaded.json()["state"], loaded.json()["ready"]) == ("attn1111", "loaded", True)
    assert (never.json()["variant"], never.json()["state"], never.json()["ready"]) == ("attn0010-dcn", "unavailable", False)
    unknown = client.get("/models/attn9999")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_variant"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/detect", {"variant": "attn1111-dcn"}),
        ("/attention", {"variant": "attn1111-dcn", "x": 1, "y": 1}),
        ("/compare", {"variants": "attn1111,attn1111-dcn"}),
    ],
)
def test_a_variant_never_requested_is_404_without_a_retry_promise(client, jpeg, path, params):
    response = client.post(path, params=params, content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 404
    assert "Retry-After" not in response.headers  # it never loads in this process
    body = response.json()
    assert body["error"] == "variant_not_served"
    assert body["detail"] == (
        "variant 'attn1111-dcn' is not served by this process, which was started with the variants attn1111, attn0010 "
        "(ATTNZOO_VARIANTS); restart it with attn1111-dcn among them (or without ATTNZOO_VARIANTS: every variant) to serve it"
    )


def test_architecture_summary(client):
    models = {m["variant"]: m["architecture"] for m in client.get("/models").json()["models"]}
    assert models["attn1111"] == {
        "config": "arch/attn1111.yml",
        "backbone": "ResNet-50",
        "attention_type": "1111",
        "attention_stages": [3, 4],
        "dcn": False,
        "dcn_stages": [],
    }
    assert models["attn0010-dcn"]["attention_type"] == "0010"
    assert models["attn0010-dcn"]["dcn"] is True and models["attn0010-dcn"]["dcn_stages"] == [2, 3, 4]


def test_one_model_by_short_or_full_name(client):
    short = client.get("/models/attn0010")
    full = client.get("/models/faster-rcnn_r50_fpn_attention_0010_1x_coco")
    assert short.status_code == full.status_code == 200
    assert short.json() == full.json()
    assert short.json()["name"] == "faster-rcnn_r50_fpn_attention_0010_1x_coco"


def test_unknown_model_is_a_404_listing_valid_ones(client):
    response = client.get("/models/attn42")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_variant"
    assert response.json()["valid"] == ["attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn"]


def test_measured_figures_come_from_the_latest_table(client, table):
    assert client.get("/models/attn0010").json()["measured"] is None
    rows = [
        {"variant": "attn0010", "images": 5000, "device": "cuda", "box_ap": 39.2, "box_ap50": 60.0, "fps": 80.5,
         "fps_end_to_end": 55.0, "peak_memory_mb": 1234.5, "published_box_ap": 39.1},
        {"variant": "faster-rcnn_r50_fpn_attention_1111_1x_coco", "images": 10, "device": "cpu", "box_ap": 1.5,
         "fps": 0.4, "fps_end_to_end": 0.3, "peak_memory_mb": 2000.0},
        {"variant": "not-ours", "box_ap": 1.0},
    ]  # fmt: skip
    table.write_text(json.dumps({"rows": rows}), encoding="utf-8")
    measured = client.get("/models/attn0010").json()["measured"]
    assert {k: measured[k] for k in ("box_ap", "fps", "fps_end_to_end", "peak_memory_mb", "device", "images")} == {
        "box_ap": 39.2, "fps": 80.5, "fps_end_to_end": 55.0, "peak_memory_mb": 1234.5, "device": "cuda", "images": 5000,
    }  # fmt: skip
    assert measured["source"] == str(table)
    assert client.get("/models/attn1111").json()["measured"]["box_ap"] == 1.5  # full names work
    assert client.get("/models/attn0010-dcn").json()["measured"] is None

    rows[0]["box_ap"] = 39.3  # a newer run replaces the file
    table.write_text(json.dumps({"rows": rows}), encoding="utf-8")
    os.utime(table, ns=(table.stat().st_atime_ns, table.stat().st_mtime_ns + 10**9))
    assert client.get("/models/attn0010").json()["measured"]["box_ap"] == 39.3


@pytest.mark.parametrize("content", ["{not json", '{"rows": 3}', '{"rows": [{"variant": "attn0010", "box_ap": "high"}]}'])
def test_a_broken_results_file_does_not_break_models(client, table, content):
    table.write_text(content, encoding="utf-8")
    response = client.get("/models")
    assert response.status_code == 200
    assert all(m["measured"] is None for m in response.json()["models"])


def test_unavailable_variants_say_why(broken_server):
    import httpx

    body = httpx.get(f"{broken_server.base_url}/models").json()
    models = {m["variant"]: m for m in body["models"]}
    assert body["hint"] == httpx.get(f"{broken_server.base_url}/readyz").json()["hint"]  # one text, both places
    assert "attn0010-dcn-12345678.pth into" in body["hint"] and "attnzoo serve --demo" in body["hint"]
    refused, missing = models["attn1111-dcn"], models["attn0010-dcn"]
    assert refused["state"] == missing["state"] == "unavailable"
    assert "does not start with '00000000'" in refused["reason"]
    assert "not found" in missing["reason"] and "attnzoo fetch attn0010-dcn" in missing["reason"]
    assert missing["weights_file"] == "attn0010-dcn-12345678.pth"
    assert str(broken_server.app.state.settings.weights_dir) not in json.dumps(body)  # no server path anywhere
    assert missing["missing_weights"]["file"] == "attn0010-dcn-12345678.pth"
    assert refused["missing_weights"] is None  # its file is there; it is the wrong one
    assert refused["requested"] is missing["requested"] is True and refused["ready"] is missing["ready"] is False


@pytest.mark.anyio
async def test_weights_dir_defaults_to_the_registry_environment(zoo, monkeypatch, wait_settled):
    import httpx

    from app.main import create_app

    monkeypatch.setenv("ATTNZOO_WEIGHTS_DIR", str(zoo.weights_dir))
    app = create_app(zoo.settings(weights_dir=None, variants=["attn0010-dcn"]))
    async with app.router.lifespan_context(app):
        assert wait_settled(app.state.service.pool, 60)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            model = (await http.get("/models/attn0010-dcn")).json()
    assert model["weights_file"] == "attn0010-dcn-12345678.pth"
    assert "not found" in model["reason"]
