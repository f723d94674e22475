"""Request ids, the access log and the request metrics of the Open Inference Protocol: one log
and one set of metrics for every front door, told apart by the ``protocol`` label."""

from __future__ import annotations

import grpc
import pytest
from oip_support import grpcclient, httpclient, image_input

from app.oip.proto import grpc_predict_v2_pb2 as pb
from app.oip.proto import grpc_predict_v2_pb2_grpc as pb_grpc

VARIANT = "attn0010"


def test_grpc_request_ids_are_kept_or_made_and_sent_back(live_server, access_log, eventually):
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        live, kept = stub.ServerLive.with_call(pb.ServerLiveRequest(), metadata=[("x-request-id", "trace-abc.123")], timeout=30)
        _, replaced = stub.ServerLive.with_call(pb.ServerLiveRequest(), metadata=[("x-request-id", "bad id with spaces" + "x" * 200)], timeout=30)
        _, made = stub.ServerReady.with_call(pb.ServerReadyRequest(), timeout=30)
        with pytest.raises(grpc.RpcError) as missing:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="attn9999"), metadata=[("x-request-id", "trace-404")], timeout=30)
    assert live.live is True
    assert dict(kept.initial_metadata())["x-request-id"] == "trace-abc.123"
    new_ids = [dict(call.initial_metadata())["x-request-id"] for call in (replaced, made)]
    assert all(len(i) == 32 for i in new_ids) and new_ids[0] != new_ids[1]
    assert dict(missing.value.initial_metadata())["x-request-id"] == "trace-404"
    eventually(lambda: {"trace-abc.123", "trace-404", *new_ids} <= {line["request_id"] for line in access_log}, timeout=10)
    by_id = {line["request_id"]: line for line in access_log}
    line = by_id["trace-abc.123"]
    assert line["protocol"] == "v2-grpc" and line["path"] == "/inference.GRPCInferenceService/ServerLive"
    assert line["status"] == 200 and line["grpc_status"] == "OK" and line["client"].startswith("127.0.0.1:")
    assert by_id[new_ids[1]]["path"] == "/inference.GRPCInferenceService/ServerReady"
    failed = by_id["trace-404"]
    assert (failed["status"], failed["grpc_status"], failed["error"]) == (404, "NOT_FOUND", "unknown_variant")


def test_inference_lines_name_the_variant_and_batch_over_both_transports(live_server, access_log, eventually, jpeg, triton_http, triton_grpc):
    triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])], headers={"X-Request-ID": "http-1"})
    triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg, jpeg])], headers={"x-request-id": "grpc-1"})
    eventually(lambda: {"http-1", "grpc-1"} <= {line["request_id"] for line in access_log}, timeout=10)
    by_id = {line["request_id"]: line for line in access_log}
    over_http, over_grpc = by_id["http-1"], by_id["grpc-1"]
    assert over_http["protocol"] == "v2-http" and over_http["path"] == f"/v2/models/{VARIANT}/infer" and over_http["method"] == "POST"
    assert over_grpc["protocol"] == "v2-grpc" and over_grpc["path"] == "/inference.GRPCInferenceService/ModelInfer"
    for line in (over_http, over_grpc):
        assert line["status"] == 200 and line["variant"] == VARIANT and line["batch_size"] >= 1 and "error" not in line
        assert line["duration_ms"] > 0


def test_request_metrics_carry_the_protocol(live_server, metric, eventually, jpeg, client, triton_http, triton_grpc):
    base = live_server.base_url
    series = {
        "http": dict(endpoint="/detect", status="200", protocol="http"),
        "v2-http": dict(endpoint="/v2/models/{model}/infer", status="200", protocol="v2-http"),
        "v2-grpc": dict(endpoint="/inference.GRPCInferenceService/ModelInfer", status="OK", protocol="v2-grpc"),  # gRPC: the code's name
    }
    before = {name: metric(base, "attnzoo_requests_total", variant=VARIANT, **labels) for name, labels in series.items()}
    grpc_latency = {"variant": VARIANT, "endpoint": "/inference.GRPCInferenceService/ModelInfer", "protocol": "v2-grpc"}
    latency_before = metric(base, "attnzoo_request_duration_seconds_count", **grpc_latency)
    stages_before = metric(base, "attnzoo_stage_duration_seconds_count", variant=VARIANT, stage="model")
    assert client.post("/detect", params={"variant": VARIANT}, content=jpeg).status_code == 200
    triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])])
    triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg, jpeg])])
    eventually(lambda: all(metric(base, "attnzoo_requests_total", variant=VARIANT, **labels) == before[name] + 1 for name, labels in series.items()))
    assert metric(base, "attnzoo_request_duration_seconds_count", **grpc_latency) == latency_before + 1
    assert metric(base, "attnzoo_stage_duration_seconds_count", variant=VARIANT, stage="model") == stages_before + 4  # one per image
    health = metric(base, "attnzoo_requests_total", endpoint="/v2/health/live", status="200", protocol="v2-http")
    client.get("/v2/health/live")
    eventually(lambda: metric(base, "attnzoo_requests_total", endpoint="/v2/health/live", status="200", protocol="v2-http") == health + 1)
