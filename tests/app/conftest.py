"""Fixtures of the service tests: a test zoo on disk and a real uvicorn on 127.0.0.1.

The test zoo is a copy of the bundled metafile whose architectures extend the bundled ones with a
small test-time scale (fast CPU forwards), and whose weights are:

- ``attn0010``, ``attn1111``: synthetic checkpoints, named with their own sha256 prefix (verify);
- ``attn1111-dcn``: a file whose hash does not match its name (refused);
- ``attn0010-dcn``: no file (missing).

One session-wide server loads the two good variants once and serves gRPC (the Open Inference
Protocol) on a free port; tests that need other settings build their own app (cheap when it
loads nothing; no gRPC unless asked) or replace ``app.state.settings`` on the shared one. Modules
that need all four variants use ``four_variant_server`` (synthetic checkpoints for the other two).
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import httpx
import numpy as np
import pytest
import uvicorn
import yaml
from fastapi import FastAPI

from app.core.pool import VariantPool
from app.main import create_app
from app.server.access_log import ACCESS_LOGGER
from app.server.runner import uvicorn_config
from app.settings import Settings
from model_zoo import Registry, load_registry, write_synthetic_checkpoint
from model_zoo.registry import BUNDLED_ARCHITECTURES, BUNDLED_METAFILE
from model_zoo.synth import calibration_image
from model_zoo.weights import sha256_file

LOADED_VARIANTS = ("attn0010", "attn1111")
ALL_VARIANTS = ("attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn")  # registry order
REFUSED_VARIANT = "attn1111-dcn"
MISSING_VARIANT = "attn0010-dcn"
TEST_SCALE = (320, 192)  # (long, short) test-time resize target
UNREACHABLE = "http://127.0.0.1:9"  # never contacted: the files are already in place


@dataclass(frozen=True)
class Zoo:
    root: Path
    metafile: Path
    weights_dir: Path
    results_dir: Path

    def registry(self) -> Registry:
        return load_registry(self.metafile)

    def settings(self, **overrides) -> Settings:
        values = dict(
            metafile=self.metafile,
            weights_dir=self.weights_dir,
            results_dir=self.results_dir,
            variants=list(LOADED_VARIANTS),
            device="cpu",
            max_batch=4,
            max_wait_ms=20,
            queue_size=4,
            # far above any prediction from the batches of these tests, held ones included, so that
            # admission never refuses them; the deadline tests set their own
            request_timeout_s=300,
            grpc_port=0,  # no gRPC server unless a test asks (the default 8001 may be taken)
        )
        values.update(overrides)
        return Settings(**values)


def write_weights(alias: str, seed: int, weights_dir: Path) -> str:
    """A synthetic checkpoint of ``alias`` in ``weights_dir``, named with its own sha256 prefix;
    its file name."""
    staging = weights_dir / f"{alias}.partial"
    write_synthetic_checkpoint(load_registry().resolve(alias), staging, seed=seed)
    filename = f"{alias}-{sha256_file(staging)[:8]}.pth"
    staging.rename(weights_dir / filename)
    return filename


def _write_zoo(root: Path) -> Zoo:
    weights_dir, arch_dir, results_dir = root / "weights", root / "arch", root / "results"
    for folder in (weights_dir, arch_dir, results_dir):
        folder.mkdir(parents=True)
    raw = yaml.safe_load(BUNDLED_METAFILE.read_text(encoding="utf-8"))
    for seed, model in enumerate(raw["Models"]):
        alias = model["Alias"]
        arch = {
            "_base_": str(BUNDLED_ARCHITECTURES / f"{model['Config']}.yml"),
            "preprocess": {"scale": list(TEST_SCALE)},
            "rpn": {"nms_pre": 300, "max_per_img": 100},
        }
        (arch_dir / f"{alias}.yml").write_text(yaml.safe_dump(arch), encoding="utf-8")
        model["Config"] = f"arch/{alias}.yml"
        if alias in LOADED_VARIANTS:
            filename = write_weights(alias, seed, weights_dir)
        elif alias == REFUSED_VARIANT:
            filename = f"{alias}-00000000.pth"
            (weights_dir / filename).write_bytes(b"not the published checkpoint" * 100)
        else:
            filename = f"{alias}-12345678.pth"
        model["Weights"] = f"{UNREACHABLE}/{filename}"
    metafile = root / "metafile.yml"
    metafile.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return Zoo(root, metafile, weights_dir, results_dir)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return _write_zoo(tmp_path_factory.mktemp("zoo"))


def _write_full_zoo(root: Path, zoo: Zoo) -> Zoo:
    """``zoo``'s registry with every variant loadable: its two checkpoints (hard links) and
    synthetic ones for the refused and the missing variant (seeded as ``_write_zoo`` seeds)."""
    weights_dir = root / "weights"
    weights_dir.mkdir(parents=True)
    raw = yaml.safe_load(zoo.metafile.read_text(encoding="utf-8"))
    for seed, model in enumerate(raw["Models"]):
        model["Config"] = str(zoo.root / model["Config"])
        url, _, filename = model["Weights"].rpartition("/")
        if model["Alias"] in LOADED_VARIANTS:
            os.link(zoo.weights_dir / filename, weights_dir / filename)
        else:
            filename = write_weights(model["Alias"], seed, weights_dir)
        model["Weights"] = f"{url}/{filename}"
    metafile = root / "metafile.yml"
    metafile.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return Zoo(root, metafile, weights_dir, zoo.results_dir)


def write_scaled_zoo(root: Path, zoo: Zoo, scale: tuple[int, int] | None) -> Zoo:
    """``zoo``'s registry and checkpoints (hard links; every variant loadable, as
    ``_write_full_zoo``) at another test-time scale: (long, short), or None for the official one."""
    full = _write_full_zoo(root / "full", zoo)
    arch_dir = root / "arch"
    arch_dir.mkdir(parents=True)
    raw = yaml.safe_load(full.metafile.read_text(encoding="utf-8"))
    for model in raw["Models"]:
        arch = {"_base_": model["Config"]}
        if scale is not None:
            arch["preprocess"] = {"scale": list(scale)}
        else:  # the bundled architecture's own scale and proposals
            arch = {"_base_": str(BUNDLED_ARCHITECTURES / f"{load_registry().resolve(model['Alias']).config}.yml")}
        (arch_dir / f"{model['Alias']}.yml").write_text(yaml.safe_dump(arch), encoding="utf-8")
        model["Config"] = str(arch_dir / f"{model['Alias']}.yml")
    metafile = root / "metafile.yml"
    metafile.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return Zoo(root, metafile, full.weights_dir, zoo.results_dir)


def wait_until_settled(pool: VariantPool, timeout: float) -> bool:
    """Wait until every requested variant of ``pool`` is loaded or unavailable; False on timeout."""
    deadline = time.monotonic() + timeout
    while "loading" in pool.readiness().values():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="session")
def wait_settled() -> Callable[[VariantPool, float], bool]:
    return wait_until_settled


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server that binds it itself, e.g. gRPC)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """``uvicorn.Server`` serving ``app`` on 127.0.0.1 in a thread of this process; its gRPC
    address is ``grpc_url`` when the app's settings give a gRPC port."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        settings = app.state.settings.model_copy(update={"log_level": "warning"})
        self.grpc_url = f"127.0.0.1:{settings.grpc_port}" if settings.grpc_port else None
        self.server = uvicorn.Server(uvicorn_config(app, settings))  # what `attnzoo serve` runs
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self, timeout: float = 300.0) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        if not wait_until_settled(self.app.state.service.pool, max(0.0, deadline - time.monotonic())):
            raise RuntimeError("models did not finish loading")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(60)
        self._socket.close()


@contextmanager
def serving_settings(app: FastAPI, settings: Settings) -> Iterator[None]:
    """``app``'s routes and its service read ``settings`` inside (``app.state.settings`` and the
    service's; what the pool and the batchers were built with stays). Not pytest's monkeypatch:
    undoing it on a Starlette ``State`` deletes the attribute."""
    service = app.state.service
    original = app.state.settings
    app.state.settings = service.settings = settings
    try:
        yield
    finally:
        app.state.settings = service.settings = original


@pytest.fixture(scope="session")
def live_server(zoo: Zoo) -> Iterator[LiveServer]:
    """The shared server: attn0010 + attn1111 loaded, max_batch 4, queue 4, gRPC on a free port."""
    server = LiveServer(create_app(zoo.settings(grpc_port=free_port()))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def four_variant_server(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """All four variants loaded (two more synthetic checkpoints: about a minute), gRPC on a free
    port; one per test module that asks, stopped after it."""
    full_zoo = _write_full_zoo(tmp_path_factory.mktemp("full_zoo"), zoo)
    server = LiveServer(create_app(full_zoo.settings(variants=list(ALL_VARIANTS), grpc_port=free_port()))).start()
    yield server
    server.stop()


@pytest.fixture()
def start_server() -> Iterator[Callable[[FastAPI], LiveServer]]:
    """Start a live server for an app of the test's own; stopped after the test."""
    servers: list[LiveServer] = []

    def start(app: FastAPI) -> LiveServer:
        servers.append(LiveServer(app).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def unused_port() -> Callable[[], int]:
    return free_port


@pytest.fixture()
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.base_url, timeout=120) as http:
        yield http


@pytest.fixture()
def asgi_client(live_server: LiveServer):
    """httpx over ASGI to the shared app (its lifespan runs in the server thread)."""
    transport = httpx.ASGITransport(app=live_server.app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120)


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


def encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def scene(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth BGR uint8 scene with solid shapes (the synthetic weights detect things in it)."""
    return cv2.resize(calibration_image(seed), (width, height), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def make_scene() -> Callable[..., np.ndarray]:
    return scene


@pytest.fixture(scope="session")
def jpeg() -> bytes:
    """The default test image: a 320x240 JPEG scene."""
    return encode(scene())


@pytest.fixture(scope="session")
def encode_image() -> Callable[..., bytes]:
    return encode


def pil_bytes(image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def encode_pil() -> Callable[..., bytes]:
    return pil_bytes


@pytest.fixture(scope="session")
def broken_server(zoo: Zoo) -> Iterator[LiveServer]:
    """A server asked for the refused and the missing variant only: nothing loads."""
    server = LiveServer(create_app(zoo.settings(variants=[REFUSED_VARIANT, MISSING_VARIANT]))).start()
    yield server
    server.stop()


def read_http_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response: (status, headers lower-cased, body); the body by Content-Length.

    Reads no byte past the response, so that responses that arrive together (pipelined) are read
    one call each: the head is found in what is waiting (``MSG_PEEK``) before it is taken."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        waiting = sock.recv(65536, socket.MSG_PEEK)
        if not waiting:
            raise ConnectionError(f"connection closed before a response: {head[:200]!r}")
        end = (head[-3:] + waiting).find(b"\r\n\r\n")
        head += sock.recv(len(waiting) if end < 0 else end + 4 - len(head[-3:]))
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
    body = b""
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(int(headers["content-length"]) - len(body))
        if not chunk:
            raise ConnectionError("connection closed in the middle of the body")
        body += chunk
    return int(status_line.split()[1]), headers, body


def upload_heads(server: LiveServer, target: str, body: bytes, count: int, tag: str, content_type: str = "image/jpeg") -> list[socket.socket]:
    """``count`` ``POST {target}`` of ``body``, each on a connection of its own, of which only the
    head is sent: each request then waits for its body. Request ids: ``{tag}-0``, ``{tag}-1``, ..."""
    connections = []
    for index in range(count):
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        connection.sendall(
            f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {tag}-{index}\r\n\r\n".encode()
        )
        connections.append(connection)
    return connections


def first_answered(connections: list[socket.socket], count: int, timeout: float) -> list[socket.socket]:
    """The first ``count`` of ``connections`` with something to read (or all those that have one
    when ``timeout`` seconds have passed first)."""
    answered: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    while len(answered) < count and time.monotonic() < deadline:
        waiting = [c for c in connections if c not in answered]
        readable, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
        answered.extend(readable)
    return answered


def variant_of_target(target: str) -> str:
    """The variant a ``POST`` target names (``/detect?variant=V``, ``/v2/models/V/infer``)."""
    if "variant=" in target:
        return target.split("variant=", 1)[1].split("&", 1)[0]
    return target.split("/v2/models/", 1)[1].split("/", 1)[0]


@contextmanager
def holding_every_place(server: LiveServer, target: str) -> Iterator[None]:
    """Every place in the queue of the variant ``POST {target}`` names held for the block, as
    admitted requests whose images are being decoded hold them; given back at its end."""
    batcher = server.app.state.service.pool.served(variant_of_target(target)).batcher
    with batcher.admit(time.monotonic() + 300, count=server.app.state.settings.queue_size):
        yield


def assert_every_place_is_free(server: LiveServer, target: str) -> None:
    """No ended request keeps a place in the queue of the variant ``target`` names: the whole
    queue can be admitted at once (within a few seconds: a request's place goes back just after
    its answer is sent)."""
    batcher = server.app.state.service.pool.served(variant_of_target(target)).batcher
    wait_for(lambda: batcher.qsize() == 0 and not batcher.has_work(), timeout=10)
    with holding_every_place(server, target):
        pass


def read_metric(base_url: str, name: str, **labels: str) -> float:
    """Sum of the ``/metrics`` samples of ``name`` with ``labels`` (0.0 when none), as PromQL's
    ``sum(name{labels})``: labels left out (e.g. ``protocol``) are summed over."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="session")
def metric() -> Callable[..., float]:
    return read_metric


class ModelGate:
    """Holds a loaded variant's model at the start of its next forward until released.

    The model still runs for real; the gate only fixes *when*, so tests can fill the queue
    behind a running batch deterministically.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self.calls = 0

    def wrap(self, forward):
        def gated(*args, **kwargs):
            self.calls += 1
            self.entered.set()
            if not self._open.wait(60):
                raise RuntimeError("ModelGate never released")
            return forward(*args, **kwargs)

        return gated

    def release(self) -> None:
        self._open.set()


@pytest.fixture()
def hold_model(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModelGate]:
    gates: list[ModelGate] = []

    def hold(variant: str) -> ModelGate:
        model = live_server.app.state.service.pool.served(variant).detector.model
        gate = ModelGate()
        monkeypatch.setattr(model, "forward", gate.wrap(model.forward))
        gates.append(gate)
        return gate

    yield hold
    for gate in gates:
        gate.release()


class AccessLines(logging.Handler):
    """Collects the access log's JSON lines."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture()
def access_log() -> Iterator[list[dict]]:
    """The access-log lines written during the test (of every server in this process)."""
    handler = AccessLines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


@pytest.fixture(scope="session")
def eventually() -> Callable[..., None]:
    return wait_for
