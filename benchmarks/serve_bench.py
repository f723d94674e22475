"""Latency and throughput of the HTTP service at several client concurrencies, against the
in-process model time of the same variant; appends a dated entry to ``BENCHMARKS.md``.

1. In process: ``Detector.predict(bytes)`` (decode → detections) and ``Detector.infer`` on a
   prepared image (the model alone), batch 1, median of ``--repeats`` after one warm-up.
2. The service: ``attnzoo serve`` in a subprocess (or ``--url`` of one already running), then for
   each concurrency C in ``--concurrency``: C client threads (keep-alive connections) send
   ``--requests`` POST /detect requests of the same image as fast as answers come back.
   Reported: p50/p99 client latency, throughput (answers per second of wall time), mean batch
   size and the server's per-stage timings (``timings_ms``).
3. The front doors (``--protocols``): one image per request, one client, the requests of
   ``/detect``, the Open Inference Protocol over HTTP (tritonclient.http, binary tensor data) and
   over gRPC (tritonclient.grpc) interleaved, ``--requests`` each after one untimed request each.
   Reported: p50/p99 per protocol and the per-request overhead of v2: its p50 minus /detect's.

Weights: the variant's file in ``--weights-dir`` when present (hash checked), else a synthetic
checkpoint (``model_zoo.synth``) written to a temporary zoo; ``--scale`` sets the test-time
resize (default: the variant's own, 1333×800), via an architecture file extending the bundled one.
Client and server share this machine's cores; the entry says so.

Usage: python benchmarks/serve_bench.py [--variant attn0010] [--scale 1333,800] [--requests 32]
       [--concurrency 1,4,16] [--max-batch 4] [--device cpu] [--protocols detect,v2-http,v2-grpc]
       [--url http://127.0.0.1:8000 [--grpc-url 127.0.0.1:8001]]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks import common  # noqa: E402

common.add_repo_to_path()

from model_zoo import (  # noqa: E402
    default_weights_dir,
    load_detector,
    load_registry,
    weights_path_for,
    write_synthetic_checkpoint,
)
from model_zoo.registry import BUNDLED_ARCHITECTURES  # noqa: E402
from model_zoo.weights import sha256_file  # noqa: E402

SCRIPT = "benchmarks/serve_bench.py"
UNREACHABLE = "http://127.0.0.1:9"  # a synthetic file's URL is never fetched
PROTOCOLS = ("detect", "v2-http", "v2-grpc")


@dataclass(frozen=True)
class Service:
    """Where the service answers: its HTTP base URL and its gRPC address (None: no gRPC)."""

    base_url: str
    grpc_url: str | None


@dataclass(frozen=True)
class Zoo:
    metafile: Path
    weights_dir: Path
    weights: str  # "published" or "synthetic (seed N)"


@dataclass
class LevelResult:
    """One concurrency level: client latencies (s) and what the server reported."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int | str, int] = field(default_factory=dict)  # HTTP status or gRPC code name → count
    batch_sizes: list[int] = field(default_factory=list)
    server_ms: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_s, q) * 1000.0) if self.latencies_s else None

    def throughput(self) -> float | None:
        return self.ok / self.wall_s if self.wall_s > 0 else None

    def mean(self, values: Sequence[float]) -> float | None:
        return float(np.mean(values)) if values else None


# --- the zoo the service loads ---------------------------------------------------------------------


def build_zoo(args: argparse.Namespace, work_dir: Path, variants: Sequence[str] | None = None) -> Zoo:
    """A metafile for ``--scale`` whose entries for ``variants`` (default: ``--variant``) point at
    real weights, or synthetic ones where the real file is missing (all in one weights dir)."""
    registry = load_registry(args.metafile)
    raw = yaml.safe_load(registry.source.read_text(encoding="utf-8"))
    entries = [registry.resolve(variant) for variant in (variants or [args.variant])]
    reals = [weights_path_for(entry, args.weights_dir or default_weights_dir()) for entry in entries]
    all_real = all(real.is_file() for real in reals)
    weights_dir = reals[0].parent if all_real else work_dir / "weights"
    models = []
    for entry, real in zip(entries, reals):
        model = next(m for m in raw["Models"] if m["Name"] == entry.name)
        base = BUNDLED_ARCHITECTURES / f"{model['Config']}.yml"
        if "/" in model["Config"] or model["Config"].endswith((".yml", ".yaml")):
            base = (registry.source.parent / model["Config"]).resolve()
            model["Config"] = str(base)  # the new metafile lives elsewhere
        if args.scale is not None:
            arch_file = work_dir / f"{entry.alias}-scaled.yml"
            arch_file.write_text(yaml.safe_dump({"_base_": str(base), "preprocess": {"scale": list(args.scale)}}), encoding="utf-8")
            model["Config"] = arch_file.name
        if not all_real:
            staging = write_synthetic_checkpoint(entry, weights_dir / f"{entry.alias}.partial", seed=args.seed)
            filename = f"{entry.alias}-synthetic-{sha256_file(staging)[:8]}.pth"
            staging.rename(weights_dir / filename)
            model["Weights"] = f"{UNREACHABLE}/{filename}"
        models.append(model)
    raw["Models"] = models
    if all_real:
        weights = "published (hash-checked files)"
    else:
        weights = f"synthetic (model_zoo.synth, seed {args.seed}; {', '.join(r.name for r in reals if not r.is_file())} not found)"
    metafile = work_dir / "metafile.yml"
    metafile.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return Zoo(metafile, weights_dir, weights)


# --- in-process model time -------------------------------------------------------------------------


def in_process(zoo: Zoo, variant: str, image: bytes, device: str, repeats: int) -> dict[str, float]:
    """Median seconds of ``predict(bytes)`` and of ``infer([prepared])`` in this process, batch 1."""
    detector = load_detector(variant, registry=load_registry(zoo.metafile), weights_dir=zoo.weights_dir, device=device)
    sync = common.cuda_sync(device if device != "auto" else str(detector.device))
    prepared = detector.prepare(image)
    end_to_end = common.time_call(lambda: detector.predict(image), repeats=repeats, warmup=1, sync=sync)
    model = common.time_call(lambda: detector.infer([prepared]), repeats=repeats, warmup=0, sync=sync)
    return {"end_to_end_s": common.median(end_to_end), "model_s": common.median(model), "device": str(detector.device)}


# --- the service -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(args: argparse.Namespace, zoo: Zoo, log_path: Path) -> Iterator[Service]:
    """``attnzoo serve`` in a subprocess with this benchmark's settings, ready; yields where it answers."""
    settings = dict(
        ATTNZOO_MAX_BATCH=str(args.max_batch),
        ATTNZOO_MAX_WAIT_MS=str(args.max_wait_ms),
        ATTNZOO_QUEUE_SIZE=str(max(64, 2 * max(args.concurrency))),
        ATTNZOO_REQUEST_TIMEOUT_S="600",
    )
    with serve_process(zoo, args.variant, args.device, settings, log_path, args.start_timeout) as (service, _):
        yield service


ATTNZOO = (sys.executable, "-m", "model_zoo")


@contextmanager
def serve_process(
    zoo: Zoo,
    variant: str | Sequence[str],
    device: str,
    settings: Mapping[str, str],
    log_path: Path,
    start_timeout: float,
    attnzoo: Sequence[str] = ATTNZOO,
) -> Iterator[tuple[Service, subprocess.Popen]]:
    """``attnzoo serve`` of ``variant`` (or several) in a subprocess whose ``ATTNZOO_*`` environment is
    exactly ``settings`` (the rest: defaults), ready; yields (where it answers, process). SIGINT at the end.

    ``attnzoo``: the command that takes ``serve`` and its options (another entry point to compare).
    """
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNZOO_")}
    env.update(settings)
    variants = [variant] if isinstance(variant, str) else list(variant)
    command = [*attnzoo, "serve", "--port", str(port), "--grpc-port", str(grpc_port), "--variants", *variants,
               "--device", device, "--metafile", str(zoo.metafile), "--weights-dir", str(zoo.weights_dir),
               "--log-level", "warning"]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, process, log_path, timeout=start_timeout)
            yield Service(base_url, f"127.0.0.1:{grpc_port}"), process
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_ready(base_url: str, process: subprocess.Popen | None, log_path: Path | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise RuntimeError(f"the service exited with {process.returncode}:\n{tail}")
        try:
            ready = httpx.get(f"{base_url}/readyz", timeout=5)
            if ready.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service at {base_url} was not ready after {timeout:.0f} s")
        time.sleep(0.25)


def run_level(base_url: str, variant: str, image: bytes, concurrency: int, requests: int) -> LevelResult:
    """``requests`` POST /detect from ``concurrency`` threads (after one untimed request each)."""
    result = LevelResult(concurrency)
    lock = threading.Lock()
    remaining = [requests]

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=600) as http:
            send = lambda: http.post("/detect", params={"variant": variant}, content=image, headers={"Content-Type": "image/jpeg"})  # noqa: E731
            send()  # warm the connection and the path
            barrier.wait()
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                response = send()
                elapsed = time.perf_counter() - started
                with lock:
                    result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        body = response.json()
                        result.latencies_s.append(elapsed)
                        result.batch_sizes.append(body["batch_size"])
                        for stage, ms in body["timings_ms"].items():
                            result.server_ms.setdefault(stage, []).append(ms)

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - started
    return result


def protocol_senders(
    clients: ExitStack, service: Service, variant: str, image: bytes, protocols: Sequence[str]
) -> dict[str, Callable[[], int | str]]:
    """One request of each protocol as a call returning its status (200, an HTTP status, or a
    gRPC status code name); tritonclient (the `test` extra) for the v2 ones. The clients close
    with ``clients``."""
    senders: dict[str, Callable[[], int | str]] = {}
    if "detect" in protocols:
        http = clients.enter_context(httpx.Client(base_url=service.base_url, timeout=600))
        senders["detect"] = lambda: http.post(
            "/detect", params={"variant": variant}, content=image, headers={"Content-Type": "image/jpeg"}
        ).status_code
    if {"v2-http", "v2-grpc"} & set(protocols):
        import tritonclient.grpc as grpcclient  # noqa: PLC0415 - only when a v2 protocol is measured
        import tritonclient.http as httpclient  # noqa: PLC0415
        from tritonclient.utils import InferenceServerException  # noqa: PLC0415

        def infer(client, module) -> int | str:
            tensor = module.InferInput("IMAGE", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([image], dtype=np.object_))  # binary data by default over HTTP
            try:
                client.infer(variant, [tensor])
            except InferenceServerException as exc:
                return str(exc.status()).removeprefix("StatusCode.")
            return 200

    if "v2-http" in protocols:
        triton_http = httpclient.InferenceServerClient(service.base_url.removeprefix("http://"), network_timeout=600.0)
        clients.callback(triton_http.close)
        senders["v2-http"] = lambda: infer(triton_http, httpclient)
    if "v2-grpc" in protocols and service.grpc_url is not None:
        triton_grpc = grpcclient.InferenceServerClient(service.grpc_url)
        clients.callback(triton_grpc.close)
        senders["v2-grpc"] = lambda: infer(triton_grpc, grpcclient)
    return senders


def run_protocols(service: Service, variant: str, image: bytes, protocols: Sequence[str], requests: int) -> dict[str, LevelResult]:
    """``requests`` requests per protocol from one client, interleaved in a rotating order (a
    change of load affects every protocol alike), after one untimed request each."""
    with ExitStack() as clients:
        senders = protocol_senders(clients, service, variant, image, protocols)
        results = {name: LevelResult(1) for name in senders}
        for send in senders.values():
            send()
        names = list(senders)
        started = time.perf_counter()
        for index in range(requests):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                begun = time.perf_counter()
                status = senders[name]()
                elapsed = time.perf_counter() - begun
                result = results[name]
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.latencies_s.append(elapsed)
        for result in results.values():
            result.wall_s = time.perf_counter() - started
    return results


# --- report ----------------------------------------------------------------------------------------


def protocol_table(protocols: dict[str, LevelResult], skipped: Sequence[str]) -> str:
    """The front doors side by side, and v2's per-request overhead over /detect (p50 difference)."""
    detect_p50 = protocols["detect"].percentile_ms(50) if "detect" in protocols else None
    rows = []
    for name, result in protocols.items():
        errors = {code: n for code, n in result.statuses.items() if code != 200}
        p50 = result.percentile_ms(50)
        overhead = p50 - detect_p50 if p50 is not None and detect_p50 is not None and name != "detect" else None
        rows.append([
            name, result.ok, ", ".join(f"{c}×{n}" for c, n in sorted(errors.items(), key=str)) or "0",
            common.fmt(p50, 1), common.fmt(result.percentile_ms(99), 1), common.fmt(overhead, 1) if overhead is not None else "",
        ])  # fmt: skip
    table = common.markdown_table(["protocol", "answers", "errors", "p50 ms", "p99 ms", "p50 − /detect p50 ms"], rows)
    note = f" Not measured: {', '.join(skipped)} (no gRPC address: give --grpc-url with --url)." if skipped else ""
    return (
        "\nFront doors, one image per request from one client, the protocols' requests interleaved "
        "(detect: POST /detect; v2-http: tritonclient.http with binary tensor data; v2-grpc: tritonclient.grpc)."
        f"{note}\n\n{table}"
    )


def entry_text(args, argv, zoo, local, levels: Sequence[LevelResult], machine, scale, loadavg_after, protocols=None, skipped=()) -> str:
    header = common.entry_header(
        f"serve_bench.py: HTTP service latency and throughput ({args.variant})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    service = (
        f"`attnzoo serve` subprocess, device {args.device}, max_batch {args.max_batch}, max_wait_ms {args.max_wait_ms}"
        if args.url is None
        else f"already running at {args.url} (its own settings)"
    )
    settings = (
        f"- Service: {service}; test-time scale {f'{scale[0]}×{scale[1]}' if scale else 'as served'}; "
        f"weights: {zoo.weights if zoo else 'as served'}; image: {args.image or 'synthetic scene 640×427 JPEG'}; "
        f"max(--requests, concurrency) timed requests per level after one untimed request per client "
        f"(p99 of so few samples is close to the maximum). The clients run on the same machine as the server.\n"
        f"- Load average: {machine['loadavg']} at the start, {loadavg_after} at the end.\n\n"
    )
    rows = []
    for level in levels:
        errors = {code: n for code, n in level.statuses.items() if code != 200}
        rows.append([
            level.concurrency, level.ok, ", ".join(f"{c}×{n}" for c, n in sorted(errors.items())) or "0",
            common.fmt(level.percentile_ms(50), 0), common.fmt(level.percentile_ms(99), 0),
            common.fmt(level.throughput(), 2), common.fmt(level.mean(level.batch_sizes), 2),
            *(common.fmt(level.mean(level.server_ms.get(stage, [])), 0) for stage in ("queue", "preprocess", "model")),
        ])  # fmt: skip
    table = common.markdown_table(
        ["concurrency", "answers", "errors", "p50 ms", "p99 ms", "throughput img/s", "mean batch",
         "server queue ms", "server preprocess ms", "server model ms"],
        rows,
    )  # fmt: skip
    lines = [header, settings, table]
    if protocols:
        lines.append(protocol_table(protocols, skipped))
    if local:
        e2e_ms, model_ms = local["end_to_end_s"] * 1000, local["model_s"] * 1000
        lines.append(
            f"\nIn process ({local['device']}, batch 1, median of {args.repeats}): `Detector.predict(bytes)` "
            f"{e2e_ms:.0f} ms, `Detector.infer` (model alone) {model_ms:.0f} ms → {1000 / model_ms:.2f} img/s."
        )
        if levels and levels[0].percentile_ms(50) is not None:
            overhead = levels[0].percentile_ms(50) - e2e_ms
            lines.append(f" Service p50 at concurrency {levels[0].concurrency} minus in-process end to end: {overhead:+.0f} ms.")
        lines.append("\n")
    return "".join(lines)


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every benchmark that starts ``attnzoo serve`` on a zoo of its own."""
    parser.add_argument("--variant", default="attn0010")
    parser.add_argument("--scale", type=common.parse_scale, default=None, help="test-time LONG,SHORT (default: the variant's)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--image", type=Path, default=None, help="image file (default: a synthetic 640×427 scene)")
    parser.add_argument("--metafile", default=None)
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic weights")
    parser.add_argument("--start-timeout", type=float, default=600.0)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_service_arguments(parser)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client concurrencies")
    parser.add_argument("--requests", type=int, default=32, help="timed requests per concurrency level")
    parser.add_argument("--repeats", type=int, default=5, help="in-process timing repeats")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument(
        "--url", default=None, help="measure a service already running there (in-process timing only with --metafile and --weights-dir)"
    )
    parser.add_argument("--grpc-url", default=None, help="with --url: the service's gRPC address, HOST:PORT (for v2-grpc)")
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help=f"front doors to compare, comma-separated from {', '.join(PROTOCOLS)}; empty: none"
    )
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.concurrency or min(args.concurrency) < 1 or args.requests < 1:
        parser.error("--concurrency needs positive integers and --requests at least 1")
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if set(args.protocols) - set(PROTOCOLS):
        parser.error(f"--protocols: unknown {sorted(set(args.protocols) - set(PROTOCOLS))}; choose from {', '.join(PROTOCOLS)}")
    return args


def bench_image(path: Path | None) -> bytes:
    if path is not None:
        return path.read_bytes()
    import cv2

    from model_zoo.synth import calibration_image

    ok, data = cv2.imencode(".jpg", calibration_image(0))
    return data.tobytes()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    machine = common.machine_info()
    image = bench_image(args.image)
    levels: list[LevelResult] = []
    protocols: dict[str, LevelResult] = {}
    with tempfile.TemporaryDirectory(prefix="attnzoo-serve-bench-") as tmp:
        work_dir = Path(tmp)
        if args.url is None:
            zoo: Zoo | None = build_zoo(args, work_dir)
        elif args.metafile and args.weights_dir:  # what the running service loaded, for the in-process side
            zoo = Zoo(Path(args.metafile), Path(args.weights_dir), f"as served, from {args.weights_dir}")
        else:
            zoo = None
        scale = load_registry(zoo.metafile).resolve(args.variant).arch.preprocess.scale if zoo else None
        local = in_process(zoo, args.variant, image, args.device, args.repeats) if zoo else None
        running = served(args, zoo, work_dir / "serve.log") if args.url is None else _existing(args, args.start_timeout)
        with running as service:
            for concurrency in args.concurrency:
                levels.append(run_level(service.base_url, args.variant, image, concurrency, max(args.requests, concurrency)))
                print(f"concurrency {concurrency}: {levels[-1].ok} answers in {levels[-1].wall_s:.1f} s", file=sys.stderr)
            if args.protocols:
                protocols = run_protocols(service, args.variant, image, args.protocols, args.requests)
                print(f"protocols: {', '.join(protocols)} ({args.requests} requests each)", file=sys.stderr)
    skipped = [name for name in args.protocols if name not in protocols]
    machine_after = common.machine_info()
    text = entry_text(args, argv, zoo, local, levels, machine, scale, machine_after["loadavg"], protocols, skipped)
    payload = {
        "machine": machine, "in_process": local, "levels": [asdict(level) for level in levels],
        "protocols": {name: asdict(result) for name, result in protocols.items()},
    }  # fmt: skip
    common.publish(text, args, payload)
    return 0


@contextmanager
def _existing(args: argparse.Namespace, timeout: float) -> Iterator[Service]:
    wait_ready(args.url.rstrip("/"), None, None, timeout)
    yield Service(args.url.rstrip("/"), args.grpc_url)


if __name__ == "__main__":
    sys.exit(main())
