"""Goodput under overload: how much of the model's capacity a real ``attnzoo serve`` puts to use
while far more is asked of it than it can do, and how fast it is itself again; appends a dated
entry to ``BENCHMARKS.md``.

1. ``attnzoo serve`` of ``--variants`` (one or two: they share the CPU) with the default
   ``ATTNZOO_*`` settings (queue 64 per variant, batches of 4, 30 s deadline), at ``--scale``
   (default: the official 1333×800), optionally with ``--busy-loops`` processes spinning beside it.
2. Lone requests, one after the other per variant: the lone forward (the server's ``model`` time)
   and so each variant's lone rate, images per second.
3. The overload: ``--burst`` requests at once (default 10 × the queue, split over the variants),
   each from a client that retries after the ``Retry-After`` it is given, until it is answered or
   ``--window`` seconds (default 60) have passed since the burst. Every attempt is recorded.
4. Goodput: the model-seconds of every answer (200), at each variant's lone pace, over the time
   from the burst to the last answer (the admitted work drains after the window): the share of
   the device's time spent on work a client got, against what it could do alone (1.0 = every
   second a lone forward's worth of useful work). Also the images the model forwarded (answered or
   not), from ``/metrics``. The clients run on the same machine at normal priority: the CPU
   their attempts take (and the server's answers to them) counts against the model.
5. Recovery: once the window has passed and the admitted requests are answered, a lone request:
   its latency against a lone one.

Issue 23's targets: goodput at least 0.9 of the lone throughput during the overload, no 504.

Usage: python benchmarks/goodput.py [--variants attn0010 attn1111] [--busy-loops 2] [--scale 1333,800]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import torch  # noqa: E402

from app.settings import Settings  # noqa: E402
from benchmarks import common, overload, serve_bench  # noqa: E402
from model_zoo import load_registry  # noqa: E402

SCRIPT = "benchmarks/goodput.py"


@dataclass(frozen=True)
class Attempt:
    variant: str
    started_s: float  # since the burst
    status: int  # 0: no HTTP answer
    seconds: float
    retry_after: str | None
    model_s: float | None  # the server's model time of a 200


async def send_detect(base_url: str, variant: str, image: bytes, timeout: float, origin: float) -> Attempt:
    """One ``POST /detect`` on a connection of its own (``overload.send``'s lean client)."""
    url = httpx.URL(base_url)
    started = time.perf_counter()
    answer = await overload.send(url.host, url.port or 80, variant, image, timeout)
    return Attempt(variant, started - origin, answer.status, answer.seconds, answer.retry_after, answer.model_s)


async def persistent_client(base_url: str, variant: str, image: bytes, window_s: float, origin: float, timeout: float) -> list[Attempt]:
    """Sends until answered (anything but a refusal), retrying after each Retry-After, within the window."""
    attempts: list[Attempt] = []
    while True:
        attempt = await send_detect(base_url, variant, image, timeout, origin)
        attempts.append(attempt)
        if attempt.status not in overload.REFUSALS:
            return attempts
        wait_s = float(attempt.retry_after) if attempt.retry_after and attempt.retry_after.isdigit() else 1.0
        if time.perf_counter() + wait_s - origin >= window_s:
            return attempts
        await asyncio.sleep(wait_s)


async def overload_window(base_url: str, variants: Sequence[str], image: bytes, burst: int, window_s: float, timeout: float) -> list[Attempt]:
    origin = time.perf_counter()
    clients = [persistent_client(base_url, variants[index % len(variants)], image, window_s, origin, timeout) for index in range(burst)]
    return [attempt for attempts in await asyncio.gather(*clients) for attempt in attempts]


def images_forwarded(base_url: str) -> dict[str, float]:
    """Images each variant's model has forwarded so far (``attnzoo_batch_size`` sum)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {
        sample.labels["variant"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "attnzoo_batch_size_sum"
    }


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def summary(attempts: Sequence[Attempt], lone_model_s: dict[str, float], window_s: float) -> dict:
    answered = [a for a in attempts if a.status == 200]
    in_window = [a for a in answered if a.started_s + a.seconds <= window_s]
    busy_s = max((a.started_s + a.seconds for a in answered), default=window_s)  # from the burst to the last answer
    useful_s = sum(lone_model_s[a.variant] for a in answered)
    refusals = [a for a in attempts if a.status in overload.REFUSALS]
    counts: dict[str, int] = {}
    for attempt in attempts:
        counts[str(attempt.status)] = counts.get(str(attempt.status), 0) + 1
    return {
        "counts": counts,
        "clients_answered": len(answered),
        "answered_in_window": len(in_window),
        "goodput": useful_s / busy_s,
        "last_answer_s": busy_s,
        "refusal_s": {q: overload.percentile([a.seconds for a in refusals], q) for q in (50, 99, 100)},
        "refusals_with_retry_after": sum(1 for a in refusals if a.retry_after),
        "refusals": len(refusals),
        "timeouts_504": counts.get("504", 0),
    }


def entry_text(args, argv, zoo, scale, settings: Settings, lone_model_s, result, forwarded, recovery, machine) -> str:
    header = common.entry_header(
        f"goodput.py: goodput under a {args.burst_count}-request overload ({', '.join(args.variants)}"
        f"{f', {args.busy_loops} busy loops beside it' if args.busy_loops else ''})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    fmt = common.fmt
    setting = (
        f"- Service: `attnzoo serve` subprocess of {', '.join(args.variants)} (one CPU, their forwards take turns), default "
        f"settings (queue_size {settings.queue_size} per variant, max_batch {settings.max_batch}, request_timeout_s "
        f"{settings.request_timeout_s:g}); test-time scale {scale[0]}×{scale[1]}; weights: {zoo.weights}; "
        f"lone forwards (server model time, median of {args.calibrate}): "
        + ", ".join(f"{v} {fmt(s, 2)} s" for v, s in lone_model_s.items())
        + f". Overload: {args.burst_count} clients at once (split over the variants), each retrying after its Retry-After "
        f"until answered or {args.window:g} s have passed; busy loops beside the service: {args.busy_loops}.\n"
        + common.load_note(machine)
        + "\n"
    )
    rows = [
        ["attempts by status", ", ".join(f"{k}: {v}" for k, v in sorted(result["counts"].items()))],
        ["goodput (answers' lone model time / burst to last answer)", f"{fmt(result['goodput'], 3)} (over {fmt(result['last_answer_s'], 1)} s)"],
        ["answers within the window / clients answered", f"{result['answered_in_window']} / {result['clients_answered']}"],
        ["images forwarded during the run (all variants)", fmt(sum(forwarded.values()), 0)],
        ["504s", str(result["timeouts_504"])],
        ["refusal latency s (p50 / p99 / max)", " / ".join(fmt(result["refusal_s"][q], 3) for q in (50, 99, 100))],
        ["refusals with Retry-After", f"{result['refusals_with_retry_after']} of {result['refusals']}"],
        ["request after the overload", f"{recovery.status} in {recovery.seconds:.2f} s"],
    ]
    return header + setting + common.markdown_table(["measure", "value"], rows)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_bench.add_service_arguments(parser)
    parser.add_argument("--variants", nargs="+", default=None, help="variants served together (default: --variant)")
    parser.add_argument("--burst", type=int, default=None, help="clients at once (default: 10 × the queue of each variant)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of overload after the burst")
    parser.add_argument("--calibrate", type=int, default=3, help="lone requests per variant before the overload")
    parser.add_argument("--busy-loops", type=int, default=0, help="processes spinning beside the service")
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.variants = args.variants or [args.variant]
    if args.calibrate < 1 or args.window <= 0 or (args.burst is not None and args.burst < 1):
        parser.error("--calibrate, --window and --burst must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    defaults = Settings.model_construct()  # the defaults the service runs with (its ATTNZOO_* environment is cleared)
    args.burst_count = args.burst or 10 * defaults.queue_size * len(args.variants)
    client_timeout = 3 * defaults.request_timeout_s
    machine = common.machine_info()
    image = serve_bench.bench_image(args.image)
    with tempfile.TemporaryDirectory(prefix="attnzoo-goodput-") as tmp:
        zoo = serve_bench.build_zoo(args, Path(tmp), args.variants)
        scale = load_registry(zoo.metafile).resolve(args.variants[0]).arch.preprocess.scale
        loops = busy_loops(args.busy_loops)
        try:
            with serve_bench.serve_process(zoo, args.variants, args.device, {}, Path(tmp) / "serve.log", args.start_timeout) as (service, _):
                base = service.base_url
                lone_model_s = {}
                for variant in args.variants:
                    models = [asyncio.run(send_detect(base, variant, image, client_timeout, time.perf_counter())).model_s for _ in range(args.calibrate)]
                    lone_model_s[variant] = overload.percentile([m for m in models if m is not None], 50)
                before = images_forwarded(base)
                attempts = asyncio.run(overload_window(base, args.variants, image, args.burst_count, args.window, client_timeout))
                after = images_forwarded(base)
                recovery = asyncio.run(send_detect(base, args.variants[0], image, client_timeout, time.perf_counter()))
        finally:
            for loop in loops:
                loop.kill()
    forwarded = {v: after.get(v, 0.0) - before.get(v, 0.0) for v in args.variants}
    result = summary(attempts, lone_model_s, args.window)
    print(f"goodput {result['goodput']:.3f}; {result['counts']}", file=sys.stderr)
    text = entry_text(args, argv, zoo, scale, defaults, lone_model_s, result, forwarded, recovery, machine)
    payload = {"machine": machine, "lone_model_s": lone_model_s, "attempts": [asdict(a) for a in attempts], "summary": result}
    common.publish(text, args, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
