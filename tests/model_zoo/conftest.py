"""Fixtures for the registry / weights / fetch / CLI tests.

``synthetic_zoo`` is a user metafile with one small-scale ``attn0010`` variant and its synthetic
checkpoint on disk (for commands that load a model).

``weights_server`` is a real threaded HTTP/1.1 server on 127.0.0.1. It serves checkpoint files
from memory with ``Range`` support (206 / 416), and each path can be made to misbehave: cut
the connection mid-file, stall, answer an error status, corrupt a byte, or ignore ``Range``.
Every request is recorded with its ``Range`` header, so tests can assert how a download resumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

_SEND_CHUNK = 64 * 1024


@dataclass
class Misbehaviour:
    """How the server answers one path; the defaults are a well-behaved server."""

    status: int | None = None  # answer this status (e.g. 404) instead of the file
    cut_after: int | None = None  # close the connection after this many body bytes ...
    cut_times: int = 0  # ... for this many responses, then behave
    stall_after: int | None = None  # go silent after this many body bytes (every response)
    corrupt: bool = False  # flip one byte in the middle of the body
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    hold_after: int | None = None  # pause after this many body bytes of the first response ...
    release: threading.Event = field(default_factory=threading.Event)  # ... until this is set


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class WeightsServer:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> content
    behaviour: dict[str, Misbehaviour] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    def add(self, stem: str, content: bytes) -> str:
        """Serve ``content`` as ``/<stem>-<first 8 hex of its sha256>.pth``; returns its URL."""
        name = f"{stem}-{hashlib.sha256(content).hexdigest()[:8]}.pth"
        self.files[f"/weights/{name}"] = content
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base_url}/weights/{name}"

    def misbehave(self, url: str, **how) -> Misbehaviour:
        behaviour = Misbehaviour(**how)
        self.behaviour[url.removeprefix(self.base_url)] = behaviour
        return behaviour

    def requests_for(self, url: str) -> list[Request]:
        path = url.removeprefix(self.base_url)
        return [r for r in self.requests if r.path == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_HTTPServer"

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        header = self.headers.get("Range")
        with owner.lock:
            owner.requests.append(Request(self.path, header))
            how = owner.behaviour.get(self.path, Misbehaviour())
            cut_after = how.cut_after if how.cut_times > 0 else None
            how.cut_times = max(how.cut_times - 1, 0)
            hold_after, how.hold_after = how.hold_after, None
        body = owner.files.get(self.path)
        self.close_connection = True
        if how.status is not None or body is None:
            self._send_status(how.status or 404)
            return
        if how.corrupt:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and not how.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self._send_status(416, {"Content-Range": f"bytes */{len(body)}"})
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Connection", "close")
        self.end_headers()
        self._send_body(body[start:], how, cut_after, hold_after)

    def _send_body(self, payload: bytes, how: Misbehaviour, cut_after: int | None, hold_after: int | None) -> None:
        sent = 0
        while sent < len(payload):
            if hold_after is not None and sent >= hold_after:
                self.wfile.flush()
                how.release.wait(30)
                hold_after = None
            if cut_after is not None and sent >= cut_after:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if how.stall_after is not None and sent >= how.stall_after:
                self.wfile.flush()
                self.server.owner.stop.wait(30)
                return
            limit = min(x for x in (cut_after, how.stall_after, hold_after, sent + _SEND_CHUNK) if x is not None)
            self.wfile.write(payload[sent:limit])
            sent = limit

    def _send_status(self, status: int, headers: dict[str, str] | None = None) -> None:
        text = f"status {status}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(text)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: WeightsServer


@pytest.fixture
def weights_server() -> Iterator[WeightsServer]:
    httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
    owner = WeightsServer(base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.owner = owner
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield owner
    finally:
        owner.stop.set()  # releases stalled handlers
        for how in owner.behaviour.values():
            how.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def checkpoint_bytes(seed: int) -> bytes:
    """A small torch.save'd checkpoint in mmdet's container layout ({"meta", "state_dict"}).

    About 2.5 MB, so a download spans many network reads. The download code does not look at the
    content, so the full-size synthetic checkpoint is not needed.
    """
    generator = torch.Generator().manual_seed(seed)
    state_dict = {
        "backbone.conv1.weight": torch.randn(64, 3, 7, 7, generator=generator),
        "neck.fpn_convs.0.conv.weight": torch.randn(256, 256, 3, 3, generator=generator),
        "rpn_head.rpn_cls.weight": torch.randn(3, 256, 1, 1, generator=generator),
        "roi_head.bbox_head.fc_cls.weight": torch.randn(81, 1024, generator=generator),
    }
    buffer = io.BytesIO()
    torch.save({"meta": {"mmdet_version": "2.0.0", "epoch": 12}, "state_dict": state_dict}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> bytes:
    """A full-size (about 180 MB) synthetic ``attn0010`` checkpoint with the official keys and
    shapes (model_zoo.synth), for the tests that download a real checkpoint-shaped file."""
    from model_zoo.registry import BUNDLED_METAFILE, load_registry
    from model_zoo.synth import write_synthetic_checkpoint

    entry = load_registry(BUNDLED_METAFILE).resolve("attn0010")
    path = write_synthetic_checkpoint(entry, tmp_path_factory.mktemp("synthetic") / "attn0010.pth", seed=3)
    content = path.read_bytes()
    path.unlink()
    return content


@pytest.fixture(scope="session")
def checkpoints() -> dict[str, bytes]:
    """Two distinct checkpoint payloads, ``a`` and ``b``."""
    return {"a": checkpoint_bytes(1), "b": checkpoint_bytes(2)}


@pytest.fixture
def make_metafile(tmp_path: Path):
    """``make_metafile({alias: url_or_None}, config="attn0010") -> Path``: a user metafile in the
    OpenMMLab schema with one entry per alias, written under ``tmp_path``."""

    def make(weights: dict[str, str | None], *, config: str = "attn0010", name: str = "metafile.yml") -> Path:
        models = []
        for alias, url in weights.items():
            model = {
                "Name": f"test_{alias}_model",
                "Alias": alias,
                "In Collection": "Test",
                "Config": config,
                "Metadata": {
                    "Training Memory (GB)": 1.5,
                    "inference time (ms/im)": [{"value": 50.0, "hardware": "CPU"}],
                },
                "Results": [{"Task": "Object Detection", "Dataset": "COCO", "Metrics": {"box AP": 12.5}}],
            }
            if url is not None:
                model["Weights"] = url
            models.append(model)
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"Collections": [{"Name": "Test"}], "Models": models}, sort_keys=False))
        return path

    return make


@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    """An empty (not yet created) weights directory; the fetch creates it."""
    return tmp_path / "weights"


@pytest.fixture
def refused_url() -> str:
    """A checkpoint URL on a 127.0.0.1 port that nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights/offline-0123abcd.pth"


@dataclass(frozen=True)
class SyntheticZoo:
    """A user metafile with one variant, ``attn0010``, and its synthetic checkpoint."""

    metafile: Path
    weights_dir: Path
    checkpoint: Path

    def cli_args(self) -> list[str]:
        return ["--metafile", str(self.metafile), "--weights-dir", str(self.weights_dir)]


# attn0010 at a small test-time scale and with fewer proposals, so a CPU forward takes well
# under a second; everything else (weights layout, attention, heads) is the real architecture.
_TEST_ARCH = """\
_base_: {base}
preprocess: {{scale: [192, 128]}}
rpn: {{nms_pre: 200, max_per_img: 50}}
"""


@pytest.fixture(scope="session")
def synthetic_zoo(tmp_path_factory: pytest.TempPathFactory) -> SyntheticZoo:
    from model_zoo.registry import BUNDLED_ARCHITECTURES, load_registry
    from model_zoo.synth import write_synthetic_checkpoint
    from model_zoo.weights import sha256_file

    root = tmp_path_factory.mktemp("zoo")
    (root / "attn0010-small.yml").write_text(_TEST_ARCH.format(base=BUNDLED_ARCHITECTURES / "attn0010.yml"))
    bundled = load_registry().resolve("attn0010")
    weights_dir = root / "weights"
    raw = write_synthetic_checkpoint(bundled, weights_dir / "raw.pth", seed=0)
    checkpoint = raw.rename(weights_dir / f"attn0010_synthetic-{sha256_file(raw)[:8]}.pth")
    model = {
        "Name": "faster-rcnn_r50_fpn_attention_0010_1x_coco",
        "Alias": "attn0010",
        "Config": "attn0010-small.yml",
        "Metadata": {
            "Training Memory (GB)": bundled.published.train_memory_gb,
            "inference time (ms/im)": [{"value": bundled.published.inference_ms, "hardware": "V100"}],
        },
        "Results": [{"Task": "Object Detection", "Dataset": "COCO", "Metrics": {"box AP": bundled.published.box_ap}}],
        "Weights": f"https://example.invalid/weights/{checkpoint.name}",
    }
    metafile = root / "metafile.yml"
    metafile.write_text(json.dumps({"Models": [model]}))  # JSON is YAML
    return SyntheticZoo(metafile=metafile, weights_dir=weights_dir, checkpoint=checkpoint)
