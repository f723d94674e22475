"""Overload: a burst of requests against a real ``attnzoo serve`` at its default settings; what
each request got, how fast, and whether the service is itself again right after; appends a dated
entry to ``BENCHMARKS.md``.

1. ``attnzoo serve`` of one variant with the default ``ATTNZOO_*`` settings (queue 64, batches of 4,
   30 s deadline; test-time scale: the variant's own, 1333×800, unless ``--scale``).
2. ``--calibrate`` lone requests, one after the other: the latency of a request on an idle service
   (and batches for the service to predict from).
3. The burst: ``--burst`` requests (default 10 × the queue size) sent at once, each on its own
   connection, from a lean client (asyncio streams and h11: the client's own work must not count
   as the server's latency). Recorded per request: status, latency (from opening the connection
   to the whole answer), ``Retry-After``, error code.
4. Once every answer of the burst is in, one more request: its status and latency.

Reported: counts of 200/429/503/504 (and others); refusal latency (429/503: p50, p99, max) and
``Retry-After`` (present on every refusal? min, median, max); latency of answers and of 504s
against the deadline (no request may wait past it); the request after the burst against a lone
one. Issue 12's targets: every refusal under 1 s and with ``Retry-After``, nobody waits past the
deadline, the request after the burst answered within seconds.

Usage: python benchmarks/overload.py [--variant attn0010] [--burst 640] [--scale 1333,800]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h11  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.settings import Settings  # noqa: E402
from benchmarks import common, serve_bench  # noqa: E402
from model_zoo import load_registry  # noqa: E402

SCRIPT = "benchmarks/overload.py"
REFUSALS = (429, 503)
FAST_REFUSAL_S = 1.0


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer (connection error)
    seconds: float  # from sending the request to the whole answer
    retry_after: str | None
    error: str | None  # the JSON error code, or the transport error
    model_s: float | None = None  # an answer's model time, as the server reports it


async def send(host: str, port: int, variant: str, image: bytes, timeout: float, extra_headers: Sequence[tuple[str, str]] = ()) -> Answer:
    """POST /detect of ``image`` (with ``extra_headers``) on a connection of its own; timed from
    opening the connection to the whole answer.

    A lean client on purpose (asyncio streams, h11 for the HTTP framing): 640 requests at once from
    httpx cost the client itself seconds of CPU on this machine's two cores, which its timings
    then counted as the server's refusal latency (BENCHMARKS.md 02:42 UTC entry).
    """
    http = h11.Connection(h11.CLIENT)
    head = http.send(h11.Request(method="POST", target=f"/detect?variant={variant}", headers=[
        ("Host", f"{host}:{port}"), ("Content-Type", "image/jpeg"), ("Content-Length", str(len(image))), ("Connection", "close"),
        *extra_headers,
    ]))  # fmt: skip
    request = head + http.send(h11.Data(data=image)) + http.send(h11.EndOfMessage())
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                response, body = None, bytearray()
                while True:
                    event = http.next_event()
                    if event is h11.NEED_DATA:
                        http.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        break
            finally:
                writer.close()
    except (OSError, TimeoutError, h11.ProtocolError) as exc:
        return Answer(0, time.perf_counter() - started, None, type(exc).__name__)
    seconds = time.perf_counter() - started
    if response is None:
        return Answer(0, seconds, None, "closed without an answer")
    headers = {name.decode(): value.decode() for name, value in response.headers}
    document = json.loads(body)
    if response.status_code != 200:
        return Answer(response.status_code, seconds, headers.get("retry-after"), document.get("error"))
    return Answer(200, seconds, None, None, document["timings_ms"]["model"] / 1000.0)


async def burst(
    base_url: str, variant: str, image: bytes, count: int, timeout: float, extra_headers: Sequence[tuple[str, str]] = ()
) -> tuple[list[Answer], float]:
    """``count`` requests at once (with ``extra_headers``), one connection each; (answers, wall seconds)."""
    url = httpx.URL(base_url)
    host, port = url.host, url.port
    started = time.perf_counter()
    answers = await asyncio.gather(*(send(host, port, variant, image, timeout, extra_headers) for _ in range(count)))
    return list(answers), time.perf_counter() - started


def lone(base_url: str, variant: str, image: bytes, timeout: float) -> Answer:
    return asyncio.run(burst(base_url, variant, image, 1, timeout))[0][0]


# --- report -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summary(answers: Sequence[Answer], deadline_s: float) -> dict:
    refusals = [a for a in answers if a.status in REFUSALS]
    retry_after = [int(a.retry_after) for a in refusals if a.retry_after is not None and a.retry_after.isdigit()]
    counts: dict[str, int] = {}
    for a in answers:
        key = str(a.status) if a.status else f"no answer ({a.error})"
        counts[key] = counts.get(key, 0) + 1
    refusal_s = [a.seconds for a in refusals]
    return {
        "counts": dict(sorted(counts.items())),
        "refusal_s": {q: percentile(refusal_s, q) for q in (50, 99, 100)},
        "refusals_fast": sum(s < FAST_REFUSAL_S for s in refusal_s),
        "refusals": len(refusals),
        "refusals_with_retry_after": len(retry_after),
        "retry_after": {"min": min(retry_after, default=None), "median": percentile(retry_after, 50), "max": max(retry_after, default=None)},
        "answered_s": {q: percentile([a.seconds for a in answers if a.status == 200], q) for q in (50, 100)},
        "timeout_s": {q: percentile([a.seconds for a in answers if a.status == 504], q) for q in (50, 100)},
        "longest_s": max((a.seconds for a in answers), default=None),
        "deadline_s": deadline_s,
    }


def entry_text(args, argv, zoo, scale, settings: Settings, calibration, answers, wall_s, after, machine) -> str:
    header = common.entry_header(
        f"overload.py: a burst of {len(answers)} requests at the default settings ({args.variant})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    s = summary(answers, settings.request_timeout_s)
    lone_s = [a.seconds for a in calibration if a.status == 200]
    fmt = common.fmt
    setting = (
        f"- Service: `attnzoo serve` subprocess, device {args.device}, default settings (queue_size {settings.queue_size}, "
        f"max_batch {settings.max_batch}, max_wait_ms {settings.max_wait_ms:g}, request_timeout_s {settings.request_timeout_s:g}); "
        f"test-time scale {scale[0]}×{scale[1]}; weights: {zoo.weights}; image: {args.image or 'synthetic scene 640×427 JPEG'}; "
        f"{len(calibration)} lone requests first (median {fmt(percentile(lone_s, 50), 2)} s), then {len(answers)} at once "
        f"({len(answers) / settings.queue_size:.3g} × the queue), each on its own connection from a lean client on this machine (asyncio streams and h11; "
        f"timed from opening the connection to the whole answer); "
        f"the burst took {wall_s:.1f} s.\n" + common.load_note(machine) + "\n"
    )
    rows = [
        ["answers by status", ", ".join(f"{k}: {v}" for k, v in s["counts"].items())],
        ["refusals (429/503) under 1 s", f"{s['refusals_fast']} of {s['refusals']}"],
        ["refusal latency s (p50 / p99 / max)", " / ".join(fmt(s["refusal_s"][q], 3) for q in (50, 99, 100))],
        ["refusals with Retry-After", f"{s['refusals_with_retry_after']} of {s['refusals']}"],
        ["Retry-After s (min / median / max)", " / ".join(fmt(s["retry_after"][k], 0) for k in ("min", "median", "max"))],
        ["answered (200) latency s (p50 / max)", " / ".join(fmt(s["answered_s"][q], 2) for q in (50, 100))],
        ["504 latency s (p50 / max)", " / ".join(fmt(s["timeout_s"][q], 2) for q in (50, 100))],
        ["longest wait s / deadline s", f"{fmt(s['longest_s'], 2)} / {settings.request_timeout_s:g}"],
        ["request after the burst", f"{after.status} in {after.seconds:.2f} s (lone: {fmt(percentile(lone_s, 50), 2)} s)"],
    ]
    return header + setting + common.markdown_table(["measure", "value"], rows)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_bench.add_service_arguments(parser)
    parser.add_argument("--burst", type=int, default=None, help="requests at once (default: 10 × the default queue size)")
    parser.add_argument("--calibrate", type=int, default=3, help="lone requests before the burst")
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.calibrate < 1 or (args.burst is not None and args.burst < 1):
        parser.error("--calibrate and --burst must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    defaults = Settings.model_construct()  # the defaults the service runs with (its ATTNZOO_* environment is cleared)
    count = args.burst or 10 * defaults.queue_size
    client_timeout = 3 * defaults.request_timeout_s  # far past the deadline: a late answer is measured, not cut
    machine = common.machine_info()
    image = serve_bench.bench_image(args.image)
    with tempfile.TemporaryDirectory(prefix="attnzoo-overload-") as tmp:
        zoo = serve_bench.build_zoo(args, Path(tmp))
        scale = load_registry(zoo.metafile).resolve(args.variant).arch.preprocess.scale
        with serve_bench.serve_process(zoo, args.variant, args.device, {}, Path(tmp) / "serve.log", args.start_timeout) as (service, _):
            base_url = service.base_url
            calibration = [lone(base_url, args.variant, image, client_timeout) for _ in range(args.calibrate)]
            answers, wall_s = asyncio.run(burst(base_url, args.variant, image, count, client_timeout))
            after = lone(base_url, args.variant, image, client_timeout)
            print(f"burst: {summary(answers, defaults.request_timeout_s)['counts']}; after: {after.status} in {after.seconds:.2f} s", file=sys.stderr)
    text = entry_text(args, argv, zoo, scale, defaults, calibration, answers, wall_s, after, machine)
    payload = {"machine": machine, "calibration": [asdict(a) for a in calibration], "burst": [asdict(a) for a in answers], "after": asdict(after)}
    common.publish(text, args, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
