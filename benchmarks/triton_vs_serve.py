"""The same engine under NVIDIA Triton and under ``attnzoo serve``, in one run: latency and
throughput of each at several client concurrencies, and what each costs over the bare engine;
appends a dated entry to ``BENCHMARKS.md``.

1. In process: ``Detector.predict(bytes)`` (decode → detections, the engine end to end) and
   ``Detector.infer`` on a prepared image (the forward alone), batch 1 (``serve_bench.in_process``).
2. The servers, on the same zoo (``serve_bench.build_zoo``: the variant at ``--scale``, default its
   own 1333×800, real or synthetic weights) and the same settings (``--max-batch``; the queue delay
   and the CPU kernels at the service's defaults):
   ``attnzoo serve`` in a subprocess, and the PyPI wheel's ``tritonserver`` serving the repository
   ``attnzoo triton-repo`` writes of the zoo (``scripts/setup-triton-tools`` installs it).
3. For each concurrency C in ``--concurrency``: C client threads, each with its own tritonclient
   (``--protocol`` http with binary tensor data, or grpc), send ``--requests`` Open Inference
   Protocol requests of one image in all, after one untimed request each; the two servers take
   turns level by level (the order rotates), so a change of load affects both alike. Reported per
   server and level: p50/p99 client latency, images per second of wall time, the mean batch the
   server formed (Triton's statistics; attnzoo serve's ``attnzoo_batch_size`` histogram), and the
   p50 minus the in-process end-to-end time: what the server adds to the engine.

Both servers run the engine in a process of their own with torch's default threads, on the cores
the clients share. Timings depend on the load; the entry records it.

Usage: python benchmarks/triton_vs_serve.py [--variant attn0010] [--scale 1333,800] [--requests 32]
       [--concurrency 1,4] [--max-batch 4] [--device cpu] [--protocol http|grpc] [--image PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common, serve_bench  # noqa: E402
from benchmarks.serve_bench import LevelResult, Zoo  # noqa: E402

common.add_repo_to_path()

from model_zoo import load_registry  # noqa: E402
from tests.triton_tools import ToolUnavailable, TritonServer, find_tritonserver  # noqa: E402

SCRIPT = "benchmarks/triton_vs_serve.py"
SERVERS = ("attnzoo serve", "triton")
Send = Callable[[], None]


# --- the servers ------------------------------------------------------------------------------------


@contextmanager
def attnzoo_serve(args: argparse.Namespace, zoo: Zoo, work_dir: Path) -> Iterator[dict[str, Any]]:
    """``attnzoo serve`` of the variant; yields its v2 addresses and image shape."""
    settings = {"ATTNZOO_MAX_BATCH": str(args.max_batch), "ATTNZOO_QUEUE_SIZE": str(max(64, 2 * max(args.concurrency))), "ATTNZOO_REQUEST_TIMEOUT_S": "600"}
    with serve_bench.serve_process(zoo, args.variant, args.device, settings, work_dir / "serve.log", args.start_timeout) as (service, _):
        yield {"http": service.base_url.removeprefix("http://"), "grpc": service.grpc_url, "rows": False, "metrics": service.base_url}


@contextmanager
def triton(args: argparse.Namespace, zoo: Zoo, work_dir: Path) -> Iterator[dict[str, Any]]:
    """tritonserver on the repository ``attnzoo triton-repo`` writes of the zoo's variant."""
    repository = work_dir / "triton-repository"
    device = "gpu" if args.device == "cuda" else "cpu"
    written = subprocess.run(
        [sys.executable, "-m", "model_zoo", "triton-repo", "--metafile", str(zoo.metafile), "--weights-dir", str(zoo.weights_dir),
         "--out", str(repository), "--variants", args.variant, "--device", device, "--max-batch-size", str(args.max_batch),
         "--weights", "link"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if written.returncode != 0:
        raise RuntimeError(f"attnzoo triton-repo failed: {written.stderr.strip()}")
    with TritonServer(find_tritonserver(), repository, work_dir / "tritonserver.log") as server:
        yield {"http": server.http_url, "grpc": server.grpc_url, "rows": True, "metrics": None}


# --- load --------------------------------------------------------------------------------------------


def sender(address: dict[str, Any], protocol: str, variant: str, image: bytes) -> tuple[Send, Callable[[], None]]:
    """One v2 request of ``image`` as a call (raises on an error answer), and the client's close."""
    import tritonclient.grpc as grpcclient  # noqa: PLC0415 - the test extra
    import tritonclient.http as httpclient  # noqa: PLC0415

    module = httpclient if protocol == "http" else grpcclient
    array = np.array([image], dtype=np.object_)
    array = array.reshape(1, 1) if address["rows"] else array  # [B, 1] for Triton's batching model, [B] for attnzoo serve
    if module is httpclient:
        client = httpclient.InferenceServerClient(address["http"], network_timeout=600.0, connection_timeout=600.0)
    else:
        client = grpcclient.InferenceServerClient(address["grpc"])

    def send() -> None:
        tensor = module.InferInput("IMAGE", list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        client.infer(variant, [tensor])

    return send, client.close


def run_level(address: dict[str, Any], protocol: str, variant: str, image: bytes, concurrency: int, requests: int) -> LevelResult:
    """``requests`` requests from ``concurrency`` threads, each with its own client."""
    result = LevelResult(concurrency)
    lock = threading.Lock()
    remaining = [requests]
    barrier = threading.Barrier(concurrency + 1)

    def worker() -> None:
        send, close = sender(address, protocol, variant, image)
        try:
            send()  # connect, and one answer before the clock starts
            barrier.wait()
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                try:
                    send()
                    status: int | str = 200
                except Exception as exc:  # noqa: BLE001 - counted per kind, the level goes on
                    status = type(exc).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status == 200:
                        result.latencies_s.append(elapsed)
        finally:
            close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    result.wall_s = time.perf_counter() - started
    return result


def batches_so_far(server: str, address: dict[str, Any], variant: str) -> tuple[float, float]:
    """(images, model calls) the server has counted for ``variant`` so far."""
    if server == "triton":
        (stats,) = httpx.get(f"http://{address['http']}/v2/models/{variant}/stats", timeout=30).json()["model_stats"]
        return float(stats["inference_count"]), float(stats["execution_count"])
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(httpx.get(f"{address['metrics']}/metrics", timeout=30).text)
        for sample in family.samples
        if sample.labels.get("variant") == variant and sample.name in ("attnzoo_batch_size_sum", "attnzoo_batch_size_count")
    }
    return samples.get("attnzoo_batch_size_sum", 0.0), samples.get("attnzoo_batch_size_count", 0.0)


# --- report ------------------------------------------------------------------------------------------


def entry_text(args, argv, zoo: Zoo, local: dict[str, Any], results: dict[str, list[dict[str, Any]]], machine, scale, loadavg_after) -> str:
    header = common.entry_header(
        f"triton_vs_serve.py: the engine under Triton and under attnzoo serve ({args.variant})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    end_to_end_ms, model_ms = local["end_to_end_s"] * 1000, local["model_s"] * 1000
    settings = (
        f"- Servers: `attnzoo serve` (subprocess) and tritonserver 2.51 (the nvidia-pytriton 0.7.0 wheel) on the repository "
        f"`attnzoo triton-repo` wrote, Python backend; device {args.device}; max batch {args.max_batch} on both, queue delay "
        f"and CPU kernels at the service's defaults; each in a process of its own with torch's default threads.\n"
        f"- Load: {args.protocol} v2 requests of one image from C client threads (a client each), {args.requests} timed "
        f"requests per level after one untimed request per client; the servers take turns level by level. Test-time scale "
        f"{scale[0]}×{scale[1]}; weights: {zoo.weights}; image: {args.image or 'synthetic scene 640×427 JPEG'}. The clients "
        f"share the machine with the servers.\n"
        f"- Bare engine in this process ({local['device']}, batch 1, median of {args.repeats}): `Detector.predict(bytes)` "
        f"{end_to_end_ms:.0f} ms end to end, `Detector.infer` (the forward alone) {model_ms:.0f} ms.\n"
        f"- Load average: {machine['loadavg']} at the start, {loadavg_after} at the end.\n\n"
    )
    rows = []
    for concurrency_index, concurrency in enumerate(args.concurrency):
        for server in SERVERS:
            level = results[server][concurrency_index]
            errors = {code: n for code, n in level["statuses"].items() if code != 200}
            p50 = float(np.percentile(level["latencies_s"], 50) * 1000) if level["latencies_s"] else None
            rows.append([
                server, concurrency, level["ok"], ", ".join(f"{c}×{n}" for c, n in sorted(errors.items(), key=str)) or "0",
                common.fmt(p50, 0), common.fmt(float(np.percentile(level["latencies_s"], 99) * 1000) if level["latencies_s"] else None, 0),
                common.fmt(level["ok"] / level["wall_s"] if level["wall_s"] else None, 2), common.fmt(level["mean_batch"], 2),
                common.fmt(p50 - end_to_end_ms if p50 is not None else None, 0),
            ])  # fmt: skip
    table = common.markdown_table(
        ["server", "concurrency", "answers", "errors", "p50 ms", "p99 ms", "img/s", "mean batch", "p50 − engine end to end ms"], rows
    )
    return header + settings + table


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_bench.add_service_arguments(parser)
    parser.add_argument("--max-batch", type=int, default=4, help="largest batch of both servers")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated client concurrencies")
    parser.add_argument("--requests", type=int, default=32, help="timed requests per server and concurrency level")
    parser.add_argument("--repeats", type=int, default=5, help="in-process timing repeats")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http", help="the clients' transport (tritonclient)")
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.concurrency or min(args.concurrency) < 1 or args.requests < 1:
        parser.error("--concurrency needs positive integers and --requests at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        find_tritonserver()  # before any work
    except ToolUnavailable as exc:
        print(f"{SCRIPT}: {exc}", file=sys.stderr)
        return 2
    machine = common.machine_info()
    image = serve_bench.bench_image(args.image)
    results: dict[str, list[dict[str, Any]]] = {server: [] for server in SERVERS}
    with tempfile.TemporaryDirectory(prefix="attnzoo-triton-vs-serve-") as tmp:
        work_dir = Path(tmp)
        zoo = serve_bench.build_zoo(args, work_dir)
        scale = load_registry(zoo.metafile).resolve(args.variant).arch.preprocess.scale
        local = serve_bench.in_process(zoo, args.variant, image, args.device, args.repeats)
        with attnzoo_serve(args, zoo, work_dir) as ours, triton(args, zoo, work_dir) as theirs:
            addresses = {"attnzoo serve": ours, "triton": theirs}
            for index, concurrency in enumerate(args.concurrency):
                for server in SERVERS[index % 2 :] + SERVERS[: index % 2]:
                    before = batches_so_far(server, addresses[server], args.variant)
                    level = run_level(addresses[server], args.protocol, args.variant, image, concurrency, max(args.requests, concurrency))
                    images, calls = (after - then for after, then in zip(batches_so_far(server, addresses[server], args.variant), before))
                    results[server].append({**asdict(level), "ok": level.ok, "mean_batch": images / calls if calls else None})
                    print(f"{server}, concurrency {concurrency}: {level.ok} answers in {level.wall_s:.1f} s", file=sys.stderr)
    machine_after = common.machine_info()
    text = entry_text(args, argv, zoo, local, results, machine, scale, machine_after["loadavg"])
    common.publish(text, args, {"machine": machine, "in_process": local, "levels": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
