"""The service's HTTP protocol (``app.http_protocol.LimitedHTTPProtocol``) against uvicorn's two:
throughput, and what a flood of huge headers leaves in the server; appends a dated entry to
``BENCHMARKS.md``.

For each protocol of ``--protocols`` (default: all three)

    attnzoo     LimitedHTTPProtocol: httptools + head budget, deadlines, JSON errors (what runs)
    httptools   uvicorn's default with ``uvicorn[standard]``: no limit on the head
    h11         uvicorn's pure-Python one: a 16 KiB limit on the head (h11's default)

the script runs ``attnzoo serve`` with that protocol (everything else as configured by
``app/server/runner.py``), then measures
- ``/detect`` throughput: ``--requests`` requests from ``--concurrency`` keep-alive clients (the
  parser is a sliver of a forward: this shows it costs nothing where the time goes);
- ``/healthz`` throughput: ``--light-requests`` from ``--concurrency`` clients (where the parser
  is most of the work);
- a header flood: ``--floods`` requests each with one ``--flood-mib`` MiB header, streamed, then
  the server's anonymous RSS against before (the memory the flood left behind), and what each
  flooding client got.

Usage: python benchmarks/http_protocol.py [--protocols attnzoo,httptools,h11] [--scale 1333,800]
       [--requests 32] [--concurrency 4] [--floods 4] [--flood-mib 256]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import torch  # noqa: E402

from benchmarks import common, serve_bench  # noqa: E402
from model_zoo import load_registry  # noqa: E402

SCRIPT = "benchmarks/http_protocol.py"
PROTOCOLS = ("attnzoo", "httptools", "h11")
WORKER = "serve-with-protocol"


@dataclass
class ProtocolResult:
    protocol: str
    detect: dict = field(default_factory=dict)  # serve_bench.LevelResult as a dict
    light_per_s: float = 0.0
    anon_before_mib: float = 0.0
    anon_after_mib: float = 0.0
    flood_answers: list[str] = field(default_factory=list)


# --- the server: `attnzoo serve` with another HTTP protocol -----------------------------------------


def serve_with_protocol(argv: Sequence[str]) -> int:
    """``WORKER PROTOCOL serve ...``: ``attnzoo serve ...`` with uvicorn's ``http`` replaced
    (``attnzoo``: left as ``app.server.runner.uvicorn_config`` builds it)."""
    protocol, *serve_argv = argv
    from app.server import runner as server
    from model_zoo.cli import main as attnzoo

    configured = server.uvicorn_config

    def with_protocol(app: Any, settings: Any) -> Any:
        config = configured(app, settings)
        if protocol != "attnzoo":
            config.http = protocol
        return config

    server.uvicorn_config = with_protocol  # this worker process only
    return attnzoo(serve_argv)


# --- measurements ------------------------------------------------------------------------------------


def light_throughput(base_url: str, concurrency: int, requests: int) -> float:
    """GET /healthz per second from ``concurrency`` keep-alive clients."""
    remaining = [requests]
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                http.get("/healthz").raise_for_status()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return requests / (time.perf_counter() - started)


def flood(port: int, mib: int) -> str:
    """One request with a ``mib`` MiB header, streamed; what the client got."""
    chunk = b"a" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Flood: ")
            for _ in range(mib):
                sock.sendall(chunk)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return "closed while sending"
        try:
            status_line = sock.recv(65536).split(b"\r\n", 1)[0].decode("latin-1")
        except ConnectionResetError:
            return "reset"
        return status_line or "closed"


def anon_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024


def measure(args, zoo, protocol: str, image: bytes, work_dir: Path) -> ProtocolResult:
    result = ProtocolResult(protocol)
    settings = {"ATTNZOO_MAX_BATCH": str(args.max_batch), "ATTNZOO_QUEUE_SIZE": str(max(64, 2 * args.concurrency)), "ATTNZOO_REQUEST_TIMEOUT_S": "600"}
    attnzoo = (sys.executable, str(Path(__file__).resolve()), WORKER, protocol)
    log_path = work_dir / f"serve-{protocol}.log"
    with serve_bench.serve_process(zoo, args.variant, args.device, settings, log_path, args.start_timeout, attnzoo) as (service, process):
        base_url = service.base_url
        level = serve_bench.run_level(base_url, args.variant, image, args.concurrency, args.requests)
        result.detect = asdict(level) | {"throughput": level.throughput(), "p50_ms": level.percentile_ms(50)}
        result.light_per_s = light_throughput(base_url, args.concurrency, args.light_requests)
        result.anon_before_mib = anon_mib(process.pid)
        port = int(base_url.rsplit(":", 1)[1])
        result.flood_answers = [flood(port, args.flood_mib) for _ in range(args.floods)]
        time.sleep(1.0)  # let the server finish with the last flood
        result.anon_after_mib = anon_mib(process.pid)
        print(f"{protocol}: {result.detect['throughput']:.3f} img/s, {result.light_per_s:.0f} /healthz per s, "
              f"flood +{result.anon_after_mib - result.anon_before_mib:.0f} MiB", file=sys.stderr)  # fmt: skip
    return result


# --- report -----------------------------------------------------------------------------------------


def entry_text(args, argv, zoo, scale, results: Sequence[ProtocolResult], machine) -> str:
    header = common.entry_header(
        f"http_protocol.py: the service's HTTP protocol against uvicorn's ({args.variant})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    setting = (
        f"- Service: `attnzoo serve` subprocess per protocol (uvicorn's `http` replaced, everything else from app/server/runner.py), "
        f"device {args.device}, max_batch {args.max_batch}; test-time scale {scale[0]}×{scale[1]}; weights: {zoo.weights}; "
        f"image: {args.image or 'synthetic scene 640×427 JPEG'}; clients on this machine: {args.requests} POST /detect and "
        f"{args.light_requests} GET /healthz from {args.concurrency} keep-alive clients; then {args.floods} requests with one "
        f"{args.flood_mib} MiB header each.\n" + common.load_note(machine) + "\n"
    )
    rows = []
    for r in results:
        answers: dict[str, int] = {}
        for answer in r.flood_answers:
            answers[answer] = answers.get(answer, 0) + 1
        rows.append([
            r.protocol, common.fmt(r.detect["throughput"], 3), common.fmt(r.detect["p50_ms"], 0), common.fmt(r.light_per_s, 0),
            "; ".join(f"{n}× {a}" for a, n in answers.items()), common.fmt(r.anon_after_mib - r.anon_before_mib, 1),
        ])  # fmt: skip
    table = common.markdown_table(
        ["protocol", "/detect img/s", "/detect p50 ms", "/healthz per s", "flooding clients got", "anon RSS left by the flood MiB"],
        rows,
    )
    return header + setting + table


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma-separated, of: {', '.join(PROTOCOLS)}")
    serve_bench.add_service_arguments(parser)
    parser.add_argument("--requests", type=int, default=32, help="timed POST /detect per protocol")
    parser.add_argument("--light-requests", type=int, default=2000, help="timed GET /healthz per protocol")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--floods", type=int, default=4)
    parser.add_argument("--flood-mib", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=4)
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not args.protocols or set(args.protocols) - set(PROTOCOLS):
        parser.error(f"--protocols: choose from {', '.join(PROTOCOLS)}")
    if min(args.requests, args.light_requests, args.concurrency, args.flood_mib) < 1 or args.floods < 0:
        parser.error("--requests, --light-requests, --concurrency and --flood-mib must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER]:
        return serve_with_protocol(argv[1:])
    args = parse_args(argv)
    machine = common.machine_info()
    image = serve_bench.bench_image(args.image)
    with tempfile.TemporaryDirectory(prefix="attnzoo-http-") as tmp:
        zoo = serve_bench.build_zoo(args, Path(tmp))
        scale = load_registry(zoo.metafile).resolve(args.variant).arch.preprocess.scale
        results = [measure(args, zoo, protocol, image, Path(tmp)) for protocol in args.protocols]
    text = entry_text(args, argv, zoo, scale, results, machine)
    common.publish(text, args, {"machine": machine, "results": [asdict(r) for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
