"""Soak: the RSS of a real ``attnzoo serve`` over many requests, for each malloc configuration;
appends a dated entry with the RSS series to ``BENCHMARKS.md``.

For each configuration of ``--configs`` (default: all three, in this order)

    one-arena    keep freed memory, one malloc arena (ATTNZOO_MALLOC_ARENAS=1: the default)
    per-thread   keep freed memory, glibc's arenas (ATTNZOO_MALLOC_ARENAS=0: before issue 12)
    glibc        glibc's defaults (ATTNZOO_KEEP_FREED_MEMORY=0: big blocks unmapped when freed)

the script starts ``attnzoo serve`` (one variant; test-time scale: the variant's own, 1333×800,
unless ``--scale``), sends ``--warmup`` then ``--requests`` POST /detect of one image from
``--concurrency`` keep-alive clients, and every ``--sample-every`` requests reads from /proc:
the server's RSS (``VmRSS``), where its malloc memory lives (``model_zoo.runtime.malloc_heaps``:
the main heap and the heaps of other arenas), its minor page faults and its CPU seconds.

Reported per configuration: anonymous RSS (``RssAnon``: malloc's memory, without the libraries'
file pages that the kernel drops and reloads under memory pressure) after the warm-up and at the
end; its growth per 100 requests (the least-squares slope of the samples after the warm-up) and
its largest rise over the warm-up level; the same slope of ``VmRSS``; main heap and arena heaps at the end; minor page faults and server CPU seconds per
request (what keep-freed memory saves: a forward that re-faults its working set); throughput.
Issue 12's target: growth < 5 MiB per 100 requests after the warm-up, at the speed of
keep-freed memory.

Usage: python benchmarks/soak.py [--requests 1000] [--warmup 50] [--concurrency 4]
       [--configs one-arena,per-thread,glibc] [--variant attn0010] [--scale 1333,800]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common, serve_bench  # noqa: E402
from model_zoo import load_registry  # noqa: E402
from model_zoo.runtime import malloc_heaps  # noqa: E402

SCRIPT = "benchmarks/soak.py"
CONFIGS: dict[str, dict[str, str]] = {
    "one-arena": {"ATTNZOO_KEEP_FREED_MEMORY": "1", "ATTNZOO_MALLOC_ARENAS": "1"},
    "per-thread": {"ATTNZOO_KEEP_FREED_MEMORY": "1", "ATTNZOO_MALLOC_ARENAS": "0"},
    "glibc": {"ATTNZOO_KEEP_FREED_MEMORY": "0"},
}
TARGET_MIB_PER_100 = 5.0


@dataclass(frozen=True)
class Sample:
    """The server after ``requests`` answered requests (memory in MiB)."""

    requests: int
    seconds: float  # since the first timed request
    rss_mib: float  # VmRSS: anonymous + file-backed pages (the libraries' pages come and go under memory pressure)
    anon_mib: float  # RssAnon: what malloc holds (and Python's own arenas, thread stacks)
    main_heap_mib: float
    arena_heaps_mib: float
    arena_heaps: int
    minor_faults: int
    cpu_s: float


@dataclass
class SoakResult:
    config: str
    settings: dict[str, str]
    samples: list[Sample] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def after_warmup(self) -> list[Sample]:
        return self.samples[1:] if len(self.samples) > 1 else self.samples

    def growth_per_100(self, attribute: str = "anon_mib") -> float | None:
        """MiB per 100 requests: least-squares slope of ``attribute`` over requests after the warm-up."""
        points = self.after_warmup()
        if len(points) < 3:
            return None
        slope = np.polyfit([p.requests for p in points], [getattr(p, attribute) for p in points], 1)[0]
        return float(slope * 100)

    def per_request(self, attribute: str) -> float | None:
        first, last = self.samples[0], self.samples[-1]
        count = last.requests - first.requests
        return (getattr(last, attribute) - getattr(first, attribute)) / count if count > 0 else None


# --- the server, seen from /proc --------------------------------------------------------------------


def read_sample(pid: int, requests: int, seconds: float) -> Sample:
    status = {line.split(":")[0]: line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.endswith(" kB")}
    heaps = malloc_heaps(pid)
    # /proc/PID/stat: fields after the ")" that ends the command name; minflt is the 10th field, utime/stime the 14th/15th
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return Sample(
        requests=requests,
        seconds=seconds,
        rss_mib=int(status["VmRSS"]) / 1024,
        anon_mib=int(status["RssAnon"]) / 1024,
        main_heap_mib=heaps.main_kib / 1024,
        arena_heaps_mib=heaps.arena_kib / 1024,
        arena_heaps=heaps.arena_heaps,
        minor_faults=int(fields[7]),
        cpu_s=(int(fields[11]) + int(fields[12])) / ticks,
    )


# --- one configuration ------------------------------------------------------------------------------


def soak(args: argparse.Namespace, zoo: serve_bench.Zoo, config: str, image: bytes, work_dir: Path) -> SoakResult:
    settings = {
        "ATTNZOO_MAX_BATCH": str(args.max_batch),
        "ATTNZOO_QUEUE_SIZE": str(max(64, 2 * args.concurrency)),
        "ATTNZOO_REQUEST_TIMEOUT_S": "600",
        **CONFIGS[config],
    }
    result = SoakResult(config, settings)
    log_path = work_dir / f"serve-{config}.log"
    with serve_bench.serve_process(zoo, args.variant, args.device, settings, log_path, args.start_timeout) as (service, process):
        base_url = service.base_url
        total = args.warmup + args.requests
        lock = threading.Lock()
        sent = [0]
        started = [0.0]

        def client() -> None:
            with httpx.Client(base_url=base_url, timeout=600) as http:
                while True:
                    with lock:
                        if sent[0] >= total:
                            return
                        sent[0] += 1
                    response = http.post("/detect", params={"variant": args.variant}, content=image, headers={"Content-Type": "image/jpeg"})
                    with lock:
                        result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
                        done = sum(result.statuses.values())
                        if done == args.warmup:
                            started[0] = time.perf_counter()
                        if done >= args.warmup and (done - args.warmup) % args.sample_every == 0:
                            result.samples.append(read_sample(process.pid, done - args.warmup, time.perf_counter() - started[0]))
                            sample = result.samples[-1]
                            print(f"{config}: {sample.requests} requests, RSS {sample.rss_mib:.1f} MiB (anonymous {sample.anon_mib:.1f})", file=sys.stderr)

        clients = [threading.Thread(target=client) for _ in range(args.concurrency)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        result.wall_s = time.perf_counter() - started[0]
    return result


# --- report -------------------------------------------------------------------------------------------


def entry_text(args, argv, zoo, scale, results: Sequence[SoakResult], machine) -> str:
    header = common.entry_header(
        f"soak.py: server RSS over {args.requests} requests per malloc configuration ({args.variant})",
        common.command_line(SCRIPT, argv),
        machine,
        common.software_versions(),
        torch.get_num_threads(),
    )
    setting = (
        f"- Service: `attnzoo serve` subprocess per configuration, device {args.device}, max_batch {args.max_batch}; "
        f"test-time scale {scale[0]}×{scale[1]}; weights: {zoo.weights}; image: {args.image or 'synthetic scene 640×427 JPEG'}; "
        f"{args.warmup} warm-up requests, then {args.requests} from {args.concurrency} keep-alive clients on this machine; "
        f"a sample every {args.sample_every} requests.\n"
        f"- Configurations: " + "; ".join(f"{r.config} ({', '.join(f'{k}={v}' for k, v in CONFIGS[r.config].items())})" for r in results) + "\n"
        + common.load_note(machine) + "\n"
    )  # fmt: skip
    rows = []
    for r in results:
        growth = r.growth_per_100()
        first, last = r.samples[0], r.samples[-1]
        rise = max(s.anon_mib for s in r.samples) - first.anon_mib
        errors = {code: n for code, n in r.statuses.items() if code != 200}
        rows.append([
            r.config, r.statuses.get(200, 0), ", ".join(f"{c}×{n}" for c, n in sorted(errors.items())) or "0",
            common.fmt(first.anon_mib, 1), common.fmt(last.anon_mib, 1), common.fmt(growth, 2), common.fmt(rise, 1),
            "yes" if growth is not None and growth < TARGET_MIB_PER_100 else "no",
            common.fmt(r.growth_per_100("rss_mib"), 2), common.fmt(last.rss_mib, 1),
            common.fmt(last.main_heap_mib, 1), f"{last.arena_heaps_mib:.1f} ({last.arena_heaps})",
            common.fmt(r.per_request("minor_faults"), 0), common.fmt(r.per_request("cpu_s"), 2),
            common.fmt((last.requests - first.requests) / r.wall_s if r.wall_s else None, 3),
        ])  # fmt: skip
    table = common.markdown_table(
        ["config", "answers", "errors", "anon RSS after warm-up MiB", "anon RSS at end MiB", "growth MiB/100 req",
         "max rise MiB", f"< {TARGET_MIB_PER_100:g} MiB/100", "VmRSS growth MiB/100 req", "VmRSS at end MiB",
         "main heap MiB", "other arenas' heaps MiB (count)", "minor faults/req", "server CPU s/req", "throughput img/s"],
        rows,
    )  # fmt: skip
    series = (
        "\nAnonymous RSS (RssAnon: malloc's memory; VmRSS also counts the libraries' file pages, which the kernel "
        "drops and reloads under memory pressure) in MiB, after N requests past the warm-up:\n\n"
        + "".join(f"- {r.config}: " + ", ".join(f"{s.requests}: {s.anon_mib:.1f}" for s in r.samples) + "\n" for r in results)
    )
    return header + setting + table + series


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_bench.add_service_arguments(parser)
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per configuration, after the warm-up")
    parser.add_argument("--warmup", type=int, default=50, help="requests before the first sample")
    parser.add_argument("--sample-every", type=int, default=25)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of: {', '.join(CONFIGS)}")
    parser.add_argument("--max-batch", type=int, default=4)
    common.add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        parser.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    if args.requests < 3 * args.sample_every or min(args.concurrency, args.sample_every, args.warmup) < 1:
        parser.error("need --requests >= 3 × --sample-every, and --concurrency, --sample-every, --warmup >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    machine = common.machine_info()
    image = serve_bench.bench_image(args.image)
    results = []
    with tempfile.TemporaryDirectory(prefix="attnzoo-soak-") as tmp:
        zoo = serve_bench.build_zoo(args, Path(tmp))
        scale = load_registry(zoo.metafile).resolve(args.variant).arch.preprocess.scale
        for config in args.configs:
            results.append(soak(args, zoo, config, image, Path(tmp)))
    text = entry_text(args, argv, zoo, scale, results, machine)
    common.publish(text, args, {"machine": machine, "results": [asdict(r) for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
