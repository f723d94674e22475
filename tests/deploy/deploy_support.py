"""Helpers of the deployment tests: the deployment files parsed as data, and real processes.

The deployment files are checked as data against the code they deploy (settings, CLI parser,
routes, metric families), and the pieces that run without a container engine do run: the
image's entrypoint and health-check commands, the service itself, and Debian's Prometheus.
The image itself is built and run by scripts/container-smoke (docker/smoke/), whose synthetic
zoo and duration parser these tests share.
(A module of its own, not conftest.py, so that test modules can import it by a unique name.)
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_DIR = REPO_ROOT / "docker" / "smoke"
sys.path.insert(0, str(SMOKE_DIR))  # scripts/container-smoke's modules (a script dir, not a package)

# Re-exported for the tests: one duration parser and one synthetic zoo, shared with the smoke.
from compose_stack import parse_duration_s  # noqa: E402, F401
from synthetic_zoo import TEST_VARIANT, hash_named, write_metafile  # noqa: E402, F401


def _load_script(path: Path, name: str) -> ModuleType:
    """A script of the repository (not in a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# docker/requirements.py, which the Dockerfile's requirements stage runs on pyproject.toml.
image_requirements = _load_script(REPO_ROOT / "docker" / "requirements.py", "attnzoo_image_requirements")

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
DOCKER_DIR = REPO_ROOT / "docker"
K8S_DIR = DOCKER_DIR / "k8s"
PROMETHEUS_CONFIG = DOCKER_DIR / "prometheus" / "prometheus.yml"
GRAFANA_DIR = DOCKER_DIR / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "attnzoo.json"
ENTRYPOINT = DOCKER_DIR / "entrypoint.sh"

# Settings the deployment files set by their contract names and defaults, which issue 14 (gRPC
# port; 8001 as Triton's, 0 turns it off) and issue 15 (strict readiness) add to app/settings.py.
# Where Settings does not have them yet, the tests take them from here.
CONTRACT_SETTINGS: dict[str, Any] = {"grpc_port": 8001, "strict_readiness": True}
PROMETHEUS_MISSING = (
    "PROMETHEUS NOT INSTALLED: this test needs Debian's prometheus package "
    "(`apt-get update && apt-get install -y prometheus`: /usr/bin/prometheus, /usr/bin/promtool); "
    "CI installs it, so there this test runs"
)


# --------------------------------------------------------------------------- files as data


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard's panels (Grafana macros still in)."""
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if t.get("expr")]
    assert exprs, "the dashboard has no Prometheus queries"
    return exprs


def grafana_to_promql(expr: str) -> str:
    """Replace the Grafana macros the dashboard uses by what Grafana would send to Prometheus."""
    return expr.replace("$__rate_interval", "1m").replace("$variant", ".*")


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\battnzoo_[a-z0-9_]+", expr))


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose variable interpolation for ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}``."""
    env = env or {}

    def one(match: re.Match[str]) -> str:
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", one, value)


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the instruction, continuation lines joined


def parse_dockerfile(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """The Dockerfile's instructions grouped by build stage (each stage starts at a FROM)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    preamble: list[Instruction] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([instruction])
        elif stages:
            stages[-1].append(instruction)
        else:
            preamble.append(instruction)  # global ARGs
    return [preamble] + stages


class DockerIgnore:
    """Docker's .dockerignore rules: which paths of the repository reach the build context.

    Patterns are Go ``filepath.Match`` globs plus ``**``; a pattern also matches every path under
    a directory it matches; ``!`` re-includes; the last matching pattern wins.
    """

    def __init__(self, path: Path = DOCKERIGNORE) -> None:
        self.rules: list[tuple[bool, str, re.Pattern[str]]] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if include else line).lstrip("/")
            self.rules.append((include, pattern, re.compile(_glob_to_regex(pattern))))

    def excluded(self, relpath: str) -> bool:
        parts = relpath.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        matched = False
        for include, _, regex in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                matched = not include
        return matched

    def prunable(self, rel_dir: str) -> bool:
        """True when nothing under ``rel_dir`` can be in the context (for walking the tree fast)."""
        reincluded = any(include and pattern.startswith(rel_dir + "/") for include, pattern, _ in self.rules)
        return self.excluded(rel_dir) and not reincluded


def _glob_to_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char) or re.escape(char))
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no inherited ATTNZOO_* settings, the venv first on PATH,
    and this checkout's packages importable whatever the child's working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNZOO_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Process:
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return text[-chars:]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)


@contextmanager
def running(
    cmd: list[str],
    *,
    env: dict[str, str],
    url: str,
    log: Path,
    ready_path: str,
    ready: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
    timeout_s: float = 240.0,
) -> Iterator[Process]:
    """Start ``cmd``, wait until GET ``url + ready_path`` satisfies ``ready``, stop it afterwards."""
    with open(log, "wb") as log_handle:
        popen = subprocess.Popen(cmd, env=env, stdout=log_handle, stderr=subprocess.STDOUT, cwd=log.parent)
    process = Process(url=url, popen=popen, log=log)
    try:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            if popen.poll() is not None:
                pytest.fail(f"{cmd[0]} exited with {popen.returncode} before it was ready:\n{process.log_tail()}")
            try:
                response = httpx.get(url + ready_path, timeout=5)
                if ready(response):
                    break
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                pytest.fail(f"{url}{ready_path} not ready after {timeout_s:.0f} s ({last}):\n{process.log_tail()}")
            time.sleep(0.25)
        yield process
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def serve_command(port: int, *extra: str) -> list[str]:
    """``attnzoo serve`` as the container runs it, bound to loopback for the test."""
    return [sys.executable, "-m", "model_zoo", "serve", "--host", "127.0.0.1", "--port", str(port), *extra]


# --------------------------------------------------------------------------- synthetic weights


@dataclass(frozen=True)
class SyntheticWeights:
    store: Path  # folder holding the checkpoint under its hash-prefixed name
    filename: str
    sha256: str

    @property
    def path(self) -> Path:
        return self.store / self.filename
