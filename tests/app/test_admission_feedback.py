"""Admission that cannot shut the service out, on live servers: it learns from the forwards that ran
(the warm-up included), an idle variant never refuses what it can run, the variants of one device
see each other's work, stalled uploads hold no place, and a refused request costs no memory.

Each test is one of the ways admission itself made the service fail (issue 23), as a scenario.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from app.main import create_app
from benchmarks.overload import burst
from tests.app.conftest import (
    LiveServer,
    ModelGate,
    Zoo,
    first_answered,
    read_http_response,
    read_metric,
    serving_settings,
    upload_heads,
    wait_for,
    write_scaled_zoo,
)

VARIANT = "attn0010"
TOKEN = "s3cret-admin"


def lone_forward_s(server: LiveServer, variant: str = VARIANT) -> float:
    """The fastest recent forward of one image the server has measured of ``variant`` (its warm-up at least)."""
    floor = server.app.state.service.pool.served(variant).batcher.cost.lone_floor_s()
    assert floor is not None, "the warm-up is measured"
    return floor


def post(server: LiveServer, jpeg: bytes, variant: str = VARIANT, timeout: float = 300) -> httpx.Response:
    return httpx.post(f"{server.base_url}/detect", params={"variant": variant}, content=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=timeout)


def burst_of(server: LiveServer, variant: str, jpeg: bytes, count: int) -> list:
    answers, _ = asyncio.run(burst(server.base_url, variant, jpeg, count, timeout=300))
    return answers


@pytest.mark.parametrize("scale", [(320, 192), None], ids=["reduced-scale", "full-scale"])
def test_after_a_forward_that_ran_slow_the_next_lone_request_is_answered_at_once(zoo: Zoo, tmp_path: Path, start_server, jpeg, scale):
    # one forward held past the deadline (its request gets 504): the figures then predict a lone
    # request at that pace, longer than the deadline; an idle model still takes it, and re-measures
    scaled = write_scaled_zoo(tmp_path, zoo, scale)
    server = start_server(create_app(scaled.settings(variants=[VARIANT])))
    lone_s = lone_forward_s(server)
    deadline_s = 8 * lone_s + 2.0
    with serving_settings(server.app, server.app.state.settings.model_copy(update={"request_timeout_s": deadline_s})):
        model = server.app.state.service.pool.served(VARIANT).detector.model
        gate = ModelGate()
        model.forward = gate.wrap(model.forward)
        try:
            with ThreadPoolExecutor(1) as executor:
                held = executor.submit(post, server, jpeg)
                assert gate.entered.wait(60)
                time.sleep(deadline_s + 1.0)
                gate.release()
                assert held.result().status_code == 504
        finally:
            del model.forward
        batcher = server.app.state.service.pool.served(VARIANT).batcher
        wait_for(lambda: not batcher.has_work() and batcher.lane.running is None)
        predicted = batcher.predicted_wait_s()
        assert predicted is not None and predicted > deadline_s  # what the figures alone would refuse
        started = time.monotonic()
        answer = post(server, jpeg)
        waited = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    model_s = answer.json()["timings_ms"]["model"] / 1000.0
    assert waited < 2 * max(model_s, lone_s)  # it ran at once: its own forward and the overheads


def overload_server(zoo: Zoo, start_server, variants: list[str]) -> LiveServer:
    """A server whose queues (32 each) hold far more work than a short deadline allows; batches of
    one, and a spread allowance for a machine that slows down under the burst itself."""
    settings = zoo.settings(variants=variants, queue_size=32, max_batch=1, admission_min_spread=1.0, admin_token=TOKEN)
    return start_server(create_app(settings))


def short_deadline(server: LiveServer, lone_s: float):
    """Requests get a deadline of six lone forwards and a second: a few of a full queue fit."""
    return serving_settings(server.app, server.app.state.settings.model_copy(update={"request_timeout_s": 6 * lone_s + 1.0}))


def assert_no_504_and_every_refusal_retries(answers: list, admitted_at_least: int) -> None:
    statuses = [a.status for a in answers]
    assert 504 not in statuses, statuses
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= admitted_at_least
    assert all(a.retry_after is not None and int(a.retry_after) >= 1 for a in answers if a.status == 429)


def test_a_burst_at_a_fresh_start_is_admitted_as_far_as_the_warm_up_says(zoo: Zoo, start_server, jpeg):
    # the warm-up is a measured forward: a burst right after the start is not admitted blind
    server = overload_server(zoo, start_server, [VARIANT])
    with short_deadline(server, lone_forward_s(server)):
        answers = burst_of(server, VARIANT, jpeg, 320)  # 10 × the queue
    assert_no_504_and_every_refusal_retries(answers, admitted_at_least=1)


def test_a_burst_right_after_a_load_is_admitted_as_far_as_its_warm_up_says(zoo: Zoo, start_server, jpeg):
    server = overload_server(zoo, start_server, [VARIANT])
    loaded = httpx.post(f"{server.base_url}/models/{VARIANT}/load", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
    assert loaded.status_code == 200, loaded.text
    with short_deadline(server, lone_forward_s(server)):
        answers = burst_of(server, VARIANT, jpeg, 320)
    assert_no_504_and_every_refusal_retries(answers, admitted_at_least=1)


def test_a_burst_split_over_two_variants_counts_the_work_of_both(zoo: Zoo, start_server, jpeg):
    # both variants run on the one CPU: each one's admission counts the other's queue too
    server = overload_server(zoo, start_server, ["attn0010", "attn1111"])
    with short_deadline(server, max(lone_forward_s(server, "attn0010"), lone_forward_s(server, "attn1111"))):

        async def both() -> list:
            halves = await asyncio.gather(*(burst(server.base_url, v, jpeg, 160, timeout=300) for v in ("attn0010", "attn1111")))
            return [answer for answers, _ in halves for answer in answers]

        answers = asyncio.run(both())
    assert_no_504_and_every_refusal_retries(answers, admitted_at_least=2)


def test_stalled_uploads_hold_no_place_and_are_cut_after_the_grace(zoo: Zoo, start_server, jpeg):
    grace_s = 2.0
    server = start_server(create_app(zoo.settings(variants=[VARIANT], min_body_rate_grace_s=grace_s, request_timeout_s=120)))
    stalled = upload_heads(server, f"/detect?variant={VARIANT}", b"\xff" * 100_000, 12, "stalled")
    try:
        for connection in stalled:
            connection.sendall(b"\xff" * 10)  # 10 bytes of the body, then silence
        started = time.monotonic()
        beside = [post(server, jpeg).status_code]  # a real request beside them, every 3 s
        cut = first_answered(stalled, 12, timeout=60)
        cut_after = time.monotonic() - started
        for _ in range(2):
            time.sleep(3)
            beside.append(post(server, jpeg).status_code)
        assert beside == [200, 200, 200]
        assert len(cut) == 12
        for connection in cut:
            status, headers, body = read_http_response(connection)
            assert status == 408 and headers["connection"] == "close" and b"too slowly" in body
        assert cut_after < 120 / 4  # long before the request deadline (120 s): at the end of the grace
    finally:
        for connection in stalled:
            connection.close()


def anonymous_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/PID/status")


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A 6000×6000 PNG (36 MP: 103 MiB decoded) of a few hundred KiB."""
    image = np.zeros((6000, 6000, 3), dtype=np.uint8)
    cv2.rectangle(image, (1000, 1000), (5000, 4000), (40, 160, 220), -1)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


@pytest.fixture()
def serve_process(zoo: Zoo, tmp_path: Path):
    """Start ``attnzoo serve`` of attn0010 in a process of its own (its memory is measured), gRPC
    on, with extra ``ATTNZOO_*`` settings: (process, HTTP base URL, gRPC address)."""
    from tests.app.server.test_serve_shutdown import start_serve
    from tests.app.test_serve_cli import free_port

    processes = []

    def start(**env: str):
        port, grpc_port = free_port(), free_port()
        process, _ = start_serve(zoo, tmp_path, port, {"ATTNZOO_GRPC_PORT": str(grpc_port), **env})
        processes.append(process)
        return process, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"

    yield start
    for process in processes:
        process.terminate()
        process.wait(120)


def test_a_grpc_request_too_big_to_admit_is_refused_before_its_images_are_decoded(serve_process, big_png, jpeg):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    process, base, grpc_url = serve_process(ATTNZOO_REQUEST_TIMEOUT_S="2")  # far less than 16 forwards
    assert httpx.post(f"{base}/detect", params={"variant": VARIANT}, content=jpeg, timeout=120).status_code == 200
    decoded_before = read_metric(base, "attnzoo_stage_duration_seconds_count", variant=VARIANT, stage="preprocess")
    rss_before = anonymous_rss_mib(process.pid)
    client = grpcclient.InferenceServerClient(grpc_url)
    images = grpcclient.InferInput("IMAGE", [16], "BYTES")
    images.set_data_from_numpy(np.array([big_png] * 16, dtype=np.object_))  # 16 × 36 MP: 1.6 GiB decoded
    try:
        with pytest.raises(InferenceServerException) as refused:
            client.infer(VARIANT, [images])
    finally:
        client.close()
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED", refused.value
    assert read_metric(base, "attnzoo_stage_duration_seconds_count", variant=VARIANT, stage="preprocess") == decoded_before
    time.sleep(10)
    assert anonymous_rss_mib(process.pid) < rss_before + 100


def test_memory_that_large_uploads_took_goes_back_when_the_service_is_idle(serve_process, big_png, jpeg):
    process, base, _ = serve_process(ATTNZOO_RELEASE_MEMORY_IDLE_S="2")
    assert httpx.post(f"{base}/detect", params={"variant": VARIANT}, content=jpeg, timeout=120).status_code == 200
    time.sleep(3)  # idle: what the first request took is given back
    rss_before = anonymous_rss_mib(process.pid)
    with ThreadPoolExecutor(8) as executor:
        answers = list(executor.map(lambda _: httpx.post(f"{base}/detect", params={"variant": VARIANT}, content=big_png, timeout=300), range(8)))
    assert [answer.status_code for answer in answers] == [200] * 8
    time.sleep(10)
    assert anonymous_rss_mib(process.pid) < rss_before + 100


def test_closed_loop_clients_on_a_busy_model_are_all_answered(zoo: Zoo, tmp_path: Path, start_server, jpeg):
    # four clients, each sending its next request when its answer arrives, at a scale where a
    # forward takes about a second here: the queue never holds more than four, far under the
    # default deadline, so nobody is refused
    scaled = write_scaled_zoo(tmp_path, zoo, (640, 384))
    server = start_server(create_app(scaled.settings(variants=[VARIANT], request_timeout_s=30.0, queue_size=64)))

    def client(_: int) -> list[int]:
        return [post(server, jpeg).status_code for _ in range(4)]

    with ThreadPoolExecutor(4) as executor:
        statuses = [status for answers in executor.map(client, range(4)) for status in answers]
    assert statuses == [200] * 16


def test_auto_picks_the_variant_whose_lone_forwards_are_faster(zoo: Zoo, tmp_path: Path, start_server, jpeg):
    # freshly loaded, one request answered by the slower variant: under a budget no variant meets,
    # auto picks the one that is really faster, not the one whose only figure is a cold start
    full = write_scaled_zoo(tmp_path, zoo, (320, 192))
    slower, faster = "attn1111-dcn", "attn0010"
    server = start_server(create_app(full.settings(variants=[faster, slower])))
    assert post(server, jpeg, variant=slower).status_code == 200
    chosen = httpx.post(f"{server.base_url}/detect", params={"variant": "auto", "budget_ms": 1}, content=jpeg, timeout=300).json()
    assert (chosen["variant"], chosen["budget_met"]) == (faster, False)
    # the choice agrees with lone forwards measured now, one after the other
    measured = {v: min(post(server, jpeg, variant=v).json()["timings_ms"]["model"] for _ in range(3)) for v in (faster, slower)}
    assert measured[faster] < measured[slower]
