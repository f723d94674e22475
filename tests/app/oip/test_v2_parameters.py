"""Request parameters as Triton's and KServe's clients send them: the protocol's reserved ones
accepted (honoured or ignored, as Triton does), numbers as integers, floats, unsigned integers or
strings, anything else refused with the valid names; and IMAGE as [B, 1] or [B]."""

from __future__ import annotations

import base64

import grpc
import httpx
import numpy as np
import pytest
from oip_support import detect_arrays, detections_of, grpcclient, httpclient, image_input

from app.oip.grpc_service import infer_parameter
from app.oip.proto import grpc_predict_v2_pb2 as pb
from app.oip.proto import grpc_predict_v2_pb2_grpc as pb_grpc

VARIANT = "attn0010"


def detect(base_url: str, image: bytes, **params) -> dict[str, np.ndarray]:
    response = httpx.post(f"{base_url}/detect", params={"variant": VARIANT, **params}, content=image, timeout=300)
    assert response.status_code == 200, response.text
    return detect_arrays(response.json()["detections"])


def assert_same(result, expected: dict[str, np.ndarray]) -> None:
    ours = detections_of(result)
    for key in ("boxes", "scores", "classes"):
        assert np.array_equal(ours[key], expected[key]), key


def raw_request(jpeg: bytes, **parameters: pb.InferParameter) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=VARIANT, parameters=parameters)
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(len(jpeg).to_bytes(4, "little") + jpeg)
    return request


def test_triton_clients_reserved_parameters_are_accepted(live_server, triton_http, triton_grpc, jpeg):
    expected = detect(live_server.base_url, jpeg)
    for client, module in ((triton_http, httpclient), (triton_grpc, grpcclient)):
        # tritonclient adds these itself: priority (uint64 over gRPC), timeout (µs), sequence_* (a model without sequences ignores them)
        result = client.infer(VARIANT, [image_input(module, [jpeg])], priority=1, timeout=300_000_000, sequence_id=7, sequence_start=True)
        assert_same(result, expected)
    with grpc.insecure_channel(live_server.grpc_url) as channel:  # what perf_analyzer puts on every gRPC request
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(raw_request(jpeg, triton_enable_empty_final_response=pb.InferParameter(bool_param=True)), timeout=300)
        assert response.model_name == VARIANT
        binary = stub.ModelInfer(raw_request(jpeg, binary_data_output=pb.InferParameter(bool_param=True)), timeout=300)  # meaningless over gRPC
        assert list(binary.outputs[0].shape) == [1, 1]
    body = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpeg).decode()]}],
            "parameters": {"triton_enable_empty_final_response": True, "sequence_id": "s-1", "priority": 0}}  # fmt: skip
    assert httpx.post(f"{live_server.base_url}/v2/models/{VARIANT}/infer", json=body, timeout=300).status_code == 200


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({"triton_max_queue": 1}, "names starting with 'triton_' are reserved for Triton"),
        ({"score_threshold": 0.5}, "unknown parameter 'score_threshold'; valid: score_thr"),
        ({"score_thr": "high"}, "parameter 'score_thr' must be a number in [0, 1]; got 'high'"),
        ({"max_dets": "2.5"}, "parameter 'max_dets' must be an integer >= 0; got '2.5'"),
        ({"priority": -1}, "parameter 'priority' must be an integer >= 0"),
        ({"sequence_start": 1}, "parameter 'sequence_start' must be a boolean"),
    ],
)
def test_other_parameters_are_refused_with_what_is_valid(live_server, jpeg, parameters, fragment):
    """Sent as they are (tritonclient itself refuses to send Triton's reserved names)."""
    body = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpeg).decode()]}], "parameters": parameters}
    over_http = httpx.post(f"{live_server.base_url}/v2/models/{VARIANT}/infer", json=body, timeout=300)
    assert over_http.status_code == 422 and fragment in over_http.json()["error"], over_http.text
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as over_grpc:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(raw_request(jpeg, **{k: infer_parameter(v) for k, v in parameters.items()}), timeout=300)
    assert over_grpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in over_grpc.value.details()


def test_numbers_may_come_as_strings_or_unsigned_integers(live_server, triton_http, triton_grpc, jpeg):
    expected = detect(live_server.base_url, jpeg, score_thr=0.05, max_dets=3)
    assert len(expected["scores"]) == 3
    as_strings = {"score_thr": "0.05", "max_dets": "3"}  # all KServe's gRPC client can send for a float
    assert_same(triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg])], parameters=as_strings), expected)
    assert_same(triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])], parameters={"score_thr": 0.05, "max_dets": 3.0}), expected)
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        unsigned = raw_request(jpeg, score_thr=pb.InferParameter(double_param=0.05), max_dets=pb.InferParameter(uint64_param=3))
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(unsigned, timeout=300)
    assert np.frombuffer(response.raw_output_contents[0], dtype="<i4").tolist() == [3]


def test_num_detections_has_the_form_of_the_image_input(triton_http, triton_grpc, jpeg):
    column = np.array([[jpeg], [jpeg]], dtype=np.object_)  # [2, 1], as a client of a batching Triton model sends it
    for client, module in ((triton_http, httpclient), (triton_grpc, grpcclient)):
        rows = module.InferInput("IMAGE", [2, 1], "BYTES")
        rows.set_data_from_numpy(column)
        by_rows = client.infer(VARIANT, [rows])
        flat = client.infer(VARIANT, [image_input(module, [jpeg, jpeg])])
        assert by_rows.as_numpy("num_detections").shape == (2, 1) and flat.as_numpy("num_detections").shape == (2,)
        assert by_rows.as_numpy("num_detections").ravel().tolist() == flat.as_numpy("num_detections").tolist()
        for name in ("detection_boxes", "detection_scores", "detection_classes"):
            assert by_rows.as_numpy(name).shape == flat.as_numpy(name).shape
