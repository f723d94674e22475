"""``attnzoo serve`` as production runs it (the console script in a subprocess): SIGTERM is a
graceful shutdown bounded by the request deadline, and the process allocates from one arena."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from app.server.runner import graceful_shutdown_s
from app.settings import Settings
from model_zoo.runtime import malloc_heaps
from tests.app.conftest import read_http_response, read_metric, wait_for
from tests.app.test_serve_cli import ATTNZOO, clean_env, free_port

VARIANT = "attn0010"
DEADLINE_S = 30.0  # the default: a forward on a busy CPU must fit in it


def start_serve(zoo, tmp_path: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "serve.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [*ATTNZOO, "serve", "--port", str(port), "--variants", VARIANT, "--device", "cpu",
             "--metafile", str(zoo.metafile), "--weights-dir", str(zoo.weights_dir), "--log-level", "info"],
            env={**clean_env(), **env}, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return process, log
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.25)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc (Linux)")
def test_sigterm_lets_requests_in_flight_finish_cuts_stalled_uploads_and_exits_0(zoo, jpeg, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process, log = start_serve(zoo, tmp_path, port, {"ATTNZOO_REQUEST_TIMEOUT_S": str(DEADLINE_S)})
    try:
        assert httpx.post(f"{base}/detect", params={"variant": VARIANT}, content=jpeg, timeout=60).status_code == 200
        # keep-freed memory lives in one arena: no other arena's heap (ATTNZOO_MALLOC_ARENAS=1, soak.py)
        assert malloc_heaps(process.pid).arena_heaps == 0

        head = f"POST /detect?variant={VARIANT} HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\n"
        uploading = socket.create_connection(("127.0.0.1", port), timeout=60)
        uploading.sendall(f"{head}Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg[: len(jpeg) // 2])
        stalled = socket.create_connection(("127.0.0.1", port), timeout=60)
        stalled_at = time.monotonic()
        stalled.sendall(f"{head}Content-Length: 100000\r\n\r\n".encode() + b"\xff" * 10)
        wait_for(lambda: read_metric(base, "attnzoo_inflight_requests", variant=VARIANT) == 2)

        process.send_signal(signal.SIGTERM)
        wait_for(lambda: refuses_connections(port))  # stops accepting at once

        uploading.sendall(jpeg[len(jpeg) // 2 :])  # the upload in flight goes on, and is answered
        status, _, body = read_http_response(uploading)
        assert status == 200 and json.loads(body)["variant"] == VARIANT
        status, _, body = read_http_response(stalled)  # the stalled one ends when it falls under the minimum rate
        assert status == 408 and json.loads(body)["error"] == "request_timeout"
        assert "too slowly" in json.loads(body)["detail"]
        grace_s = Settings.model_fields["min_body_rate_grace_s"].default
        assert grace_s <= time.monotonic() - stalled_at < DEADLINE_S
        assert process.wait(graceful_shutdown_s(zoo.settings(request_timeout_s=DEADLINE_S)) + 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "request_timeout" in text  # the cut upload: one warning line
