"""`attnzoo eval --endpoint`: the tiny COCO set through a real `attnzoo serve` on 127.0.0.1 (the
small synthetic attn0010 of conftest.py) gives the local job's AP; retries honour Retry-After
against a real HTTP server."""

from __future__ import annotations

import json
import subprocess
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
from model_zoo.evaluation.transport import MAX_ATTEMPTS, EndpointError, retry_after_s, send
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


def test_v2_endpoint_gives_the_local_jobs_results(service, tiny_coco, synthetic_zoo, tmp_path):
    """The Open Inference Protocol transport against attnzoo's own v2 front door: FP32 outputs, so
    the same float64 values as the local run's float32 detections."""
    local = _eval(tiny_coco, synthetic_zoo, tmp_path / "local")
    remote = _eval(tiny_coco, synthetic_zoo, tmp_path / "remote", "--endpoint", service, "--endpoint-protocol", "v2")

    results = "detections.bbox.json"
    assert (tmp_path / "remote" / VARIANT / results).read_bytes() == (tmp_path / "local" / VARIANT / results).read_bytes()
    assert {field: remote[field] for field in AP_FIELDS} == {field: local[field] for field in AP_FIELDS}
    assert (remote["checkpoint_sha256"], remote["weights_source"]) == (local["checkpoint_sha256"], "custom")
    assert remote["fps"] is None and remote["fps_end_to_end"] > 0  # v2 reports no model time


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


def _with_score_thr(synthetic_zoo, folder: Path, score_thr: float) -> Path:
    """The synthetic zoo's metafile with its architecture's test-time score threshold changed."""
    (folder / "strict.yml").write_text(f"_base_: {synthetic_zoo.metafile.parent / 'attn0010-small.yml'}\nroi: {{score_thr: {score_thr}}}\n")
    metafile = json.loads(synthetic_zoo.metafile.read_text())
    metafile["Models"][0]["Config"] = "strict.yml"
    path = folder / "metafile.yml"
    path.write_text(json.dumps(metafile))
    return path


def test_the_score_threshold_asked_for_is_the_registry_entrys(service, tiny_coco, synthetic_zoo, tmp_path):
    """The service's architecture keeps detections above 0.05; the client's registry says 0.3, and
    that is what it asks for: the local 0.05 results above 0.3, exactly."""
    _eval(tiny_coco, synthetic_zoo, tmp_path / "local")
    strict = _with_score_thr(synthetic_zoo, tmp_path, 0.3)
    args = ["eval", "--coco-root", str(tiny_coco.root), "--out", str(tmp_path / "remote"), "--no-progress", "--endpoint", service]
    assert main([*args, "--metafile", str(strict)]) == 0

    local = json.loads((tmp_path / "local" / VARIANT / "detections.bbox.json").read_text())
    remote = json.loads((tmp_path / "remote" / VARIANT / "detections.bbox.json").read_text())
    assert remote == [result for result in local if result["score"] > 0.3] and 0 < len(remote) < len(local)
    (row,) = json.loads((tmp_path / "remote" / "table.json").read_text())["rows"]
    assert row["weights_source"] == "custom"  # what the service's /models/attn0010 says of its file


ENDPOINT_RUN = """
import sys
from pathlib import Path
from model_zoo.evaluation.job import EvalOptions, run_eval
coco_root, out, metafile, url = sys.argv[1:]
options = EvalOptions(coco_root=Path(coco_root), out_dir=Path(out), limit=1, metafile=Path(metafile), endpoint=url, progress=False)
(row,) = run_eval(options).rows
print(row["images"], "torch" in sys.modules)
"""


def test_an_endpoint_run_needs_neither_torch_nor_its_process_group(service, tiny_coco, synthetic_zoo, tmp_path):
    command = [sys.executable, "-c", ENDPOINT_RUN, str(tiny_coco.root), str(tmp_path), str(synthetic_zoo.metafile), service]
    done = subprocess.run(command, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "False"]


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--demo"], {}, "--demo chooses a local model's weights; an endpoint serves its own (`attnzoo serve --demo`)"),
        ([], {"RANK": "0", "WORLD_SIZE": "2"}, "--endpoint runs in one process (its parallelism is --concurrency): start it without torchrun"),
    ],
)
def test_endpoint_refuses_demo_and_torchrun(tiny_coco, synthetic_zoo, tmp_path, monkeypatch, capsys, extra, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["eval", "--coco-root", str(tiny_coco.root), "--out", str(tmp_path), "--endpoint", "http://127.0.0.1:9", *extra]
    assert main([*args, *synthetic_zoo.cli_args()]) == 2
    assert capsys.readouterr().err == f"attnzoo eval: error: {message}\n"
    assert not (tmp_path / VARIANT).exists()


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
