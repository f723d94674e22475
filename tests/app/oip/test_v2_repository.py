"""The model repository extension (index, load, unload: the service's pool behind its admin token),
gRPC health following loads and unloads, server reflection, and RPCs the service does not have.

A server of its own (attn0010 requested, an admin token, gRPC), since its variants come and go."""

from __future__ import annotations

import logging
import threading
from typing import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from oip_support import grpcclient, http_client, httpclient, image_input
from tritonclient.utils import InferenceServerException

from app.main import create_app
from tests.app.conftest import LiveServer, free_port, serving_settings, wait_for

TOKEN = "repository-test-token"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
REGISTRY = ["attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn"]


@pytest.fixture(scope="module")
def control_server(zoo) -> Iterator[LiveServer]:
    server = LiveServer(create_app(zoo.settings(variants=["attn0010"], grpc_port=free_port(), admin_token=TOKEN))).start()
    yield server
    server.stop()


@pytest.fixture()
def clients(control_server) -> Iterator[tuple[httpclient.InferenceServerClient, grpcclient.InferenceServerClient]]:
    over_http, over_grpc = http_client(control_server.base_url), grpcclient.InferenceServerClient(control_server.grpc_url)
    yield over_http, over_grpc
    over_http.close()
    over_grpc.close()


@pytest.fixture()
def health(control_server) -> Iterator[health_pb2_grpc.HealthStub]:
    with grpc.insecure_channel(control_server.grpc_url) as channel:
        yield health_pb2_grpc.HealthStub(channel)


def check(health: health_pb2_grpc.HealthStub, service: str) -> int:
    return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30).status


def test_the_index_lists_every_registry_variant_with_its_state(clients, control_server):
    over_http, over_grpc = clients
    index = over_http.get_model_repository_index()
    assert [(model["name"], model["version"], model["state"]) for model in index] == [
        ("attn1111", "1", "UNAVAILABLE"), ("attn0010", "1", "READY"), ("attn1111-dcn", "1", "UNAVAILABLE"), ("attn0010-dcn", "1", "UNAVAILABLE"),
    ]  # fmt: skip
    assert "reason" not in index[1] and "ATTNZOO_VARIANTS" in index[0]["reason"]
    assert over_grpc.get_model_repository_index(as_json=True) == {"models": index}
    ready = httpx.post(f"{control_server.base_url}/v2/repository/index", json={"ready": True}, timeout=30)
    assert ready.json() == [{"name": "attn0010", "version": "1", "state": "READY"}]


def test_load_and_unload_need_the_admin_token(clients, control_server):
    over_http, over_grpc = clients
    for headers in (None, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as refused:
            over_http.load_model("attn1111", headers=headers)
        assert refused.value.status() == "401" and "Authorization: Bearer" in refused.value.message()
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        with pytest.raises(InferenceServerException) as refused:
            over_grpc.unload_model("attn0010", headers=headers)
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    no_token = control_server.app.state.settings.model_copy(update={"admin_token": None})
    with serving_settings(control_server.app, no_token):
        with pytest.raises(InferenceServerException) as off_http:
            over_http.unload_model("attn0010", headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(InferenceServerException) as off_grpc:
            over_grpc.load_model("attn1111", headers={"authorization": f"Bearer {TOKEN}"})
    assert off_http.value.status() == "403" and off_grpc.value.status() == "StatusCode.PERMISSION_DENIED"
    assert over_http.is_model_ready("attn0010") and not over_http.is_model_ready("attn1111")


def test_a_configuration_or_files_sent_with_a_load_are_refused(clients, control_server):
    over_http, over_grpc = clients
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(InferenceServerException) as with_config:
        over_http.load_model("attn1111", headers=bearer, config='{"max_batch_size": 2}')
    assert with_config.value.status() == "400" and "parameter 'config' is not supported" in with_config.value.message()
    with pytest.raises(InferenceServerException) as with_files:
        over_grpc.load_model("attn1111", headers={"authorization": f"Bearer {TOKEN}"}, config="{}", files={"file:1/model.py": b"x"})
    assert with_files.value.status() == "StatusCode.INVALID_ARGUMENT"
    files = httpx.post(
        f"{control_server.base_url}/v2/repository/models/attn1111/load", headers=bearer, json={"parameters": {"file:1/model.pt": "eA=="}}, timeout=30
    )
    assert files.status_code == 400 and "never files sent with the request" in files.json()["error"]
    assert not over_http.is_model_ready("attn1111")


def test_load_and_unload_over_both_transports_and_grpc_health_follows(clients, health, control_server, jpeg):
    over_http, over_grpc = clients
    assert (check(health, ""), check(health, "inference.GRPCInferenceService")) == (SERVING, SERVING)
    assert (check(health, "attn0010"), check(health, "attn1111")) == (SERVING, NOT_SERVING)
    with pytest.raises(grpc.RpcError) as unknown:
        check(health, "attn9999")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    watched: list[int] = []
    watch = health.Watch(health_pb2.HealthCheckRequest(service="attn1111"), timeout=300)

    def follow() -> None:
        try:
            watched.extend(response.status for response in watch)
        except grpc.RpcError:  # cancelled at the end of the test
            pass

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    wait_for(lambda: watched == [NOT_SERVING])

    over_http.load_model("attn1111", headers={"Authorization": f"Bearer {TOKEN}"})
    assert over_grpc.is_model_ready("attn1111") and check(health, "attn1111") == SERVING
    assert {model["name"]: model["state"] for model in over_http.get_model_repository_index()}["attn1111"] == "READY"
    over_grpc.infer("attn1111", [image_input(grpcclient, [jpeg])])
    assert over_http.get_inference_statistics("attn1111")["model_stats"][0]["inference_count"] == 1

    over_grpc.unload_model("attn1111", headers={"authorization": f"Bearer {TOKEN}"})  # unload_dependents: false, taken
    assert not over_http.is_model_ready("attn1111") and check(health, "attn1111") == NOT_SERVING
    (entry,) = [model for model in over_grpc.get_model_repository_index(as_json=True)["models"] if model["name"] == "attn1111"]
    assert entry["state"] == "UNAVAILABLE" and entry["reason"].startswith("unloaded")
    wait_for(lambda: watched == [NOT_SERVING, SERVING, NOT_SERVING])
    watch.cancel()
    assert check(health, "") == SERVING  # attn0010, the one requested, still serves


def test_a_reload_starts_the_statistics_afresh(clients, jpeg):
    over_http, over_grpc = clients
    over_http.infer("attn0010", [image_input(httpclient, [jpeg])])
    assert over_grpc.get_inference_statistics("attn0010").model_stats[0].inference_count >= 1
    over_grpc.load_model("attn0010", headers={"authorization": f"Bearer {TOKEN}"})  # a reload, as Triton's
    (entry,) = over_http.get_inference_statistics("attn0010")["model_stats"]
    assert (entry["inference_count"], entry["execution_count"], entry["last_inference"]) == (0, 0, 0)


def test_reflection_describes_the_services(control_server):
    with grpc.insecure_channel(control_server.grpc_url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        config = database.FindFileContainingSymbol("inference.ModelConfig")
        assert "ModelConfig" in [message.name for message in config.message_type]
        assert database.FindFileContainingSymbol("grpc.health.v1.Health").package == "grpc.health.v1"


def test_rpcs_and_paths_the_service_does_not_have_are_counted_and_logged_once(control_server, metric, caplog):
    base = control_server.base_url
    unmatched = {"endpoint": "unmatched", "protocol": "v2-grpc", "status": "UNIMPLEMENTED"}
    before = metric(base, "attnzoo_requests_total", **unmatched)
    paths_before = metric(base, "attnzoo_requests_total", endpoint="unmatched", protocol="v2-http", status="404")
    with caplog.at_level(logging.WARNING, logger="attnzoo.requests"):
        with grpc.insecure_channel(control_server.grpc_url) as channel:
            shared_memory = channel.unary_unary("/inference.GRPCInferenceService/SystemSharedMemoryStatus")
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as missing:
                    shared_memory(b"", timeout=30)
                assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
        for _ in range(2):
            assert httpx.get(f"{base}/v2/trace/setting", timeout=30).status_code == 404
    wait_for(lambda: metric(base, "attnzoo_requests_total", **unmatched) == before + 2)
    wait_for(lambda: metric(base, "attnzoo_requests_total", endpoint="unmatched", protocol="v2-http", status="404") == paths_before + 2)
    warnings = [record.getMessage() for record in caplog.records if record.name == "attnzoo.requests"]
    assert sum("SystemSharedMemoryStatus" in line for line in warnings) == 1
    assert sum("GET /v2/trace/setting" in line for line in warnings) == 1
