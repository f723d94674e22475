"""Every command of README.md's ```bash blocks, run as written, with local stand-ins.

Each command line must match one rule of :data:`RULES` (by a regular expression), or be listed
word for word in :data:`NOT_RUN` with the reason it cannot run here. A command that matches
neither fails the test as "not covered": adding a command to the README means making it run
here (or saying, in NOT_RUN, why it cannot).

Stand-ins, all local and real (processes, files, HTTP):

- the registry: a metafile (``ATTNZOO_METAFILE``) with the four aliases, all four backed by one
  synthetic ``attn0010`` checkpoint at a small test scale (each command runs its real code path;
  the detections mean nothing), its Weights URL on a local HTTP server (for ``attnzoo fetch``);
- the weights dir (``ATTNZOO_WEIGHTS_DIR``) holding that checkpoint; ``fetch`` gets an empty one;
- the working directory: ``photo.jpg``, ``other.png`` (test photos), ``data/coco`` (a tiny
  COCO look-alike) and ``.venv`` (this checkout's);
- ``localhost:8000`` → an ``attnzoo serve`` of this checkout on a free port (every variant
  loaded); ``attnzoo serve`` commands are started on a free port, checked with ``GET /healthz``
  and stopped; ``/tmp/`` → a per-test folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
sys.path[:0] = [str(REPO / "tests" / "model_zoo" / "evaluation"), str(REPO / "tests" / "deploy")]
from deploy_support import clean_env, free_port, running  # noqa: E402
from tiny_coco import SCENES, write_coco_root  # noqa: E402

PHOTOS = {"photo.jpg": "astronaut_portrait.jpg", "other.png": "coffee_landscape.png"}
ALIASES = ("attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn")

NOT_RUN: dict[str, str] = {
    "scripts/serve": "installs the package into .venv (scripts/setup-venv) and fetches from the internet; "
    "its two steps, `attnzoo fetch` and `attnzoo serve`, run here",
    "scripts/test": "it is the test suite this test belongs to",
    ".venv/bin/python -m pytest tests/model_zoo/test_parity.py -q": "part of this test suite",
    ".venv/bin/python -m pytest tests/deploy -q": "part of this test suite",
    ".venv/bin/python tools/parity.py compare [--variants attn1111 ...] [--scales small full] [--report table.md]":
    "a synopsis with [optional] parts, not a command; tests/model_zoo/test_parity.py runs the comparison",
    "apt-get update && apt-get install -y prometheus": "changes the machine (.ci/run installs it)",
    "perf_analyzer -m attn0010 -u localhost:8000 -i http --input-data input.json --concurrency-range 1:4":
    "perf_analyzer lives in .triton/ (scripts/setup-triton-tools); tests/triton/test_perf_analyzer.py runs it against attnzoo serve",
    "perf_analyzer -m attn0010 -u localhost:8001 -i grpc --input-data input.json --concurrency-range 1:4 --streaming": "the same",
    **{
        command: "builds or uses the optional mmdet reference environment (internet, about 12 minutes)"
        for command in (
            "python3.11 -m venv /tmp/refenv/venv",
            "/tmp/refenv/venv/bin/pip install torch==2.14.1 torchvision==0.29.1 wheel numpy opencv-python-headless==4.12.0.88",
            "/tmp/refenv/venv/bin/pip install --no-deps 'setuptools<70'",
            "/tmp/refenv/venv/bin/pip install addict packaging pillow pyyaml yapf regex termcolor rich matplotlib "
            "scipy shapely terminaltables tqdm pycocotools six httpx filelock",
            "/tmp/refenv/venv/bin/pip download --no-deps --no-binary :all: mmcv==2.1.0 -d /tmp/refenv/sdist",
            "cd /tmp/refenv/sdist && tar xzf mmcv-2.1.0.tar.gz && cd mmcv-2.1.0",
            "sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' setup.py",
            "MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 /tmp/refenv/venv/bin/pip install --no-build-isolation --no-deps .",
            "/tmp/refenv/venv/bin/pip install --no-deps mmdet==3.3.0 mmengine==0.10.7",
            '/tmp/refenv/venv/bin/python -c "from mmcv.ops import DeformConv2dPack, RoIAlign, nms; import mmdet"',
            "/tmp/refenv/venv/bin/python tools/parity.py reference",
            "/tmp/refenv/venv/bin/python tools/parity.py conditioning --scales small",
        )
    },
    **{
        command: "needs a Docker engine or a Kubernetes cluster; tests/deploy checks these files as data"
        for command in (
            "docker compose up --build",
            "docker compose --profile cpu up --build",
            "docker build -t REGISTRY/attnzoo:TAG . && docker push REGISTRY/attnzoo:TAG",
            "cd docker/k8s && kustomize edit set image attnzoo=REGISTRY/attnzoo:TAG && cd -",
            "kubectl apply -k docker/k8s",
            "kubectl apply -f docker/k8s/prometheus-adapter-rules.yaml",
            "kubectl -n monitoring rollout restart deployment prometheus-adapter",
            'kubectl get --raw "/apis/custom.metrics.k8s.io/v1beta1/namespaces/default/pods/*/attnzoo_queue_depth"',
            "kubectl get hpa attnzoo --watch",
            "DOCKER_BUILDKIT=1 docker build -t attnzoo .",
            "kubectl apply -f docker/k8s/weights-pvc.yaml -f docker/k8s/inferenceservice.yaml",
            "kubectl get isvc attnzoo",
        )
    },
}


# --------------------------------------------------------------------------- the README


def readme_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks: continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = _strip_comment(line).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


def _strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` outside quotes, at the start or after a blank)."""
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


# --------------------------------------------------------------------------- the stand-ins


@dataclass
class Sandbox:
    root: Path  # the working directory of every command
    env: dict[str, str]
    fetch_env: dict[str, str]  # the same, with an empty weights dir
    servers: contextlib.ExitStack  # stops what was started
    server_url: str = ""  # host:port of the `localhost:8000` stand-in (local_service)


@pytest.fixture(scope="module")
def weights_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 serving a folder: (base URL, folder)."""
    folder = tmp_path_factory.mktemp("served")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, weights_server) -> Iterator[Sandbox]:
    from model_zoo.registry import BUNDLED_ARCHITECTURES, load_registry
    from model_zoo.synth import write_synthetic_checkpoint
    from model_zoo.weights import sha256_file

    base_url, served = weights_server
    root = tmp_path_factory.mktemp("readme")
    zoo = tmp_path_factory.mktemp("zoo")
    (zoo / "small.yml").write_text(
        f"_base_: {BUNDLED_ARCHITECTURES / 'attn0010.yml'}\npreprocess: {{scale: [256, 160]}}\n"
        "rpn: {nms_pre: 200, max_per_img: 50}\n"
    )
    weights_dir = zoo / "weights"
    raw = write_synthetic_checkpoint(load_registry().resolve("attn0010"), weights_dir / "raw.pth", seed=0)
    checkpoint = raw.rename(weights_dir / f"readme_stand_in-{sha256_file(raw)[:8]}.pth")
    os.link(checkpoint, served / checkpoint.name)
    models = [
        {"Name": f"stand_in_{alias}", "Alias": alias, "Config": "small.yml", "Weights": f"{base_url}/{checkpoint.name}"}
        for alias in ALIASES
    ]
    (zoo / "metafile.yml").write_text(json.dumps({"Models": models}))  # JSON is YAML

    for name, fixture in PHOTOS.items():
        shutil.copyfile(REPO / "tests" / "fixtures" / "images" / fixture, root / name)
    write_coco_root(root / "data" / "coco", SCENES[:2])
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "tmp").mkdir()
    settings = {
        "ATTNZOO_METAFILE": str(zoo / "metafile.yml"),
        "ATTNZOO_WEIGHTS_DIR": str(weights_dir),
        "ATTNZOO_GRPC_PORT": "0",  # the README's servers need no gRPC here (8001 may be taken)
        "ATTNZOO_ADMIN_TOKEN": "change-me",  # the token the README's model-control commands send
    }
    with contextlib.ExitStack() as servers:
        yield Sandbox(
            root=root,
            env=clean_env(**settings),
            fetch_env=clean_env(**{**settings, "ATTNZOO_WEIGHTS_DIR": str(zoo / "fetched")}),
            servers=servers,
        )


# --------------------------------------------------------------------------- the rules


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{shlex.join(argv)} exited with {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def local_service(box: Sandbox) -> str:
    """host:port of the ``localhost:8000`` stand-in: every variant of the stand-in registry,
    started on first use and loaded before this returns."""
    if not box.server_url:
        port = free_port()
        box.server_url = f"127.0.0.1:{port}"
        argv = [str(REPO / ".venv" / "bin" / "attnzoo"), "serve", "--port", str(port)]
        url, log = f"http://{box.server_url}", box.root / "server.log"
        box.servers.enter_context(running(argv, env=box.env, url=url, log=log, ready_path="/readyz"))
    return box.server_url


def run_attnzoo(command: str, box: Sandbox) -> None:
    """``.venv/bin/attnzoo SUBCOMMAND ...``: as written, ``/tmp/`` moved into the sandbox (and
    ``localhost:8000``, e.g. of ``eval --endpoint``, to the local service)."""
    if "localhost:8000" in command:
        command = command.replace("localhost:8000", local_service(box))
    argv = shlex.split(command.replace(" /tmp/", f" {box.root}/tmp/"))
    subcommand = argv[1]
    done = _run(argv, box.fetch_env if subcommand == "fetch" else box.env, box.root)
    if subcommand == "--version":
        assert done.stdout.startswith(f"attnzoo {version('attnzoo')}"), done.stdout
    if subcommand == "predict":
        images = [arg for arg in argv[2:] if arg in PHOTOS]
        assert [item["image"] for item in json.loads(done.stdout)] == images
    if subcommand == "eval":
        out = Path(box.root, argv[argv.index("--out") + 1] if "--out" in argv else "results")
        assert {row["variant"] for row in json.loads((out / "table.json").read_text())["rows"]} == set(ALIASES)
    if "--out" in argv and subcommand == "synth-weights":
        assert Path(argv[argv.index("--out") + 1]).stat().st_size > 100_000_000


def run_serve(command: str, box: Sandbox) -> None:
    """``attnzoo serve ...``: on a free port; up when ``GET /healthz`` answers 200; then stopped."""
    argv = shlex.split(command)
    port = free_port()
    if "--port" in argv:
        argv[argv.index("--port") + 1] = str(port)
    env, url = {**box.env, "ATTNZOO_PORT": str(port)}, f"http://127.0.0.1:{port}"
    with running(argv, env=env, url=url, log=box.root / f"serve-{port}.log", ready_path="/healthz"):
        pass


def run_curl(command: str, box: Sandbox) -> None:
    """``curl ... localhost:8000/...``: against this checkout's server; HTTP errors fail (``--fail``)."""
    argv = shlex.split(command.replace("localhost:8000", local_service(box)))
    _run([argv[0], "--fail-with-body", "--silent", "--show-error", *argv[1:]], box.env, box.root)
    if "-o" in argv:
        assert (box.root / argv[argv.index("-o") + 1]).stat().st_size > 0


RULES: tuple[tuple[str, Callable[[str, Sandbox], None]], ...] = (
    (r"\.venv/bin/attnzoo serve( .*)?", run_serve),
    (r"\.venv/bin/attnzoo (--version|models|fetch|predict|synth-weights|eval)( .*)?", run_attnzoo),
    (r"curl .*localhost:8000/.*", run_curl),
)


def rule_for(command: str) -> Callable[[str, Sandbox], None] | None:
    return next((run for pattern, run in RULES if re.fullmatch(pattern, command)), None)


# --------------------------------------------------------------------------- the tests


def test_readme_parser_finds_commands_and_drops_comments():
    text = "```bash\na --x 'q # not a comment'   # a comment\n# only a comment\nb \\\n  c\n```\n```json\nd\n```\n"
    assert readme_commands(text) == ["a --x 'q # not a comment'", "b c"]


def test_every_readme_command_is_covered():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    uncovered = [command for command in commands if command not in NOT_RUN and rule_for(command) is None]
    assert not uncovered, "README commands this test does not know how to run (add a rule or a NOT_RUN reason):\n" + (
        "\n".join(uncovered)
    )
    stale = sorted(set(NOT_RUN) - set(commands))
    assert not stale, "NOT_RUN lists commands the README no longer has:\n" + "\n".join(stale)


@pytest.mark.timeout(900)
def test_every_readme_command_runs_as_written(sandbox):
    commands = readme_commands(README.read_text(encoding="utf-8"))
    ran = []
    for command in commands:
        run = rule_for(command)
        if run is not None and command not in NOT_RUN:
            run(command, sandbox)
            ran.append(command)
    assert len(ran) >= 10  # today: 6 attnzoo commands and 8 curl commands
