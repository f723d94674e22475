"""Triton's own load tool, ``perf_analyzer``, unchanged, against ``attnzoo serve``: throughput and
latency percentiles at several concurrencies over HTTP and gRPC, with the server's breakdown that
perf_analyzer reads from the statistics extension (queue, compute input / infer / output); appends
a dated entry to ``BENCHMARKS.md``.

1. ``attnzoo serve`` of ``--variant`` in a subprocess (``serve_bench.build_zoo``: the variant at
   ``--scale``, default its own 1333×800, with its real weights when the weights dir has them, else
   synthetic ones).
2. For each protocol of ``--protocols`` and concurrency C of ``--concurrency``: one perf_analyzer
   run (the tritonclient 2.48.0 wheel's binary, as ``scripts/setup-triton-tools`` installs it under
   ``.triton/``) of ``--requests`` requests of one image (``-b 1``; IMAGE [1, 1], the image's bytes as
   ``--input-data``: ``tests/triton_tools.write_image_input_data``), C in flight; its CSV report
   gives the row. perf_analyzer's latencies are client-side, in its own process, on the machine's
   cores beside the server.

The image (``--image``, default: a synthetic scene as a 1333×800 JPEG, the model's full test size)
is decoded and resized by the server for each request, as a client's upload would be.

Usage: python benchmarks/perf_analyzer.py [--variant attn0010] [--scale 1333,800] [--requests 32]
       [--concurrency 1,2,4] [--protocols http,grpc] [--max-batch 4] [--device cpu] [--image PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import torch  # noqa: E402

from benchmarks import common, serve_bench  # noqa: E402

common.add_repo_to_path()

from model_zoo import load_registry  # noqa: E402
from model_zoo.synth import calibration_image  # noqa: E402
from tests.triton_tools import ToolUnavailable, find_perf_analyzer, run_perf_analyzer, write_image_input_data  # noqa: E402

SCRIPT = "benchmarks/perf_analyzer.py"
PROTOCOLS = ("http", "grpc")
FULL_SIZE = (1333, 800)  # width, height of the default image
# perf_analyzer's CSV columns (microseconds) → the entry's column titles (milliseconds)
COLUMNS = {
    "p50 latency": "p50 ms", "p90 latency": "p90 ms", "p99 latency": "p99 ms", "Server Queue": "server queue ms",
    "Server Compute Input": "compute input ms", "Server Compute Infer": "compute infer ms", "Server Compute Output": "compute output ms",
}  # fmt: skip


def full_size_image() -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.resize(calibration_image(0), FULL_SIZE, interpolation=cv2.INTER_CUBIC))
    assert ok
    return data.tobytes()


def measure(args: argparse.Namespace, service: serve_bench.Service, input_data: Path, work_dir: Path) -> list[dict[str, Any]]:
    """One perf_analyzer run per protocol and concurrency; their CSV rows (and how each run ended)."""
    install = find_perf_analyzer()
    rows = []
    for protocol in args.protocols:
        url = service.base_url.removeprefix("http://") if protocol == "http" else service.grpc_url
        for concurrency in args.concurrency:
            report = work_dir / f"{protocol}-{concurrency}.csv"
            run = run_perf_analyzer(
                install, url=url, protocol=protocol, model=args.variant, input_data=input_data, concurrency=concurrency,
                request_count=max(args.requests, concurrency), report=report, timeout=args.timeout,
            )  # fmt: skip
            if run.returncode != 0 or len(run.rows) != 1:
                raise RuntimeError(f"perf_analyzer ({protocol}, concurrency {concurrency}) exited with {run.returncode}:\n{run.output[-3000:]}")
            print(f"{protocol}, concurrency {concurrency}: {float(run.rows[0]['Inferences/Second']):.2f} infer/s", file=sys.stderr)
            rows.append({"protocol": protocol, "concurrency": concurrency, "csv": run.rows[0]})
    return rows


def entry_text(args: argparse.Namespace, argv: Sequence[str], zoo: serve_bench.Zoo, image: bytes, rows, machine, scale) -> str:
    header = common.entry_header(
        f"perf_analyzer.py: Triton's perf_analyzer against attnzoo serve ({args.variant})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    settings = (
        f"- Server: `attnzoo serve` (subprocess, torch's default threads), device {args.device}, max batch {args.max_batch}, "
        f"the other settings at their defaults; test-time scale {scale[0]}×{scale[1]}; weights: {zoo.weights}.\n"
        f"- Client: perf_analyzer 2.48.0 (the tritonclient 2.48.0 wheel's binary), `--request-count {args.requests}` per run, "
        f"one image per request (IMAGE [1, 1], {len(image)} bytes: {args.image or f'synthetic scene, {FULL_SIZE[0]}×{FULL_SIZE[1]} JPEG'}); "
        "latencies are perf_analyzer's (client side), the server columns its reading of the statistics extension "
        "(per request: queue, compute input = decode and resize, compute infer = the forward of its batch, compute output = the filter).\n"
        + common.load_note(machine)
        + "\n"
    )
    table = common.markdown_table(
        ["protocol", "concurrency", "infer/s", *COLUMNS.values()],
        [
            [row["protocol"], row["concurrency"], common.fmt(float(row["csv"]["Inferences/Second"]), 2),
             *(common.fmt(float(row["csv"][column]) / 1000.0, 1) for column in COLUMNS)]
            for row in rows
        ],
    )  # fmt: skip
    return header + settings + table


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_bench.add_service_arguments(parser)
    parser.add_argument("--max-batch", type=int, default=4, help="ATTNZOO_MAX_BATCH of the server")
    parser.add_argument("--concurrency", default="1,2,4", help="comma-separated concurrencies (requests in flight)")
    parser.add_argument("--requests", type=int, default=32, help="requests per perf_analyzer run")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated, from http, grpc")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one perf_analyzer run may take")
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not args.concurrency or min(args.concurrency) < 1 or args.requests < 1:
        parser.error("--concurrency needs positive integers and --requests at least 1")
    if not args.protocols or set(args.protocols) - set(PROTOCOLS):
        parser.error(f"--protocols: choose from {', '.join(PROTOCOLS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        find_perf_analyzer()  # before any work
    except ToolUnavailable as exc:
        print(f"{SCRIPT}: {exc}", file=sys.stderr)
        return 2
    machine = common.machine_info()
    image = args.image.read_bytes() if args.image is not None else full_size_image()
    with tempfile.TemporaryDirectory(prefix="attnzoo-perf-analyzer-") as tmp:
        work_dir = Path(tmp)
        zoo = serve_bench.build_zoo(args, work_dir)
        scale = load_registry(zoo.metafile).resolve(args.variant).arch.preprocess.scale
        input_data = write_image_input_data(work_dir / "input.json", [image])
        settings = {
            "ATTNZOO_MAX_BATCH": str(args.max_batch),
            "ATTNZOO_QUEUE_SIZE": str(max(64, 2 * max(args.concurrency))),
            "ATTNZOO_REQUEST_TIMEOUT_S": "600",
        }
        with serve_bench.serve_process(zoo, args.variant, args.device, settings, work_dir / "serve.log", args.start_timeout) as (service, _):
            rows = measure(args, service, input_data, work_dir)
    text = entry_text(args, argv, zoo, image, rows, machine, scale)
    common.publish(text, args, {"machine": machine, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
