"""Bad requests over the Open Inference Protocol: the v2 error body ``{"error": ...}`` with
``/detect``'s status codes over HTTP, the matching status codes over gRPC, and a service that
keeps answering."""

from __future__ import annotations

import base64
import json
import socket
import struct
import zlib

import grpc
import httpx
import numpy as np
import pytest
from oip_support import grpcclient, http_client, httpclient, image_input
from tritonclient.utils import InferenceServerException

from app.main import create_app
from app.oip.proto import grpc_predict_v2_pb2 as pb

VARIANT = "attn0010"


def pixel_bomb() -> bytes:
    """A PNG whose header says 20000 x 20000 pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b"")


def infer_error(client, client_module, inputs, model: str = VARIANT, **kwargs) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as error:
        client.infer(model, inputs, **kwargs)
    return error.value


def uint8_pixels(client_module, make_scene):
    tensor = client_module.InferInput("IMAGE", [1, 240, 320, 3], "UINT8")
    tensor.set_data_from_numpy(make_scene(320, 240)[None])
    return tensor


def bytes_tensor(client_module, name: str, shape: list[int], jpeg: bytes):
    tensor = client_module.InferInput(name, shape, "BYTES")
    tensor.set_data_from_numpy(np.full(shape, jpeg, dtype=np.object_))
    return tensor


# (case, HTTP status, gRPC status, a fragment of the message)
CASES = [
    ("unknown model", 404, "NOT_FOUND", "valid variants: attn1111, attn0010, attn1111-dcn, attn0010-dcn"),
    ("unknown version", 404, "NOT_FOUND", "its only version is '1'"),
    ("not an image", 422, "INVALID_ARGUMENT", "not a recognised image"),
    ("truncated image", 422, "INVALID_ARGUMENT", "truncated or corrupt"),
    ("one bad image of two", 422, "INVALID_ARGUMENT", "not a recognised image"),
    ("wrong datatype", 400, "INVALID_ARGUMENT", "has datatype UINT8; expected BYTES"),
    ("wrong shape", 400, "INVALID_ARGUMENT", "has shape [1, 2]; expected [B, 1] or [B]"),
    ("missing input", 400, "INVALID_ARGUMENT", "unexpected input 'INPUT0'; the model takes one input, 'IMAGE'"),
    ("two inputs", 400, "INVALID_ARGUMENT", "is given more than once"),
    ("pixel bomb", 413, "INVALID_ARGUMENT", "the limit is 40000000 pixels"),
    ("more images than the queue holds", 413, "INVALID_ARGUMENT", "at most 4 fit in one request (ATTNZOO_QUEUE_SIZE)"),
    ("score_thr out of range", 422, "INVALID_ARGUMENT", "'score_thr' must be a number in [0, 1]"),
    ("unknown class", 422, "INVALID_ARGUMENT", "unknown class 'unicorn'"),
    ("unknown parameter", 422, "INVALID_ARGUMENT", "unknown parameter 'score_threshold'"),
    ("unknown output", 400, "INVALID_ARGUMENT", "unknown output 'boxes'"),
]


def request_of(case: str, module, jpeg: bytes, make_scene) -> dict:
    """The tritonclient ``infer`` arguments of one bad request."""
    one = [image_input(module, [jpeg])]
    return {
        "unknown model": {"model": "attn9999", "inputs": one},
        "unknown version": {"inputs": one, "model_version": "2"},
        "not an image": {"inputs": [image_input(module, [b"definitely not an image"])]},
        "truncated image": {"inputs": [image_input(module, [jpeg[: len(jpeg) // 2]])]},
        "one bad image of two": {"inputs": [image_input(module, [jpeg, b"\x00" * 100])]},
        "wrong datatype": {"inputs": [uint8_pixels(module, make_scene)]},
        "wrong shape": {"inputs": [bytes_tensor(module, "IMAGE", [1, 2], jpeg)]},
        "missing input": {"inputs": [bytes_tensor(module, "INPUT0", [1], jpeg)]},
        "two inputs": {"inputs": [bytes_tensor(module, "IMAGE", [1], jpeg), bytes_tensor(module, "IMAGE", [1], jpeg)]},
        "pixel bomb": {"inputs": [image_input(module, [pixel_bomb()])]},
        "more images than the queue holds": {"inputs": [image_input(module, [jpeg] * 5)]},
        "score_thr out of range": {"inputs": one, "parameters": {"score_thr": 2.0}},
        "unknown class": {"inputs": one, "parameters": {"classes": "person,unicorn"}},
        "unknown parameter": {"inputs": one, "parameters": {"score_threshold": 0.5}},
        "unknown output": {"inputs": one, "outputs": [module.InferRequestedOutput("boxes")]},
    }[case]


@pytest.mark.parametrize(("case", "status", "grpc_status", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_requests_get_the_same_answer_over_both_transports(triton_http, triton_grpc, jpeg, make_scene, case, status, grpc_status, fragment):
    arguments = request_of(case, httpclient, jpeg, make_scene)
    error = infer_error(triton_http, httpclient, arguments.pop("inputs"), arguments.pop("model", VARIANT), **arguments)
    assert error.status() == str(status), error
    assert fragment in error.message(), error.message()
    arguments = request_of(case, grpcclient, jpeg, make_scene)
    error = infer_error(triton_grpc, grpcclient, arguments.pop("inputs"), arguments.pop("model", VARIANT), **arguments)
    assert error.status() == f"StatusCode.{grpc_status}", error
    assert fragment in error.message(), error.message()
    assert triton_grpc.infer(VARIANT, [image_input(grpcclient, [jpeg])]).as_numpy("num_detections").shape == (1,)


def test_a_variant_that_failed_to_load_is_unavailable_with_retry_after(zoo, start_server, unused_port, jpeg):
    server = start_server(create_app(zoo.settings(variants=["attn1111-dcn", "attn0010-dcn"], grpc_port=unused_port())))
    triton_http, triton_grpc = http_client(server.base_url), grpcclient.InferenceServerClient(server.grpc_url)
    over_http = infer_error(triton_http, httpclient, [image_input(httpclient, [jpeg])], "attn1111-dcn")
    over_grpc = infer_error(triton_grpc, grpcclient, [image_input(grpcclient, [jpeg])], "attn1111-dcn")
    assert (over_http.status(), over_grpc.status()) == ("503", "StatusCode.UNAVAILABLE")
    for error in (over_http, over_grpc):
        assert "variant 'attn1111-dcn' is unavailable" in error.message()  # with the reason it did not load
    ready = httpx.get(f"{server.base_url}/v2/models/attn0010-dcn/ready", timeout=30)
    assert ready.status_code == 503 and int(ready.headers["Retry-After"]) >= 1 and set(ready.json()) == {"error"}
    triton_http.close()
    triton_grpc.close()


def test_error_bodies_are_the_protocols_with_a_request_id(client, jpeg):
    """Malformed requests no client library would send: invalid JSON, bad base64, binary data
    that does not add up; and a path that does not exist under /v2."""
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1]}
    header = json.dumps({"inputs": [{**image, "parameters": {"binary_data_size": len(jpeg) + 4 + 10}}]}).encode()
    infer = f"/v2/models/{VARIANT}/infer"
    two = [base64.b64encode(jpeg).decode()] * 2
    binary = header + struct.pack("<I", len(jpeg)) + jpeg
    cases = [
        (client.post(infer, content=b"{not json"), 400, "not an inference request"),
        (client.post(f"/v2/models/{VARIANT}/infer", json={"inputs": []}), 400, "input 'IMAGE' is missing"),
        (client.post(f"/v2/models/{VARIANT}/infer", json={"inputs": [{**image, "data": ["***"]}]}), 400, "not valid base64"),
        (client.post(infer, json={"inputs": [{**image, "data": two}]}), 400, "its shape holds 1 elements, its 'data' 2"),
        (client.post(f"/v2/models/{VARIANT}/infer", json={"inputs": [image]}), 400, "has no data"),
        (client.post(infer, content=binary, headers={"Inference-Header-Content-Length": str(len(header))}), 400, "declares binary_data_size"),
        (client.post(infer, content=b"{}", headers={"Inference-Header-Content-Length": "99"}), 400, "Inference-Header-Content-Length is '99'"),
        (client.post(f"/v2/models/{VARIANT}/infer", content=b"{}", headers={"Content-Encoding": "gzip"}), 400, "not a valid gzip stream"),
        (client.post(f"/v2/models/{VARIANT}/infer", content=b"{}", headers={"Content-Encoding": "br"}), 415, "Content-Encoding 'br' is not supported"),
        (client.get("/v2/nothing/here"), 404, "Not Found"),
    ]
    for response, status, fragment in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error"} and fragment in body["error"], body
        assert len(response.headers["X-Request-ID"]) == 32


def test_an_oversize_body_is_refused_before_it_is_read(live_server):
    """HTTP: the body limit (ATTNZOO_MAX_BODY_BYTES) is announced in Content-Length → 413 at once."""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
        sock.sendall(
            f"POST /v2/models/{VARIANT}/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
            f"Inference-Header-Content-Length: 100\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b'{"error":"the request body announces 52428800 bytes; the limit is 20971520 bytes (ATTNZOO_MAX_BODY_BYTES)"}' in head


def test_an_oversize_grpc_message_is_refused_by_grpc(triton_grpc, jpeg):
    """gRPC: the same limit is the server's largest message; grpc itself answers RESOURCE_EXHAUSTED."""
    big = jpeg + b"\x00" * (21 * 1024 * 1024)
    error = infer_error(triton_grpc, grpcclient, [image_input(grpcclient, [big])])
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED" and "larger than max" in error.message()
    assert triton_grpc.is_server_ready()


def test_bytes_that_are_not_the_protobuf_message_are_an_invalid_argument(live_server, access_log, eventually):
    """gRPC: request bytes that do not parse as the RPC's message get INVALID_ARGUMENT with a plain
    message (grpc's own answer is UNKNOWN naming the parser's exception), logged like any refusal;
    on a stream, that request's message carries the error and the stream goes on."""
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, a length far past the end
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as error:
            infer(garbage, timeout=30, metadata=(("x-request-id", "garbled-1"),))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("the ModelInfer request is not a valid protobuf message"), error.value.details()

        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        answers = list(stream(iter([garbage, garbage]), timeout=30))
        messages = [pb.ModelStreamInferResponse.FromString(answer).error_message for answer in answers]
        assert len(messages) == 2 and all(m.startswith("the ModelStreamInfer request is not a valid protobuf message") for m in messages), messages

        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
        assert pb.ServerReadyResponse.FromString(ready(pb.ServerReadyRequest().SerializeToString(), timeout=30)).ready
    eventually(lambda: "garbled-1" in {line["request_id"] for line in access_log}, timeout=10)
    line = next(line for line in access_log if line["request_id"] == "garbled-1")
    assert (line["status"], line["grpc_status"]) == (400, "INVALID_ARGUMENT")
