"""Hostile clients over raw sockets against a real server (uvicorn with the service's protocol,
``app/server.py``): every limit answers with the service's JSON error, or closes the connection,
and the server keeps serving.

The server here has a 3 s request deadline and a 256 KiB body limit, so that stalls and floods
are cut quickly; it loads attn0010 (without a warm-up: no request here reaches the model), since
``/detect`` reads the body only for a loaded variant.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Iterator

import httpx
import pytest

from app.main import create_app
from app.server.http_protocol import BODY_GRACE_S
from tests.app.conftest import LiveServer, read_http_response, read_metric

VARIANT = "attn0010"
DEADLINE_S = 3.0
MAX_BODY = 256 * 1024
MAX_HEAD = 64 * 1024  # the default ATTNZOO_MAX_HEADER_BYTES
DETECT = f"POST /detect?variant={VARIANT} HTTP/1.1\r\nHost: test\r\n"


@pytest.fixture(scope="module")
def strict_server(zoo) -> Iterator[LiveServer]:
    # no warm-up: no request here reaches the model
    settings = zoo.settings(variants=[VARIANT], request_timeout_s=DEADLINE_S, max_body_bytes=MAX_BODY, warmup=False)
    server = LiveServer(create_app(settings)).start()
    yield server
    server.stop()


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected_status: int, code: str) -> dict:
    assert status == expected_status, body[:300]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["error"] == code and error["detail"] and error["request_id"] == headers["x-request-id"], error
    return error


def assert_closed(sock: socket.socket) -> None:
    """The server closed the connection (EOF, or a reset while it dropped what we sent)."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def assert_still_serving(server: LiveServer) -> None:
    assert httpx.get(f"{server.base_url}/healthz", timeout=30).status_code == 200


# --- the request head -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        f"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {'a' * (MAX_HEAD + 1)}\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: test\r\n" + "".join(f"X-H{i}: {'v' * 40}\r\n" for i in range(2000)) + "\r\n",
        f"GET /healthz?{'q' * (MAX_HEAD + 1)} HTTP/1.1\r\nHost: test\r\n\r\n",
    ],
    ids=["one-big-header", "2000-headers", "long-url"],
)
def test_a_head_over_the_limit_is_a_431_and_the_connection_closes(strict_server, head):
    with connect(strict_server) as sock:
        sock.sendall(head.encode())
        error = assert_json_error(*read_http_response(sock), 431, "request_header_fields_too_large")
        assert "65536 bytes" in error["detail"]
        assert_closed(sock)
    assert_still_serving(strict_server)


def test_a_64_mib_header_is_refused_as_it_arrives_not_buffered(strict_server):
    chunk = b"a" * (1 << 20)
    with connect(strict_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + chunk)
        # the head is far from complete: only a server counting it as it arrives can answer now
        # (one that buffers it would wait for the rest, or answer 408 at the deadline)
        assert_json_error(*read_http_response(sock), 431, "request_header_fields_too_large")
        try:
            for _ in range(63):  # the rest of the 64 MiB: read and dropped, then the connection closes
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert_still_serving(strict_server)


def test_a_head_that_stalls_is_a_408_at_the_deadline(strict_server):
    with connect(strict_server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: te")
        assert_json_error(*read_http_response(sock), 408, "request_timeout")
        assert time.monotonic() - started >= DEADLINE_S
        assert_closed(sock)
    assert_still_serving(strict_server)


# --- the body ---------------------------------------------------------------------------------


def test_a_body_that_stalls_is_a_408_and_no_longer_in_flight(strict_server):
    base_url = strict_server.base_url
    with connect(strict_server) as sock:
        started = time.monotonic()
        sock.sendall(f"{DETECT}Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n".encode() + b"\xff" * 10)
        time.sleep(DEADLINE_S / 2)
        assert read_metric(base_url, "attnzoo_inflight_requests", variant=VARIANT) == 1
        assert_json_error(*read_http_response(sock), 408, "request_timeout")
        assert time.monotonic() - started >= DEADLINE_S
        assert_closed(sock)
    assert read_metric(base_url, "attnzoo_inflight_requests", variant=VARIANT) == 0


def test_a_body_the_app_does_not_read_is_closed_after_the_deadline(strict_server):
    # an unknown variant is answered before the body is read; the client then trickles the rest,
    # a byte at a time, which would keep an idle keep-alive connection open forever
    with connect(strict_server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /detect?variant=bogus HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n" + b"\xff" * 10)
        assert_json_error(*read_http_response(sock), 404, "unknown_variant")
        sock.settimeout(0.5)
        while True:
            assert time.monotonic() - started < 60, "the connection was never closed"
            try:
                if not sock.recv(65536):
                    break
            except socket.timeout:
                sock.sendall(b"\xff")
            except ConnectionResetError:
                break
        assert time.monotonic() - started >= DEADLINE_S + BODY_GRACE_S
    assert_still_serving(strict_server)


def test_a_chunked_body_over_the_limit_is_a_413(strict_server):
    chunk = b"\xff" * 65536
    with connect(strict_server) as sock:
        sock.sendall(f"{DETECT}Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(64):  # 4 MiB, 16 × the limit
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pytest.fail("the server closed the connection instead of answering 413")
        error = assert_json_error(*read_http_response(sock), 413, "body_too_large")
    assert str(MAX_BODY) in error["detail"]
    assert_still_serving(strict_server)


def test_thousands_of_multipart_parts_are_a_400(strict_server):
    boundary = "b0undary"
    parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n' for i in range(3000))
    body = (parts + f"--{boundary}--\r\n").encode()
    assert len(body) < MAX_BODY
    response = httpx.post(
        f"{strict_server.base_url}/detect",
        params={"variant": VARIANT},
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request" and "fields" in response.json()["detail"]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("multipart/form-data", 400),  # no boundary
        (f"multipart/form-data; boundary={'b' * 60000}", 400),  # a boundary that is never in the body
        ("multipart/form-data; " + "; ".join(f"p{i}=v" for i in range(5000)), 400),
        ("image/jpeg; " + "; ".join(f"p{i}=v" for i in range(5000)), 422),  # parameters ignored; not an image
        ("text/" + "x" * 60000, 415),
        ("\x01\x02;;;==", 400),  # not a header value the parser accepts
    ],
    ids=["no-boundary", "huge-boundary", "5000-params", "image-with-5000-params", "huge-type", "control-chars"],
)
def test_pathological_content_types_are_answered_with_a_json_error(strict_server, content_type, status):
    with connect(strict_server) as sock:
        body = b"not an image at all"
        sock.sendall(f"{DETECT}Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)
        answer_status, headers, answer = read_http_response(sock)
    assert answer_status == status, answer[:300]
    assert json.loads(answer)["detail"]
    assert_still_serving(strict_server)


# --- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        f"{DETECT}Content-Length: abc\r\n\r\n".encode(),
        f"{DETECT}Content-Length: -1\r\n\r\n".encode(),
        f"{DETECT}Content-Length: 10\r\nContent-Length: 20\r\n\r\n".encode(),
        f"{DETECT}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
        f"{DETECT}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n".encode(),
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: test\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        b"GET /he\x00lthz HTTP/1.1\r\nHost: test\r\n\r\n",
    ],
    ids=["cl-not-a-number", "cl-negative", "cl-twice", "cl-and-chunked", "bad-chunk-size", "garbage",
         "bad-version", "bad-header-name", "nul-in-url"],  # fmt: skip
)
def test_malformed_framing_is_a_json_400_and_the_connection_closes(strict_server, request_bytes):
    with connect(strict_server) as sock:
        sock.sendall(request_bytes)
        error = assert_json_error(*read_http_response(sock), 400, "bad_request")
        assert error["detail"].startswith("malformed HTTP request")
        assert_closed(sock)
    assert_still_serving(strict_server)


def test_a_client_still_sending_after_a_refusal_can_read_it(strict_server):
    # the server drops what follows a refused head for LINGER_S, then closes
    with connect(strict_server) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n" + b"x" * 2_000_000)
        assert_json_error(*read_http_response(sock), 400, "bad_request")
        assert_closed(sock)  # within the socket's 30 s timeout: LINGER_S is far less
