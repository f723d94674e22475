"""Admission at the request head (``app/server/head_admission.py``), on the shared live server: a request
that names its variant is refused from its head alone when that variant's queue cannot take it,
with the answer its route gives; every other request, and every place taken, ends as before.

The queue is held full by places taken in it directly (``holding_every_place``), as admitted
requests being decoded hold them: it stays full, with no model held, for as long as a test needs.
"""

from __future__ import annotations

import base64
import json
import socket

import pytest

from tests.app.conftest import assert_every_place_is_free, holding_every_place, read_http_response, serving_settings

VARIANT = "attn0010"
OTHER_VARIANT = "attn1111"
DETECT = f"/detect?variant={VARIANT}"


def inference_body(image: bytes) -> bytes:
    """An Open Inference Protocol request of one image (JSON, base64)."""
    tensor = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(image).decode()]}
    return json.dumps({"inputs": [tensor]}).encode()


# door: (target, JSON body? (else the JPEG itself), the route's endpoint label, protocol label)
DOORS = {
    "detect": (DETECT, False, "/detect", "http"),
    "attention": (f"/attention?variant={VARIANT}&x=10&y=10", False, "/attention", "http"),
    "v2-infer": (f"/v2/models/{VARIANT}/infer", True, "/v2/models/{model}/infer", "v2-http"),
    "v2-versioned-infer": (f"/v2/models/{VARIANT}/versions/1/infer", True, "/v2/models/{model}/versions/{version}/infer", "v2-http"),
}


def refused_from_its_head(live_server, target: str, body: bytes, content_type: str, tag: str, origin: str | None = None):
    """Send only the head of ``POST {target}``: its answer (status, headers, JSON body), which can
    only be a refusal (the body never arrives), and whether the connection was closed after it."""
    origin_header = f"Origin: {origin}\r\n" if origin else ""
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as connection:
        connection.sendall(
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-ID: {tag}\r\n{origin_header}\r\n".encode()
        )
        status, headers, payload = read_http_response(connection)
        connection.settimeout(0.2)
        try:
            closed = connection.recv(1) == b""
        except socket.timeout:
            closed = False
    return status, headers, json.loads(payload), closed


@pytest.mark.parametrize("door", DOORS.values(), ids=DOORS.keys())
def test_a_request_refused_at_its_head_gets_the_answer_its_route_gives(live_server, zoo, access_log, metric, jpeg, door):
    target, speaks_json, endpoint, protocol = door
    body, content_type = (inference_body(jpeg), "application/json") if speaks_json else (jpeg, "image/jpeg")
    labels = {"endpoint": endpoint, "variant": VARIANT, "status": "429", "protocol": protocol}
    counted_before = metric(live_server.base_url, "attnzoo_requests_total", **labels)
    # the route's own refusal of the same request: a browser's request (Origin) is left to the app
    # when CORS is on, as its answer needs the CORS headers (none here: the app was built without)
    with_cors = zoo.settings(cors_origins=["https://app.example.com"])
    with holding_every_place(live_server, DETECT), serving_settings(live_server.app, with_cors):
        at_head = refused_from_its_head(live_server, target, body, content_type, "at-head")
        in_route = refused_from_its_head(live_server, target, body, content_type, "in-route", origin="https://app.example.com")
    for (status, headers, payload, _), request_id in zip((at_head, in_route), ("at-head", "in-route")):
        assert status == 429
        assert int(headers["retry-after"]) >= 1
        assert headers["x-request-id"] == request_id and headers["content-type"] == "application/json"
        if speaks_json:
            assert set(payload) == {"error"} and payload["error"].startswith(f"{VARIANT}: 4 requests are already waiting")
        else:
            assert set(payload) == {"error", "detail", "request_id"}
            assert payload["error"] == "overloaded" and payload["request_id"] == request_id
            assert payload["detail"].startswith(f"{VARIANT}: 4 requests are already waiting")
    assert at_head[1]["connection"] == "close" and at_head[3]  # its body was never read: the connection ends
    assert "connection" not in in_route[1] and not in_route[3]  # the app's answer: kept alive
    # logged and counted alike, under the route's own labels
    lines = {line["request_id"]: line for line in access_log if line["request_id"] in ("at-head", "in-route")}
    assert lines.keys() == {"at-head", "in-route"}
    varying = {"ts", "request_id", "duration_ms", "client"}
    assert {k: v for k, v in lines["at-head"].items() if k not in varying} == {k: v for k, v in lines["in-route"].items() if k not in varying}
    assert lines["at-head"]["error"] == "overloaded" and lines["at-head"]["variant"] == VARIANT
    assert metric(live_server.base_url, "attnzoo_requests_total", **labels) == counted_before + 2


def test_requests_that_do_not_name_a_full_queue_are_left_to_their_routes(live_server, client, jpeg):
    with holding_every_place(live_server, DETECT):
        answers = {
            "unknown variant": client.post("/detect", params={"variant": "attn9999"}, content=jpeg),
            "another variant": client.post("/detect", params={"variant": OTHER_VARIANT}, content=jpeg),
            # a repeated query parameter: the route reads the last one, and so does the head
            "the last of two": client.post(f"{DETECT}&variant={OTHER_VARIANT}", content=jpeg),
            "a wrong model version": client.post(f"/v2/models/{VARIANT}/versions/2/infer", content=inference_body(jpeg)),
            "not a POST": client.get("/detect", params={"variant": VARIANT}),
        }
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {"unknown variant": 404, "another variant": 200, "the last of two": 200, "a wrong model version": 404, "not a POST": 405}
    assert answers["unknown variant"].json()["error"] == "unknown_variant"
    assert answers["the last of two"].json()["variant"] == OTHER_VARIANT


def test_a_request_pipelined_behind_another_is_answered_in_turn(live_server, jpeg):
    # its head arrives while the first request is being answered: only the app answers it, after
    # the first (an answer written from the head would overtake the first one's)
    with holding_every_place(live_server, DETECT), socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as connection:
        connection.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            + f"POST {DETECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg
        )
        first, second = read_http_response(connection), read_http_response(connection)
    assert first[0] == 200 and json.loads(first[2])["status"] == "ok"
    assert second[0] == 429 and json.loads(second[2])["error"] == "overloaded"


def test_a_place_taken_at_the_head_is_given_back_when_its_request_fails_before_its_route_takes_it(live_server, client, jpeg):
    failures = {
        "a bad parameter": client.post("/detect", params={"variant": VARIANT, "score_thr": 5}, content=jpeg),
        "an attention query out of range": client.post("/attention", params={"variant": VARIANT, "x": 10, "y": 10, "stage": 9}, content=jpeg),
        "not an inference request": client.post(f"/v2/models/{VARIANT}/infer", content=b"{not json"),
    }
    statuses = {name: answer.status_code for name, answer in failures.items()}
    assert statuses == {"a bad parameter": 422, "an attention query out of range": 422, "not an inference request": 400}
    # a body announced over the limit: refused by the middleware, before any route
    too_large = live_server.app.state.settings.max_body_bytes + 1
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as connection:
        connection.sendall(f"POST {DETECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {too_large}\r\n\r\n".encode())
        assert read_http_response(connection)[0] == 413
    assert_every_place_is_free(live_server, DETECT)
