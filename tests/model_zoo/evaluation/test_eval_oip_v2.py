"""The OIP v2 transport against a small v2 REST server written from the protocol's text (binary
tensor data extension); ``test_eval_endpoint.py`` runs it against attnzoo's own v2 front door."""

from __future__ import annotations

import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import numpy as np
import pytest

from model_zoo.categories import COCO_CATEGORY_IDS
from model_zoo.evaluation.endpoint import open_transport
from model_zoo.evaluation.oip_v2 import HEADER_LENGTH

BOXES = np.array([[[10.5, 20.25, 110.0, 90.125], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]], dtype="<f4")
SCORES = np.array([[0.9, 0.0625, 0.0]], dtype="<f4")
LABELS = np.array([[0, 16, 0]], dtype="<i4")  # person, dog; the third row is padding


class _V2Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[tuple[dict, bytes]] = []

    def log_message(self, format: str, *args) -> None:
        pass

    def _send(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/ready"):
            self._send(b"")
        else:
            self._send(json.dumps({"name": "attn0010", "parameters": {"sha256": "ab" * 32, "device": "cuda:0"}}).encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        length = int(self.headers[HEADER_LENGTH])
        self.received.append((json.loads(body[:length]), body[length:]))
        tensors = [
            ("num_detections", "INT32", [1], np.array([2], dtype="<i4")),
            ("detection_boxes", "FP32", list(BOXES.shape), BOXES),
            ("detection_scores", "FP32", list(SCORES.shape), SCORES),
            ("detection_classes", "INT32", list(LABELS.shape), LABELS),
        ]
        header = {
            "model_name": "attn0010",
            "outputs": [
                {"name": n, "datatype": t, "shape": s, "parameters": {"binary_data_size": a.nbytes}} for n, t, s, a in tensors
            ],
        }
        encoded = json.dumps(header).encode()
        self._send(encoded + b"".join(a.tobytes() for *_, a in tensors), {HEADER_LENGTH: str(len(encoded))})


@pytest.fixture
def v2_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _V2Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_v2_transport_sends_binary_bytes_and_reads_binary_outputs(v2_server):
    transport = open_transport(v2_server, "v2")
    try:
        model = transport.describe("attn0010")
        result = transport.detect(b"\xff\xd8 jpeg bytes", "attn0010")
    finally:
        transport.close()

    assert (model.sha256, model.device) == ("ab" * 32, "cuda:0")
    header, binary = _V2Handler.received[-1]
    assert header["inputs"] == [
        {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 4 + 13}}
    ]
    assert binary == struct.pack("<I", 13) + b"\xff\xd8 jpeg bytes" and header["parameters"] == {"score_thr": 0.05}
    assert [(d.bbox, d.score, d.category_id) for d in result.detections] == [
        ((10.5, 20.25, 110.0, 90.125), float(np.float32(0.9)), COCO_CATEGORY_IDS[0]),
        ((1.0, 2.0, 3.0, 4.0), 0.0625, COCO_CATEGORY_IDS[16]),
    ]
    assert result.model_s is None
