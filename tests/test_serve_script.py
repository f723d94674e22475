"""scripts/serve fetches only what the service it starts will serve: the ``--variants`` it is
given (several names, up to the next option), else ``ATTNZOO_VARIANTS``, else every variant; and
only their missing files, into the weights dir serve will read.

The script runs for real from a copy of this checkout's scripts/ and docker/ (its ``.venv`` is this
checkout's), against a plain HTTP server on 127.0.0.1 that records every request; its first step,
scripts/setup-venv (which may reinstall .venv), is a no-op there. Most runs end right after the
fetch: serve is given a gRPC port the test holds, which it refuses in one line before loading
anything; one run serves until /healthz answers.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "deploy")]
from deploy_support import clean_env, free_port, running, write_metafile  # noqa: E402

ALIASES = ("attn0010", "attn1111", "attn1111-dcn")


class _RecordingHandler(SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        self.requested.append(self.path)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """scripts/serve, docker/ and .venv of this checkout in a folder of their own, setup-venv a no-op."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "serve", root / "scripts" / "serve")
    (root / "scripts" / "setup-venv").write_text("#!/bin/sh\nexit 0\n")
    (root / "scripts" / "setup-venv").chmod(0o755)
    shutil.copytree(REPO / "docker", root / "docker", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


@pytest.fixture
def weights_server(tmp_path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """({alias: Weights URL}, paths requested so far): one small file per variant, named with its
    sha256 prefix like the published files (it is no checkpoint: serve reports it unloadable)."""
    store = tmp_path / "store"
    store.mkdir()
    requested: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(store)))
    urls = {}
    for alias in ALIASES:
        content = f"not a checkpoint: {alias}\n".encode()
        name = f"{alias}-{hashlib.sha256(content).hexdigest()[:8]}.pth"
        (store / name).write_bytes(content)
        urls[alias] = f"http://127.0.0.1:{server.server_port}/{name}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield urls, requested
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 this test listens on, so that serve refuses it as its gRPC port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _fetched(urls: dict[str, str], requested: list[str]) -> set[str]:
    by_path = {url.split("/", 3)[3]: alias for alias, url in urls.items()}
    return {by_path[path.lstrip("/")] for path in requested}


@pytest.mark.parametrize(
    ("serve_args", "environment", "expected"),
    [
        # several names up to the next option; the option wins over the environment
        (["--variants", "attn0010", "attn1111", "--device", "cpu"], {"ATTNZOO_VARIANTS": "attn1111-dcn"}, {"attn0010", "attn1111"}),
        (["--device", "cpu"], {"ATTNZOO_VARIANTS": "attn1111,attn1111-dcn"}, {"attn1111", "attn1111-dcn"}),
        (["--device", "cpu"], {}, set(ALIASES)),
    ],
    ids=["option", "environment", "all"],
)
def test_fetches_only_the_variants_serve_will_serve(
    checkout, tmp_path, weights_server, held_port, serve_args, environment, expected
):
    urls, requested = weights_server
    weights = tmp_path / "weights"
    env = clean_env(ATTNZOO_METAFILE=str(write_metafile(tmp_path / "registry", urls)), ATTNZOO_WEIGHTS_DIR=str(weights))
    env.update(environment)
    argv = [str(checkout / "scripts" / "serve"), *serve_args, "--host", "127.0.0.1", "--grpc-port", str(held_port)]

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    assert _fetched(urls, requested) == expected, done.stderr
    assert {path.name for path in weights.glob("*.pth")} == {urls[alias].rsplit("/", 1)[1] for alias in expected}
    # Then serve ran with the same options: it refused the held gRPC port, in one line.
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"attnzoo serve: error: gRPC port (ATTNZOO_GRPC_PORT, --grpc-port) {held_port}")


def test_present_files_are_not_fetched_and_options_reach_the_fetch(checkout, tmp_path, weights_server, held_port):
    """--weights-dir and --metafile given to the script are where serve looks, so the fetch uses them too."""
    urls, requested = weights_server
    weights = tmp_path / "elsewhere"
    weights.mkdir()
    present = urls["attn0010"].rsplit("/", 1)[1]
    (weights / present).write_bytes(b"not a checkpoint: attn0010\n")
    metafile = write_metafile(tmp_path / "registry", urls)
    serve_args = ["--metafile", str(metafile), "--weights-dir", str(weights), "--variants", "attn0010", "attn1111"]
    argv = [str(checkout / "scripts" / "serve"), *serve_args, "--host", "127.0.0.1", "--grpc-port", str(held_port)]

    done = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=300)

    assert _fetched(urls, requested) == {"attn1111"}, done.stderr
    assert (weights / urls["attn1111"].rsplit("/", 1)[1]).is_file()
    assert done.returncode == 2


def test_unknown_variant_fetches_nothing_and_serve_says_so_in_one_line(checkout, tmp_path, weights_server):
    urls, requested = weights_server
    env = clean_env(ATTNZOO_METAFILE=str(write_metafile(tmp_path / "registry", urls)), ATTNZOO_WEIGHTS_DIR=str(tmp_path / "w"))

    done = subprocess.run([str(checkout / "scripts" / "serve"), "--variants", "attn9999"], env=env, capture_output=True, text=True, timeout=300)

    assert requested == []
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "attn9999" in done.stderr, done.stderr


def test_serves_after_fetching(checkout, tmp_path, weights_server):
    urls, requested = weights_server
    port = free_port()
    env = clean_env(
        ATTNZOO_METAFILE=str(write_metafile(tmp_path / "registry", urls)),
        ATTNZOO_WEIGHTS_DIR=str(tmp_path / "weights"),
        ATTNZOO_GRPC_PORT="0",
    )
    argv = [str(checkout / "scripts" / "serve"), "--host", "127.0.0.1", "--port", str(port), "--variants", "attn1111"]
    url, log = f"http://127.0.0.1:{port}", tmp_path / "serve.log"
    with running(argv, env=env, url=url, log=log, ready_path="/models", ready=_loading_done) as service:
        assert _fetched(urls, requested) == {"attn1111"}
        (model,) = [model for model in service.get("/models").json()["models"] if model["requested"]]
        # Serve found the fetched file in its weights dir (it is no checkpoint, so it does not load).
        assert (model["variant"], model["state"], model["missing_weights"]) == ("attn1111", "unavailable", None)


def _loading_done(response) -> bool:
    return response.status_code == 200 and all(model["state"] != "loading" for model in response.json()["models"])
