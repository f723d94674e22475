"""The Open Inference Protocol shares ``/detect``'s batcher, queue limit, deadlines and
cancellation: the model is held at its next forward (``hold_model``) so that the queue can be
filled deterministically."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from oip_support import grpcclient, http_client, httpclient, image_input
from tritonclient.utils import InferenceServerException

from app.oip.proto import grpc_predict_v2_pb2 as pb
from app.oip.proto import grpc_predict_v2_pb2_grpc as pb_grpc

VARIANT = "attn0010"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def post_detect(base_url: str, image: bytes) -> httpx.Response:
    return httpx.post(f"{base_url}/detect", params={"variant": VARIANT}, content=image, timeout=300)


def hold_and_queue(live_server, hold_model, eventually, metric, jpeg, queued: int):
    """Hold the model on a /detect blocker, then queue ``queued`` more /detect requests."""
    gate = hold_model(VARIANT)
    executor = ThreadPoolExecutor(queued + 4)  # room for requests the test adds
    blocker = executor.submit(post_detect, live_server.base_url, jpeg)
    assert gate.entered.wait(30)
    waiting = [executor.submit(post_detect, live_server.base_url, jpeg) for _ in range(queued)]
    eventually(lambda: metric(live_server.base_url, "attnzoo_queue_depth", variant=VARIANT) == queued)
    return gate, executor, [blocker, *waiting]


def grpc_request(jpeg: bytes) -> pb.ModelInferRequest:
    """One image as raw_input_contents (4-byte little-endian length, then the bytes)."""
    request = pb.ModelInferRequest(model_name=VARIANT)
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(jpeg).to_bytes(4, "little") + jpeg)
    return request


def test_overload_is_refused_as_detect_refuses_it_and_the_service_recovers(
    live_server, hold_model, eventually, metric, jpeg, triton_http, triton_grpc
):
    base = live_server.base_url
    refused_before = metric(base, "attnzoo_requests_total", endpoint=GRPC_INFER, status="RESOURCE_EXHAUSTED", protocol="v2-grpc")
    gate, executor, waiting = hold_and_queue(live_server, hold_model, eventually, metric, jpeg, queued=4)
    assert post_detect(base, jpeg).status_code == 429
    with pytest.raises(InferenceServerException) as over_http:
        triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])])
    assert over_http.value.status() == "429" and "4 requests are already waiting" in over_http.value.message()
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpeg).decode()]}
    raw = httpx.post(f"{base}/v2/models/{VARIANT}/infer", json={"inputs": [image]}, timeout=60)
    assert raw.status_code == 429 and int(raw.headers["Retry-After"]) >= 1 and set(raw.json()) == {"error"}
    with pytest.raises(InferenceServerException) as over_grpc:
        triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg])])
    assert over_grpc.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "4 requests are already waiting" in over_grpc.value.message()
    with grpc.insecure_channel(live_server.grpc_url) as channel:  # grpc's own client, for the trailing metadata
        with pytest.raises(grpc.RpcError) as plain:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request(jpeg), timeout=60)
    assert plain.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(plain.value.trailing_metadata())["retry-after"]) >= 1
    eventually(lambda: metric(base, "attnzoo_requests_total", endpoint=GRPC_INFER, status="RESOURCE_EXHAUSTED", protocol="v2-grpc") == refused_before + 2)
    gate.release()
    assert [f.result().status_code for f in waiting] == [200] * 5
    executor.shutdown()
    for client, module in ((triton_http, httpclient), (triton_grpc, grpcclient)):
        assert client.infer(VARIANT, [image_input(module, [jpeg])]).as_numpy("num_detections").shape == (1,)


def test_detect_and_both_v2_transports_share_one_model_call(live_server, hold_model, eventually, metric, jpeg, triton_grpc):
    base = live_server.base_url
    batches_before = metric(base, "attnzoo_batch_size_count", variant=VARIANT)
    gate, executor, (blocker,) = hold_and_queue(live_server, hold_model, eventually, metric, jpeg, queued=0)
    detect = executor.submit(post_detect, base, jpeg)
    eventually(lambda: metric(base, "attnzoo_queue_depth", variant=VARIANT) == 1)
    with ThreadPoolExecutor(2) as clients:
        # tritonclient.http runs on gevent: a client belongs to the thread that made it
        over_http = clients.submit(lambda: http_client(base).infer(VARIANT, [image_input(httpclient, [jpeg])]))
        eventually(lambda: metric(base, "attnzoo_queue_depth", variant=VARIANT) == 2)
        over_grpc = clients.submit(triton_grpc.infer, VARIANT, [image_input(grpcclient, [jpeg])])
        eventually(lambda: metric(base, "attnzoo_queue_depth", variant=VARIANT) == 3)
        gate.release()
        results = [over_http.result(), over_grpc.result()]
    assert blocker.result().status_code == 200
    assert detect.result().json()["batch_size"] == 3  # /detect's image and the two v2 images: one forward
    executor.shutdown()
    assert metric(base, "attnzoo_batch_size_count", variant=VARIANT) == batches_before + 2
    assert gate.calls == 1 + 3  # forwards: on CPU each image of a batch has its own (batch invariance)
    counts = [result.as_numpy("num_detections").tolist() for result in results]
    assert counts[0] == counts[1] == [len(detect.result().json()["detections"])]


def test_the_timeout_parameter_is_a_deadline_and_a_late_request_never_runs(
    live_server, hold_model, eventually, metric, jpeg, triton_http, triton_grpc
):
    base = live_server.base_url
    batches_before = metric(base, "attnzoo_batch_size_count", variant=VARIANT)
    gate, executor, (blocker,) = hold_and_queue(live_server, hold_model, eventually, metric, jpeg, queued=0)
    # Admission refuses (429) a deadline shorter than the predicted wait; while the model is held
    # that prediction can only shrink, so a deadline past it is admitted and then passes in the queue.
    predicted_s = live_server.app.state.service.pool.served(VARIANT).batcher.predicted_wait_s() or 0.0
    timeout_us = int((predicted_s + 0.3) * 1e6)  # microseconds (Triton's unit)
    for client, module, status in ((triton_http, httpclient, "504"), (triton_grpc, grpcclient, "StatusCode.DEADLINE_EXCEEDED")):
        with pytest.raises(InferenceServerException) as late:
            client.infer(VARIANT, [image_input(module, [jpeg])], timeout=timeout_us)
        assert late.value.status() == status and "deadline passed" in late.value.message()
    gate.release()
    assert blocker.result().status_code == 200
    executor.shutdown()
    assert metric(base, "attnzoo_batch_size_count", variant=VARIANT) == batches_before + 1
    assert gate.calls == 1


def test_cancelled_grpc_requests_never_reach_the_model(live_server, hold_model, eventually, metric, jpeg, triton_grpc):
    base = live_server.base_url
    batches_before = metric(base, "attnzoo_batch_size_count", variant=VARIANT)
    gone_before = metric(base, "attnzoo_requests_total", variant=VARIANT, endpoint=GRPC_INFER, status="CANCELLED", protocol="v2-grpc")
    gate, executor, (blocker,) = hold_and_queue(live_server, hold_model, eventually, metric, jpeg, queued=0)
    errors: list[object] = []
    calls = [
        triton_grpc.async_infer(VARIANT, [image_input(grpcclient, [jpeg, jpeg])], callback=lambda result, error: errors.append(error))
        for _ in range(2)
    ]
    eventually(lambda: metric(base, "attnzoo_queue_depth", variant=VARIANT) == 4)
    for call in calls:
        call.cancel()
    eventually(lambda: metric(base, "attnzoo_requests_total", variant=VARIANT, endpoint=GRPC_INFER, status="CANCELLED", protocol="v2-grpc") == gone_before + 2)
    eventually(lambda: len(errors) == 2)
    assert all("CANCELLED" in str(error) for error in errors)
    gate.release()
    assert blocker.result().status_code == 200
    executor.shutdown()
    eventually(lambda: metric(base, "attnzoo_queue_depth", variant=VARIANT) == 0)
    assert metric(base, "attnzoo_batch_size_count", variant=VARIANT) == batches_before + 1  # only the blocker ran
    assert gate.calls == 1
    assert post_detect(base, jpeg).status_code == 200
