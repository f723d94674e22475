"""Streaming inference (gRPC ``ModelStreamInfer``, Triton's extension): requests in flight together on
one stream, each answered on it in the order sent with its id, failures as stream messages."""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
from oip_support import CLIENT_TIMEOUT_S, detect_arrays, detections_of, grpcclient, image_input
from tritonclient.utils import InferenceServerException

from app.oip.proto import grpc_predict_v2_pb2 as pb
from app.oip.proto import grpc_predict_v2_pb2_grpc as pb_grpc

VARIANT = "attn0010"


def detect(base_url: str, image: bytes) -> dict[str, np.ndarray]:
    response = httpx.post(f"{base_url}/detect", params={"variant": VARIANT, "score_thr": 0.05}, content=image, timeout=300)
    assert response.status_code == 200, response.text
    return detect_arrays(response.json()["detections"])


def stream_request(request_id: str, images: list[bytes], model: str = VARIANT, **parameters: pb.InferParameter) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id, parameters=parameters)
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[len(images), 1])
    request.raw_input_contents.append(b"".join(len(image).to_bytes(4, "little") + image for image in images))
    return request


def test_tritonclient_streams_several_requests_in_flight(live_server, jpeg, make_scene, encode_image):
    images = [encode_image(make_scene(320, 240, seed=seed)) for seed in (3, 4)]
    expected = [detect(live_server.base_url, image) for image in images]
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(live_server.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        # A request of two images first: the single-image ones behind it may finish first, yet are answered after it.
        # Four images in all: the shared server's queue holds four (more in flight at once would be refused, as overload).
        client.async_stream_infer(VARIANT, [image_input(grpcclient, [images[0], images[1]])], request_id="r0", parameters={"score_thr": 0.05})
        client.async_stream_infer(VARIANT, [image_input(grpcclient, [images[1]])], request_id="r1", parameters={"score_thr": 0.05})
        client.async_stream_infer("attn9999", [image_input(grpcclient, [jpeg])], request_id="r2")
        client.async_stream_infer(VARIANT, [image_input(grpcclient, [images[0]])], request_id="r3", parameters={"score_thr": "0.05"})
        got = [answers.get(timeout=CLIENT_TIMEOUT_S) for _ in range(4)]
    finally:
        client.stop_stream()
        client.close()
    (first, _), (second, _), (failed, error), (fourth, _) = got
    assert [first.get_response().id, second.get_response().id, fourth.get_response().id] == ["r0", "r1", "r3"]
    assert failed is None and isinstance(error, InferenceServerException) and "unknown variant 'attn9999'" in error.message()
    for result, row, image in ((first, 0, 0), (first, 1, 1), (second, 0, 1), (fourth, 0, 0)):
        ours = detections_of(result, row)
        for key in ("boxes", "scores", "classes"):
            assert np.array_equal(ours[key], expected[image][key]), (result.get_response().id, key)


def test_each_answer_carries_its_id_and_failures_are_messages(live_server, jpeg):
    requests = [
        stream_request("ok-1", [jpeg]),
        stream_request("bad-parameter", [jpeg], score_thr=pb.InferParameter(string_param="lots")),
        stream_request("", [jpeg]),  # no id: none in the answer
        stream_request("bad-image", [b"not an image"]),
        stream_request("ok-2", [jpeg], triton_enable_empty_final_response=pb.InferParameter(bool_param=True)),
    ]  # four images in flight at most: the shared server's queue holds four
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        answers = list(pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter(requests), timeout=CLIENT_TIMEOUT_S))
    assert [answer.infer_response.id for answer in answers] == ["ok-1", "bad-parameter", "", "bad-image", "ok-2"]
    assert [bool(answer.error_message) for answer in answers] == [False, True, False, True, False]
    assert "parameter 'score_thr' must be a number in [0, 1]; got 'lots'" in answers[1].error_message
    assert "not a recognised image" in answers[3].error_message
    ok = answers[4].infer_response
    assert ok.model_name == VARIANT and ok.parameters["triton_final_response"].bool_param is True
    assert tuple(ok.outputs[0].shape) == (1, 1)  # num_detections as the [B, 1] input


def test_overload_on_a_stream_is_a_message_and_the_stream_goes_on(live_server, hold_model, eventually, metric, jpeg):
    gate = hold_model(VARIANT)
    with ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(httpx.post, f"{live_server.base_url}/detect", params={"variant": VARIANT}, content=jpeg, timeout=300)
        assert gate.entered.wait(30)
        waiting = [pool.submit(httpx.post, f"{live_server.base_url}/detect", params={"variant": VARIANT}, content=jpeg, timeout=300) for _ in range(4)]
        eventually(lambda: metric(live_server.base_url, "attnzoo_queue_depth", variant=VARIANT) == 4)
        with grpc.insecure_channel(live_server.grpc_url) as channel:
            answers = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([stream_request("full", [jpeg])]), timeout=CLIENT_TIMEOUT_S)
            (refused,) = list(answers)
        gate.release()
        assert [f.result().status_code for f in [blocker, *waiting]] == [200] * 5
    assert refused.infer_response.id == "full" and "4 requests are already waiting" in refused.error_message
