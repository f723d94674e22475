"""Compressed HTTP bodies: requests sent with ``Content-Encoding: gzip`` or ``deflate`` (what
tritonclient's ``request_compression_algorithm`` sends), inference responses compressed as
``Accept-Encoding`` asks (``response_compression_algorithm``), and a decompression bomb refused
with 413 having inflated no more than the body limit."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from oip_support import detections_of, httpclient, image_input, serve, stop, wait_http

VARIANT = "attn0010"
CODINGS = ("gzip", "deflate")


@pytest.mark.parametrize("response_coding", [*CODINGS, None])
@pytest.mark.parametrize("request_coding", [*CODINGS, None])
def test_tritonclient_sends_and_reads_compressed_bodies(triton_http, jpeg, request_coding, response_coding):
    plain = triton_http.infer(VARIANT, [image_input(httpclient, [jpeg])], parameters={"score_thr": 0.05})
    result = triton_http.infer(
        VARIANT, [image_input(httpclient, [jpeg])], parameters={"score_thr": 0.05},
        request_compression_algorithm=request_coding, response_compression_algorithm=response_coding,
    )  # fmt: skip
    assert len(plain.as_numpy("detection_scores")[0]) > 0
    for key, values in detections_of(plain).items():
        assert np.array_equal(detections_of(result)[key], values), key


def test_inference_responses_are_compressed_as_accept_encoding_asks(client, jpeg):
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(jpeg) + 4}}
    header = json.dumps({"inputs": [image], "parameters": {"binary_data_output": True}}).encode()
    body = header + len(jpeg).to_bytes(4, "little") + jpeg
    infer = f"/v2/models/{VARIANT}/infer"
    framing = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    answers = {}
    for accept in ("gzip", "deflate", "deflate, gzip", "gzip;q=0, deflate;q=0.5", "br", "identity", "gzip;q=0"):
        with client.stream("POST", infer, content=body, headers={**framing, "Accept-Encoding": accept}) as response:
            assert response.status_code == 200
            answers[accept] = (response.headers.get("content-encoding"), b"".join(response.iter_raw()), response.headers)
    plain = answers["identity"][1]
    assert answers["gzip"][0] == "gzip" and gzip.decompress(answers["gzip"][1]) == plain
    assert answers["deflate"][0] == "deflate" and zlib.decompress(answers["deflate"][1]) == plain  # a zlib stream, as HTTP's deflate
    assert answers["deflate, gzip"][0] == "deflate" and answers["gzip;q=0, deflate;q=0.5"][0] == "deflate"
    assert answers["br"][0] is None and answers["gzip;q=0"][0] is None and answers["identity"][0] is None
    # the JSON header's length is the uncompressed one, which the client reads after inflating
    length = int(answers["gzip"][2]["Inference-Header-Content-Length"])
    assert json.loads(plain[:length])["model_name"] == VARIANT
    assert answers["gzip"][2]["Vary"] == "Accept-Encoding"
    assert "content-encoding" not in client.get(f"/v2/models/{VARIANT}/config", headers={"Accept-Encoding": "gzip"}).headers


@pytest.mark.parametrize(
    ("coding", "body", "status", "fragment"),
    [
        ("br", b"{}", 415, "Content-Encoding 'br' is not supported"),
        ("gzip, deflate", gzip.compress(b"{}"), 415, "is not supported"),
        ("gzip", gzip.compress(b'{"inputs": []}')[:-6], 400, "ends before its gzip stream does"),
        ("deflate", zlib.compress(b"{}")[2:], 400, "not a valid deflate stream"),  # raw deflate, without zlib's header
        ("gzip", gzip.compress(b"{}") + b"more", 400, "data after the end of its gzip stream"),
    ],
)
def test_bodies_that_do_not_inflate_are_refused(client, coding, body, status, fragment):
    response = client.post(f"/v2/models/{VARIANT}/infer", content=body, headers={"Content-Encoding": coding})
    assert response.status_code == status and fragment in response.json()["error"], response.text
    if status == 415:
        assert response.headers["Accept-Encoding"] == "gzip, deflate"


def gzip_of_zeros(size: int) -> bytes:
    """``size`` zero bytes, gzip-compressed (about a thousandth of it), made a MiB at a time."""
    stream, zeros = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(1 << 20)
    return b"".join([*(stream.compress(zeros) for _ in range(size >> 20)), stream.flush()])


def memory(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (the peak since the last reset) of process ``pid``, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_decompression_bomb_is_refused_without_inflating_past_the_limit(zoo, tmp_path, unused_port):
    """``attnzoo serve`` with a 1 MiB body limit: gzip bodies of 8 KiB and of 1 MiB that inflate to
    8 MiB and 1 GiB get 413, and the server's peak RSS while it answers each (reset before it, with
    ``clear_refs``) is less than its RSS before plus the limit."""
    limit = 1 << 20
    port = unused_port()
    process = serve(zoo, tmp_path, "--port", str(port), "--grpc-port", "0", env={"ATTNZOO_MAX_BODY_BYTES": str(limit)})
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_http(process, base_url)
        for inflated in (8 << 20, 1 << 30):
            bomb = gzip_of_zeros(inflated)
            assert len(bomb) < limit
            before = memory(process.pid, "VmRSS")
            Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # the peak RSS starts again from now
            # auto: the model is chosen after the body is read, so nothing refuses the request before its body
            response = httpx.post(f"{base_url}/v2/models/auto/infer", content=bomb, headers={"Content-Encoding": "gzip"}, timeout=120)
            assert response.status_code == 413 and "the limit is 1048576 bytes" in response.json()["error"], response.text
            assert memory(process.pid, "VmHWM") - before < limit, f"a {len(bomb)} byte bomb of {inflated} bytes"
    finally:
        stop(process)
