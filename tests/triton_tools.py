"""Triton's own tools for the tests, as ``scripts/setup-triton-tools`` installs them under ``.triton/``:

- :class:`TritonServer`: the PyPI wheel's ``tritonserver`` started on free 127.0.0.1 ports with
  nothing but ``--model-repository``, ``--backend-directory`` and the ports (its environment: the
  wheel's library folder as ``LD_LIBRARY_PATH``, and ``PATH``), and stopped;
- :func:`run_perf_analyzer`: Triton's ``perf_analyzer`` against any server of the Open Inference
  Protocol (a tritonserver or ``attnzoo serve``), with real image bytes as ``--input-data``; it needs
  no tritonserver.

A tool that could not be installed here raises :class:`ToolUnavailable` with the reason the set-up
recorded; tests turn it into a skip that says why (the only skip these tests allow).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO_ROOT / ".triton"
SETUP_SCRIPT = "scripts/setup-triton-tools"
SERVER_DIR = TOOLS_DIR / "server"
PERF_ANALYZER_DIR = TOOLS_DIR / "perf_analyzer"
_LENGTH = struct.Struct("<I")  # the length before each element of raw BYTES tensor data


class ToolUnavailable(RuntimeError):
    """A Triton tool that is not installed here; the message says why."""


def _installed(part: Path) -> None:
    reason_file = part.with_name(f"{part.name}.unavailable")
    if reason_file.is_file():
        raise ToolUnavailable(f"{part.name} cannot be installed here: {reason_file.read_text().strip()}")
    if not part.with_name(f"{part.name}.installed").is_file():
        raise ToolUnavailable(f"{part} is not installed: run {SETUP_SCRIPT} (scripts/test runs it)")


# -- tritonserver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TritonServerInstall:
    binary: Path  # pytriton/tritonserver/bin/tritonserver
    backend_dir: Path  # pytriton/tritonserver/backends (the Python backend and its stub in python/)
    library_dir: Path  # nvidia_pytriton.libs: the server's LD_LIBRARY_PATH


def find_tritonserver() -> TritonServerInstall:
    """The tritonserver of the nvidia-pytriton wheel in ``.triton/server``. Raises ToolUnavailable."""
    _installed(SERVER_DIR)
    tritonserver = SERVER_DIR / "pytriton" / "tritonserver"
    return TritonServerInstall(tritonserver / "bin" / "tritonserver", tritonserver / "backends", SERVER_DIR / "nvidia_pytriton.libs")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TritonServer:
    """A ``tritonserver`` process serving ``repository`` on free 127.0.0.1 ports; its output goes
    to ``log_path``. ``extra_args`` are added to the command line (the minimal start takes none).
    """

    def __init__(self, install: TritonServerInstall, repository: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.install = install
        self.repository = repository
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as tritonclient.http and perf_analyzer take it."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def command(self) -> list[str]:
        return [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backend_dir}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            *self.extra_args,
        ]

    @property
    def environment(self) -> dict[str, str]:
        """The server's whole environment: the wheel's libraries, and PATH."""
        return {"LD_LIBRARY_PATH": str(self.install.library_dir), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def start(self, timeout: float = 400.0) -> "TritonServer":
        """Start it and wait until every model of the repository is loaded or has failed.

        Raises:
            RuntimeError: the server exited or did not settle in ``timeout`` seconds (its log's end).
        """
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.command, env=self.environment, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_path.parent)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._settled():
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tritonserver did not load its models in {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def _settled(self) -> bool:
        """Live, and every model of the repository index READY or UNAVAILABLE."""
        try:
            index = httpx.post(f"http://{self.http_url}/v2/repository/index", timeout=5).json()
        except httpx.HTTPError:
            return False
        expected = {path.name for path in self.repository.iterdir() if path.is_dir()}
        states = {model["name"]: model.get("state") for model in index}
        return set(states) >= expected and all(states[name] in ("READY", "UNAVAILABLE") for name in expected)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, and wait (Triton ends its in-flight requests first); SIGKILL after ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- perf_analyzer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerfAnalyzerInstall:
    binary: Path  # bin/perf_analyzer of the tritonclient 2.48.0 wheel
    library_dir: Path  # libcudart of nvidia-cuda-runtime-cu12 (libb64 comes from Debian's libb64-0d)


def find_perf_analyzer() -> PerfAnalyzerInstall:
    """perf_analyzer in ``.triton/perf_analyzer``. Raises ToolUnavailable."""
    _installed(PERF_ANALYZER_DIR)
    return PerfAnalyzerInstall(PERF_ANALYZER_DIR / "bin" / "perf_analyzer", PERF_ANALYZER_DIR / "nvidia" / "cuda_runtime" / "lib")


def write_image_input_data(path: Path, images: Sequence[bytes], *, input_name: str = "IMAGE", shape: Sequence[int] = (1,)) -> Path:
    """A perf_analyzer ``--input-data`` JSON file: one request per image, each a BYTES element of
    ``input_name`` holding the image's bytes, of ``shape`` without the batch dimension.

    perf_analyzer sends a ``b64`` content as the tensor's raw data, which for BYTES is each element's
    4-byte little-endian length followed by its bytes: so the length goes in front of the image."""
    data = [
        {input_name: {"content": {"b64": base64.b64encode(_LENGTH.pack(len(image)) + image).decode("ascii")}, "shape": list(shape)}}
        for image in images
    ]
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path


@dataclass(frozen=True)
class PerfAnalyzerRun:
    returncode: int
    output: str  # stdout and stderr
    rows: list[dict[str, str]]  # the CSV report (-f): one row for the concurrency


def run_perf_analyzer(
    install: PerfAnalyzerInstall,
    *,
    url: str,
    protocol: str,
    model: str,
    input_data: Path,
    concurrency: int,
    request_count: int,
    report: Path,
    timeout: float = 300.0,
    extra_args: Sequence[str] = (),
) -> PerfAnalyzerRun:
    """Run perf_analyzer: ``protocol`` "http" or "grpc" at ``url`` (host:port), ``concurrency``
    requests in flight, ``request_count`` requests in all (a fixed count instead of its search for
    stable windows; perf_analyzer takes one concurrency per run then), its CSV report at ``report``."""
    command = [
        str(install.binary), "-m", model, "-u", url, "-i", protocol,
        "--input-data", str(input_data), "--concurrency-range", f"{concurrency}:{concurrency}",
        "--request-count", str(request_count), "-f", str(report), *extra_args,
    ]  # fmt: skip
    env = {**os.environ, "LD_LIBRARY_PATH": str(install.library_dir)}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    rows = list(csv.DictReader(io.StringIO(report.read_text()))) if report.is_file() else []
    return PerfAnalyzerRun(completed.returncode, completed.stdout + completed.stderr, rows)
