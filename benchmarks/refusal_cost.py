"""Refusal cost: the server's CPU per refused request, refused at its head
(``app/server/head_admission.py``, ``HeadAdmission``) against refused in its route, in the same
run; appends a dated entry to ``BENCHMARKS.md``.

1. ``attnzoo serve`` of one variant at the default settings, except ``ATTNZOO_CORS_ORIGINS`` (a
   request with that ``Origin`` is left to its route: that is the route's refusal measured here)
   and a 300 s deadline (the held requests below must outlast the run).
2. The queue is filled with whole requests (a batch running, ``queue_size`` waiting behind it, at
   the official scale: minutes of work); they hold every place. Every request after that is refused.
3. One unmeasured round, then ``--rounds`` rounds, alternating the two ways: ``--burst`` requests at once, each whole (head
   and image) on its own connection (``overload.send``'s lean client). Measured per way: the CPU
   the server process spent over the burst (every thread, ``/proc/<pid>/task/*/schedstat``,
   nanoseconds) and its event-loop thread alone, each ÷ the requests; the refusal latency from
   opening the connection to the whole answer (p50, max), which the client on the same cores
   also pays for.

Usage: python benchmarks/refusal_cost.py [--variant attn0010] [--burst 640] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import torch  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from app.settings import Settings  # noqa: E402
from benchmarks import common, overload, serve_bench  # noqa: E402

SCRIPT = "benchmarks/refusal_cost.py"
BROWSER_ORIGIN = "http://bench.example"  # allowed by CORS: such a request is refused in its route
WAYS = {"at the head": (), "in the route": (("Origin", BROWSER_ORIGIN),)}


@dataclass(frozen=True)
class Round:
    way: str
    requests: int
    refused: int  # 429s among them
    process_cpu_s: float
    loop_cpu_s: float
    latency_s: list[float]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(every thread's, the main thread's) CPU time of process ``pid`` so far, seconds."""
    total = loop = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
        total += on_cpu
        if task.name == str(pid):
            loop = on_cpu  # uvicorn's event loop runs in the process's main thread
    return total, loop


def hold_every_place(base_url: str, variant: str, image: bytes, settings: Settings) -> list[socket.socket]:
    """Whole requests, one connection each, until the variant's queue holds ``queue_size`` of
    them behind a running batch; their answers are never read."""
    url = httpx.URL(base_url)
    held = []
    for _ in range(settings.queue_size + settings.max_batch):
        connection = socket.create_connection((url.host, url.port), timeout=30)
        connection.sendall(
            f"POST /detect?variant={variant} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(image)}\r\n\r\n".encode() + image
        )
        held.append(connection)
    deadline = time.monotonic() + 120
    while queue_depth(base_url, variant) < settings.queue_size:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the queue of {variant} did not fill up")
        time.sleep(0.2)
    return held


def queue_depth(base_url: str, variant: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "attnzoo_queue_depth" and sample.labels.get("variant") == variant
    )


def measure(base_url: str, pid: int, variant: str, image: bytes, count: int, rounds: int) -> list[Round]:
    """``rounds`` measured rounds of both ways, after one unmeasured (the first burst of each way
    also pays for what runs once: imports, the first connections' buffers)."""
    for headers in WAYS.values():
        asyncio.run(overload.burst(base_url, variant, image, count, 60.0, headers))
    results = []
    for _ in range(rounds):
        for way, headers in WAYS.items():
            before = cpu_seconds(pid)
            answers, _ = asyncio.run(overload.burst(base_url, variant, image, count, 60.0, headers))
            after = cpu_seconds(pid)
            refused = [a for a in answers if a.status == 429]
            results.append(Round(way, count, len(refused), after[0] - before[0], after[1] - before[1], [a.seconds for a in refused]))
    return results


def entry_text(args, argv, zoo, settings: Settings, results: Sequence[Round], machine) -> str:
    header = common.entry_header(
        f"refusal_cost.py: server CPU per refusal, at the request head against in the route ({args.variant})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    setting = (
        f"- Service: `attnzoo serve` subprocess, device {args.device}, default settings (queue_size {settings.queue_size}) but "
        f"ATTNZOO_CORS_ORIGINS={BROWSER_ORIGIN} (requests with that Origin are refused in their route) and a 300 s deadline; "
        f"weights: {zoo.weights}. The queue is held full by {settings.queue_size} whole requests waiting behind a running batch; "
        f"then one unmeasured round and {args.rounds} rounds of {args.burst} requests at once per way, alternating, each whole on its own connection "
        f"(lean asyncio + h11 client on this machine). CPU: the server process over each burst (every thread; the event-loop "
        f"thread alone), ÷ requests.\n" + common.load_note(machine) + "\n"
    )
    rows = []
    for way in WAYS:
        mine = [r for r in results if r.way == way]
        latency = [s for r in mine for s in r.latency_s]
        rows.append([
            way,
            f"{sum(r.refused for r in mine)} of {sum(r.requests for r in mine)}",
            " / ".join(f"{1000 * r.process_cpu_s / r.requests:.3f}" for r in mine),
            " / ".join(f"{1000 * r.loop_cpu_s / r.requests:.3f}" for r in mine),
            f"{common.fmt(statistics.median(latency), 3)} / {common.fmt(max(latency), 3)}" if latency else "-",
            str(sum(s < overload.FAST_REFUSAL_S for s in latency)),
        ])  # fmt: skip
    table = common.markdown_table(
        ["refused", "429s", "server CPU ms per request (each round)", "event-loop CPU ms per request", "latency s (p50 / max)", "under 1 s"],
        rows,
    )
    return header + setting + table


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_bench.add_service_arguments(parser)
    parser.add_argument("--burst", type=int, default=640, help="requests at once per round and way")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measures both ways")
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.burst < 1 or args.rounds < 1:
        parser.error("--burst and --rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    defaults = Settings.model_construct()
    machine = common.machine_info()
    image = serve_bench.bench_image(args.image)
    overrides = {"ATTNZOO_CORS_ORIGINS": BROWSER_ORIGIN, "ATTNZOO_REQUEST_TIMEOUT_S": "300"}
    with tempfile.TemporaryDirectory(prefix="attnzoo-refusal-") as tmp:
        zoo = serve_bench.build_zoo(args, Path(tmp))
        with serve_bench.serve_process(zoo, args.variant, args.device, overrides, Path(tmp) / "serve.log", args.start_timeout) as (service, process):
            held = hold_every_place(service.base_url, args.variant, image, defaults)
            try:
                results = measure(service.base_url, process.pid, args.variant, image, args.burst, args.rounds)
            finally:
                for connection in held:
                    connection.close()
    text = entry_text(args, argv, zoo, defaults, results, machine)
    common.publish(text, args, {"machine": machine, "rounds": [r.__dict__ for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
