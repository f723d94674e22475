"""What both benchmark scripts share: the machine description, timing, the reference-env
subprocess and the append-only ``BENCHMARKS.md`` entry.

Units: seconds for times, bytes for memory (converted to MiB only when printed).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_FILE = REPO_ROOT / "BENCHMARKS.md"
# The mmdet 3.3 + mmcv 2.1 reference venv (../shared/reference/REFERENCE_ENV.md); never a dependency.
DEFAULT_REFERENCE_PYTHON = Path("/tmp/refenv/venv/bin/python")
MIB = 2**20


def parse_scale(text: str) -> tuple[int, int]:
    """``"1333,800"`` → (1333, 800): the keep-ratio target (long edge, short edge) in pixels."""
    try:
        long_edge, short_edge = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--scale expects LONG,SHORT in pixels such as 1333,800, got {text!r}") from None
    if min(long_edge, short_edge) < 32:
        raise ValueError(f"--scale edges must be at least 32 pixels, got {text!r}")
    return max(long_edge, short_edge), min(long_edge, short_edge)


def default_threads() -> int:
    """All cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def time_call(fn: Callable[[], Any], *, repeats: int, warmup: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - started)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def cuda_sync(device: torch.device | str) -> Callable[[], None] | None:
    """A synchronize callable for CUDA devices (timings must wait for the kernels), else None."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else None


# --- the machine -------------------------------------------------------------------------------


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, bf16 support, GPU, load average: what a timing depends on."""
    try:
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        mem_kb = 0
    flags = (_cpuinfo_field("flags") or "").split()
    return {
        "cpu": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "cores": default_threads(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "matmul_gflops": round(matmul_gflops(), 1),
    }


def matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of a size² matmul with the current torch threads.

    A probe of how much of the machine this process gets: on a busy shared machine it drops
    well below the idle figure, and every timing of the run with it.
    """
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    a @ b  # warm-up
    best = min(time_call(lambda: a @ b, repeats=repeats, warmup=0))
    return 2 * size**3 / best / 1e9


def load_note(machine: dict[str, Any]) -> str:
    """One line on how busy the machine was: load average and the matmul probe at start and end."""
    return (
        f"- Shared machine: other processes may have been running (load average {machine['loadavg'][0]} at start, "
        f"{os.getloadavg()[0]:.2f} at end, {machine['cores']} cores; fp32 2048² matmul with these threads: "
        f"{machine['matmul_gflops']:.0f} GFLOP/s at start, {matmul_gflops():.0f} at end)\n"
    )


def software_versions() -> dict[str, str]:
    import cv2
    import numpy

    found = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__, "opencv": cv2.__version__}
    try:
        import torchvision

        found["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return found


# --- the reference environment (a separate interpreter) ---------------------------------------


def reference_python(requested: str | None, module: str) -> tuple[Path | None, str]:
    """The interpreter to run the reference side with, and why (or why not).

    ``requested`` None: use :data:`DEFAULT_REFERENCE_PYTHON` when it exists and imports ``module``.
    ``requested`` "" (``--no-mmdet``/``--no-mmcv``): none. A path given explicitly must work.
    """
    if requested == "":
        return None, "disabled on the command line"
    path = Path(requested) if requested else DEFAULT_REFERENCE_PYTHON
    if not path.exists():
        if requested:
            raise ValueError(f"reference interpreter {str(path)!r} does not exist")
        return None, f"no reference env at {path}"
    probe = subprocess.run([str(path), "-c", f"import {module}; print({module}.__version__)"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        if requested:
            raise ValueError(f"{path} cannot import {module}: {probe.stderr.strip().splitlines()[-1:]}")
        return None, f"{path} cannot import {module}"
    return path, f"{module} {probe.stdout.strip()} via {path}"


def run_reference_worker(python: Path, script: Path, worker_args: Sequence[str], payload: dict[str, Any]) -> dict[str, Any]:
    """Run ``python script WORKER_ARGS SPEC.json OUT.json`` and return OUT's JSON.

    The worker gets ``payload`` as SPEC and writes its results to OUT; its stderr is shown on failure.
    """
    with tempfile.TemporaryDirectory(prefix="attnzoo-bench-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps(payload))
        done = subprocess.run([str(python), str(script), *worker_args, str(spec), str(out)], capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.exists():
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"reference worker {script.name} {' '.join(worker_args)} failed (exit {done.returncode}):\n{tail}")
        return json.loads(out.read_text())


def add_repo_to_path() -> None:
    """Make ``model_zoo``, ``tools`` and ``benchmarks`` importable (the reference venv does not
    install the project)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


# --- reporting ----------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces this run, relative to the repo root."""
    return shlex.join(["python", script, *argv])


def entry_header(title: str, command: str, machine: dict[str, Any], versions: dict[str, str], threads: int) -> str:
    """The dated first lines of a ``BENCHMARKS.md`` entry."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    bf16 = "avx512_bf16" if machine["avx512_bf16"] else "no avx512_bf16"
    return (
        f"## {now} — {title}\n\n"
        f"- Machine: {machine['cpu']}, {machine['cores']} cores ({bf16}), {machine['ram_gib']} GiB RAM; "
        f"GPU: {machine['gpu'] or 'none lent (CPU only)'}\n"
        f"- Software: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; torch threads: {threads}\n"
        f"- Command: `{command}`\n"
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-append``, ``--json PATH``, ``--benchmarks-file``: where an entry goes."""
    parser.add_argument("--no-append", action="store_true", help=f"print the entry only, do not append it to {BENCHMARKS_FILE.name}")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    parser.add_argument("--benchmarks-file", type=Path, default=BENCHMARKS_FILE, help="where to append (default: %(default)s)")


def publish(text: str, args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Print the entry; write ``payload`` to ``--json``; append the entry unless ``--no-append``."""
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    if not args.no_append:
        append_entry(text, args.benchmarks_file)
        print(f"appended to {args.benchmarks_file}", file=sys.stderr)


def append_entry(text: str, path: Path = BENCHMARKS_FILE) -> None:
    """Append one entry to ``path`` (created with a title if missing). Never rewrites old entries."""
    if not path.exists():
        path.write_text(
            "# Benchmarks\n\nAppend-only log of `benchmarks/*.py` runs (see benchmarks/README.md). "
            "Each entry records the machine, versions and the exact command.\n"
        )
    with path.open("a") as handle:
        handle.write("\n" + text.rstrip("\n") + "\n")
