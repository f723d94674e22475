"""`attnzoo eval --endpoint`: the tiny COCO set through a real `attnzoo serve` on 127.0.0.1 (the
small synthetic attn0010 of conftest.py) gives the local job's AP; retries honour Retry-After
against a real HTTP server."""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import torch

from model_zoo.cli import main
from model_zoo.evaluation.coco_metrics import AP_FIELDS
from model_zoo.evaluation.detections_log import read_log
from model_zoo.evaluation.endpoint import MAX_ATTEMPTS, EndpointError, retry_after_s, send
from model_zoo.weights import sha256_file

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "deploy"))
from deploy_support import clean_env, free_port, running, serve_command  # noqa: E402

VARIANT = "attn0010"


@pytest.fixture(scope="module")
def service(synthetic_zoo, tmp_path_factory) -> Iterator[str]:
    """``attnzoo serve`` of this checkout with the synthetic zoo; one request per forward
    (max batch 1, as the local job runs), the test process's thread count, and a request deadline
    no loaded test machine reaches (queued requests wait for one forward after another)."""
    port = free_port()
    env = clean_env(
        OMP_NUM_THREADS=str(torch.get_num_threads()),
        ATTNZOO_METAFILE=str(synthetic_zoo.metafile),
        ATTNZOO_WEIGHTS_DIR=str(synthetic_zoo.weights_dir),
        ATTNZOO_MAX_BATCH="1",
        ATTNZOO_REQUEST_TIMEOUT_S="900",
        ATTNZOO_DEVICE="cpu",
    )
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running(serve_command(port), env=env, url=url, log=log, ready_path="/readyz") as process:
        yield process.url


def _eval(tiny_coco, synthetic_zoo, out: Path, *extra: str) -> dict:
    args = ["eval", "--coco-root", str(tiny_coco.root), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main([*args, *synthetic_zoo.cli_args(), *extra]) == 0
    (row,) = json.loads((out / "table.json").read_text())["rows"]
    return row


def test_endpoint_ap_equals_the_local_jobs_on_the_same_weights_and_images(service, tiny_coco, synthetic_zoo, tmp_path):
    local = _eval(tiny_coco, synthetic_zoo, tmp_path / "local")
    remote = _eval(tiny_coco, synthetic_zoo, tmp_path / "remote", "--endpoint", service, "--concurrency", "3")

    assert {field: remote[field] for field in AP_FIELDS} == {field: local[field] for field in AP_FIELDS}
    assert local["box_ap"] is not None and local["endpoint"] is None
    results = "detections.bbox.json"
    assert (tmp_path / "remote" / VARIANT / results).read_bytes() == (tmp_path / "local" / VARIANT / results).read_bytes()

    assert remote["endpoint"] == service
    assert remote["checkpoint_sha256"] == local["checkpoint_sha256"] == sha256_file(synthetic_zoo.checkpoint)
    assert remote["device"] == f"{service} (cpu)" and remote["images"] == 6
    assert remote["fps"] > 0 and remote["peak_memory_mb"] is None  # the server's model time; no memory measured
    table = json.loads((tmp_path / "remote" / "table.json").read_text())
    assert table["source"]["endpoint"] == service
    assert f"| {VARIANT} | 0010 | N | 39.1 |" in (tmp_path / "remote" / "table.md").read_text()


def test_endpoint_run_resumes_from_its_log(service, tiny_coco, synthetic_zoo, tmp_path):
    out = tmp_path / "results"
    _eval(tiny_coco, synthetic_zoo, out, "--endpoint", service, "--limit", "2")
    log = out / VARIANT / "log.rank0.jsonl"
    first = log.read_bytes()

    row = _eval(tiny_coco, synthetic_zoo, out, "--endpoint", service)

    assert log.read_bytes().startswith(first)  # the two logged images were kept, not asked again
    assert sorted(r["image_id"] for r in read_log(log)) == sorted(tiny_coco.image_ids)
    assert row["images"] == 6


def test_a_local_log_is_not_mixed_with_an_endpoint_run(service, tiny_coco, synthetic_zoo, tmp_path, capsys):
    out = tmp_path / "results"
    _eval(tiny_coco, synthetic_zoo, out, "--limit", "1")
    args = ["eval", "--coco-root", str(tiny_coco.root), "--out", str(out), "--endpoint", service]
    assert main([*args, *synthetic_zoo.cli_args()]) == 2
    err = capsys.readouterr().err
    assert "was written by another run" in err and f"endpoint={service}" in err and err.count("\n") == 1


def test_unknown_variant_at_the_endpoint_is_one_line(service, tiny_coco, make_metafile, tmp_path, capsys):
    metafile = make_metafile({"mine": None})
    args = ["eval", "--coco-root", str(tiny_coco.root), "--out", str(tmp_path), "--endpoint", service]
    assert main([*args, "--metafile", str(metafile)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnzoo eval: error: GET {service}/models/mine: HTTP 404: ") and err.count("\n") == 1


# --------------------------------------------------------------------------- retries


class _Busy(BaseHTTPRequestHandler):
    """Answers ``busy`` times 503 (or 429) with the configured Retry-After, then 200."""

    protocol_version = "HTTP/1.1"
    server: _BusyServer

    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner["lock"]:
            owner["requests"] += 1
            busy = owner["requests"] <= owner["busy"]
        body = b'{"ok": true}' if not busy else b'{"error": "queue full", "detail": "try later"}'
        self.send_response(owner["status"] if busy else 200)
        if busy and owner["retry_after"] is not None:
            self.send_header("Retry-After", owner["retry_after"])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _BusyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Busy)
        self.owner = {"lock": threading.Lock(), "requests": 0, "busy": 2, "status": 503, "retry_after": "1"}
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"


@pytest.fixture
def busy_server() -> Iterator[_BusyServer]:
    httpd = _BusyServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("status", "retry_after", "waits"), [(503, "1", [1.0, 1.0]), (429, "0", [0.0, 0.0]), (503, None, [0.5, 1.0])]
)
def test_busy_answers_are_retried_after_retry_after(busy_server, status, retry_after, waits):
    busy_server.owner.update(status=status, retry_after=retry_after)
    slept: list[float] = []
    with httpx.Client() as client:
        response = send(client, "GET", busy_server.url, sleep=slept.append)
    assert response.json() == {"ok": True}
    assert slept == waits and busy_server.owner["requests"] == 3


def test_a_server_busy_for_good_is_one_clear_error(busy_server):
    busy_server.owner.update(busy=100, retry_after="0")
    with httpx.Client() as client, pytest.raises(EndpointError) as failure:
        send(client, "GET", busy_server.url, sleep=lambda seconds: None)
    assert str(failure.value) == f"GET {busy_server.url}: HTTP 503: try later"
    assert busy_server.owner["requests"] == MAX_ATTEMPTS


def test_retry_after_as_an_http_date_and_capped():
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 28 <= retry_after_s(soon, 1) <= 30
    assert retry_after_s("3600", 1) == 60.0  # at most MAX_RETRY_AFTER_S
    assert retry_after_s("soon", 3) == 2.0  # unparsable: the back-off
