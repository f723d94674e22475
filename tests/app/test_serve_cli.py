"""`attnzoo serve`: the real console script starting uvicorn with the app factory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.settings import get_settings
from model_zoo.cli import main

ATTNZOO = [sys.executable, "-m", "model_zoo"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ATTNZOO_")}


def test_serve_loads_the_requested_variant_and_answers(zoo, jpeg, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [*ATTNZOO, "serve", "--port", str(port), "--variants", "attn0010", "--device", "cpu",
             "--metafile", str(zoo.metafile), "--weights-dir", str(zoo.weights_dir), "--log-level", "warning"],
            env={**clean_env(), "ATTNZOO_MAX_BATCH": "2", "ATTNZOO_GRPC_PORT": str(free_port())},
            stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 240
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.25)
            models = {m["variant"]: m["state"] for m in httpx.get(f"{base}/models").json()["models"]}
            assert models == {"attn1111": "unavailable", "attn0010": "loaded", "attn1111-dcn": "unavailable", "attn0010-dcn": "unavailable"}
            answer = httpx.post(f"{base}/detect", params={"variant": "attn0010"}, content=jpeg, timeout=60)
            assert answer.status_code == 200 and answer.json()["variant"] == "attn0010"
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(60) == 0
    lines = [json.loads(line) for line in Path(log).read_text().splitlines() if line.startswith("{")]
    assert any(line["path"] == "/detect" and line["status"] == 200 for line in lines)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--variants", "attn0010", "bogus"], {}, "unknown variant 'bogus'; valid variants: attn1111, attn0010"),
        ([], {"ATTNZOO_VARIANTS": "bogus"}, "unknown variant 'bogus'"),
        (["--port", "70000"], {}, "invalid port 70000"),
        ([], {"ATTNZOO_MAX_BATCH": "many"}, "invalid settings: ATTNZOO_MAX_BATCH"),
        ([], {"ATTNZOO_DEVICE": "quantum"}, "invalid device 'quantum'"),
        (["--metafile", "/nonexistent/metafile.yml"], {}, "cannot read"),
    ],
)
def test_serve_refuses_bad_configuration_in_one_line(monkeypatch, capsys, args, env, message):
    for name in list(os.environ):
        if name.startswith("ATTNZOO_"):
            monkeypatch.delenv(name)
    for name in ("ATTNZOO_HOST", "ATTNZOO_PORT", "ATTNZOO_VARIANTS", "ATTNZOO_DEVICE", "ATTNZOO_METAFILE", "ATTNZOO_WEIGHTS_DIR"):
        # The command exports these. Recording the absence needs a set first: monkeypatch.delenv of
        # an unset variable records nothing, and the command's value would leak into later tests.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()  # the factory must read this environment, not a cached one
    assert main(["serve", "--port", str(free_port()), *args]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("attnzoo serve: error:") and message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
