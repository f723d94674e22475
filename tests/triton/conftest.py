"""Fixtures of the Triton tests: a two-variant test zoo, the repository ``attnzoo triton-repo`` writes
of it, a real tritonserver serving that repository, and ``attnzoo serve`` on the same zoo.

The zoo is the bundled registry at the service tests' small test scale (``tests/app/conftest.py``:
each variant's ``Config`` extends its bundled architecture), with synthetic checkpoints, named by
their sha256 prefix, for a plain variant and a DCN one. The repository is written by the project's
``.venv/bin/attnzoo`` (the environment the generated models then find by themselves), and
tritonserver is started with nothing but the repository, the backend folder and the ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from model_zoo import load_registry
from model_zoo.registry import BUNDLED_ARCHITECTURES, BUNDLED_METAFILE
from tests.app.conftest import TEST_SCALE, UNREACHABLE, Zoo, write_weights
from tests.triton.client_script import http_client
from tests.triton_tools import (
    PerfAnalyzerInstall,
    ToolUnavailable,
    TritonServer,
    TritonServerInstall,
    find_perf_analyzer,
    find_tritonserver,
    free_port,
)

PLAIN_VARIANT, DCN_VARIANT = "attn0010", "attn0010-dcn"
VARIANTS = (PLAIN_VARIANT, DCN_VARIANT)
ATTNZOO = Path(sys.executable).with_name("attnzoo")  # the project's .venv/bin/attnzoo
IMAGES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "images"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without ``ATTNZOO_*`` (the commands' defaults apply), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ATTNZOO_")}, **extra}


def write_zoo(root: Path) -> Zoo:
    """The bundled metafile with every variant at the test scale (as the service tests' zoo) and
    synthetic checkpoints for :data:`VARIANTS` only (the others have no file)."""
    weights_dir, arch_dir = root / "weights", root / "arch"
    for folder in (weights_dir, arch_dir, root / "results"):
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
        filename = write_weights(alias, seed, weights_dir) if alias in VARIANTS else f"{alias}-12345678.pth"
        model["Weights"] = f"{UNREACHABLE}/{filename}"
    metafile = root / "metafile.yml"
    metafile.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return Zoo(root, metafile, weights_dir, root / "results")


def triton_repo(zoo: Zoo, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``.venv/bin/attnzoo triton-repo`` on ``zoo`` for :data:`VARIANTS` (CPU instances), more ``args`` after."""
    command = [
        str(ATTNZOO), "triton-repo", "--metafile", str(zoo.metafile), "--weights-dir", str(zoo.weights_dir),
        "--out", str(out), "--variants", *VARIANTS, "--device", "cpu", *args,
    ]  # fmt: skip
    return subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=300, check=False)


def image_bytes() -> dict[str, bytes]:
    """The real test photos (tests/fixtures/images) by file name."""
    return {path.name: path.read_bytes() for path in sorted(IMAGES_DIR.iterdir()) if path.suffix in (".jpg", ".png")}


@pytest.fixture(scope="session")
def tritonserver_install() -> TritonServerInstall:
    try:
        return find_tritonserver()
    except ToolUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def perf_analyzer_install() -> PerfAnalyzerInstall:
    try:
        return find_perf_analyzer()
    except ToolUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def triton_zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    return write_zoo(tmp_path_factory.mktemp("triton_zoo"))


@pytest.fixture(scope="session")
def repository(triton_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository ``attnzoo triton-repo`` writes of the zoo (checkpoints copied: self-contained)."""
    out = tmp_path_factory.mktemp("triton") / "repository"
    written = triton_repo(triton_zoo, out)
    assert written.returncode == 0, written.stderr
    return out


@pytest.fixture(scope="session")
def triton(tritonserver_install: TritonServerInstall, repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """tritonserver on the repository, started with nothing but its folders and ports."""
    server = TritonServer(tritonserver_install, repository, tmp_path_factory.mktemp("triton_log") / "tritonserver.log")
    with server:
        yield server


class AttnzooServe:
    """``.venv/bin/attnzoo serve`` on the zoo as a process of its own (as deployed: torch's default
    threads, like the Triton model's stub process), HTTP and gRPC on free ports."""

    def __init__(self, zoo: Zoo, log_path: Path) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        command = [
            str(ATTNZOO), "serve", "--host", "127.0.0.1", "--port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--variants", *VARIANTS, "--device", "cpu", "--metafile", str(zoo.metafile), "--weights-dir", str(zoo.weights_dir),
            "--log-level", "warning",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
        self.log_path = log_path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"attnzoo serve exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"http://{self.http_url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"attnzoo serve was not ready in {timeout:.0f} s:\n{self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="session")
def attnzoo_serve(triton_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttnzooServe]:
    server = AttnzooServe(triton_zoo, tmp_path_factory.mktemp("serve_log") / "serve.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def images() -> dict[str, bytes]:
    return image_bytes()


@pytest.fixture(scope="session")
def zoo_registry(triton_zoo: Zoo):
    return load_registry(triton_zoo.metafile)


# Clients of the servers, closed after each test: tritonserver waits for open HTTP connections
# (up to its exit timeout, 30 s) before it stops.


@pytest.fixture()
def triton_http(triton: TritonServer) -> Iterator[httpclient.InferenceServerClient]:
    with http_client(triton.http_url) as client:
        yield client


@pytest.fixture()
def triton_grpc(triton: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        yield client


@pytest.fixture()
def serve_http(attnzoo_serve: AttnzooServe) -> Iterator[httpclient.InferenceServerClient]:
    with http_client(attnzoo_serve.http_url) as client:
        yield client


@pytest.fixture()
def serve_grpc(attnzoo_serve: AttnzooServe) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(attnzoo_serve.grpc_url) as client:
        yield client
