"""Batched throughput and batch invariance: one forward per batch (the old path) against one forward
per image (the CPU default since issue 12), in one run; appends an entry to ``BENCHMARKS.md``.

For each variant and CPU kernel setting, one detector (``load_detector`` on a synthetic checkpoint)
and ``max(--batch-sizes)`` distinct scenes of one size (640×427: one padded shape at any scale, so
the batched path really batches them, its best case). For each batch size b, ``Detector.infer`` on
the first b scenes is timed with ``batched_forward=True`` (one forward for the batch, the code path
before issue 12) and ``False`` (one forward per image), alternating call by call; images/s is
b / the median seconds. Each path's answers are also compared with the lone answers of the same
images: bit-identical or not, and the share matched by the parity criterion (same label,
IoU ≥ 0.99, |Δscore| ≤ 2e-3).

Usage: python benchmarks/batch_invariance.py [--variants attn0010] [--scale 1333,800] [--batch-sizes 1,2,4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

common.add_repo_to_path()

VARIANTS = ("attn1111", "attn0010", "attn1111-dcn", "attn0010-dcn")
PATHS = {"batched": True, "per image": False}  # row label → Detector.batched_forward


@dataclass
class BatchTiming:
    """One row: a variant, kernel setting and batch size, both paths."""

    variant: str
    cpu_kernels: str
    batch: int
    images_per_s: dict[str, float]  # path → b / median seconds
    bit_identical: dict[str, bool]  # path → every answer equals its lone answer exactly
    matched: dict[str, tuple[int, int]]  # path → (lone detections matched, lone detections)


def scenes(count: int) -> list:
    """``count`` distinct BGR scenes of one size (427×640)."""
    from model_zoo.synth import calibration_image

    return [calibration_image(100 + index) for index in range(count)]


def compare(lone: Sequence, answers: Sequence) -> tuple[bool, tuple[int, int]]:
    """(all bit-identical, (matched, reference detections)) of ``answers`` against ``lone``."""
    from tools.parity import match_detections

    matched = total = 0
    for reference, answer in zip(lone, answers):
        match = match_detections(*_columns(reference), *_columns(answer))
        matched, total = matched + match.matched, total + match.reference
    return all(a == b for a, b in zip(answers, lone)), (matched, total)


def _columns(result) -> tuple[list, list, list]:
    return [d.bbox for d in result.detections], [d.score for d in result.detections], [d.label for d in result.detections]


def time_variant(detector, prepared: Sequence, args: argparse.Namespace, kernels: str) -> list[BatchTiming]:
    """Every batch size for one detector; the two paths alternate call by call."""
    sync = common.cuda_sync(args.device)
    default = detector.batched_forward
    detector.batched_forward = False
    lone = [detector.infer([item])[0] for item in prepared]
    rows = []
    for size in args.batch_sizes:
        batch = list(prepared[:size])
        times: dict[str, list[float]] = {path: [] for path in PATHS}
        answers = {}
        for repeat in range(args.warmup + args.repeats):
            for path in list(PATHS) if repeat % 2 == 0 else list(PATHS)[::-1]:
                detector.batched_forward = PATHS[path]
                started = time.perf_counter()
                answers[path] = detector.infer(batch)
                if sync:
                    sync()
                if repeat >= args.warmup:
                    times[path].append(time.perf_counter() - started)
        compared = {path: compare(lone[:size], answers[path]) for path in PATHS}
        rows.append(BatchTiming(
            variant=detector.variant, cpu_kernels=kernels, batch=size,
            images_per_s={path: size / common.median(times[path]) for path in PATHS},
            bit_identical={path: compared[path][0] for path in PATHS},
            matched={path: compared[path][1] for path in PATHS},
        ))  # fmt: skip
        print(f"{detector.variant} {kernels} batch {size}: "
              + ", ".join(f"{path} {rows[-1].images_per_s[path]:.3f} img/s" for path in PATHS), flush=True)  # fmt: skip
    detector.batched_forward = default
    return rows


def run(args: argparse.Namespace) -> list[BatchTiming]:
    from benchmarks.speed import scaled_registry
    from model_zoo.predictor import load_detector
    from model_zoo.synth import write_synthetic_checkpoint

    registry = scaled_registry(args.scale)
    images = scenes(max(args.batch_sizes))
    rows: list[BatchTiming] = []
    with tempfile.TemporaryDirectory(prefix="attnzoo-batch-") as tmp:
        for alias in args.variants:
            path = write_synthetic_checkpoint(registry.resolve(alias), Path(tmp) / f"{alias}.pth", seed=args.seed)
            for kernels in args.cpu_kernels:
                detector = load_detector(alias, path, registry=registry, device=args.device, verify_hash=False, cpu_kernels=kernels)
                rows += time_variant(detector, [detector.prepare(image) for image in images], args, kernels)
            path.unlink()
    return rows


def results_table(rows: Sequence[BatchTiming]) -> str:
    def identical(flag: bool) -> str:
        return "yes" if flag else "no"

    def share(pair: tuple[int, int]) -> str:
        matched, total = pair
        return f"{matched}/{total}"

    table = [
        [row.variant, row.cpu_kernels, row.batch, f"{row.images_per_s['batched']:.3f}", f"{row.images_per_s['per image']:.3f}",
         f"{row.images_per_s['per image'] / row.images_per_s['batched']:.2f}×",
         identical(row.bit_identical["batched"]), share(row.matched["batched"]),
         identical(row.bit_identical["per image"]), share(row.matched["per image"])]
        for row in rows
    ]  # fmt: skip
    headers = ["variant", "cpu kernels", "batch", "batched img/s (old path)", "per-image img/s (new)", "per-image ÷ batched",
               "batched = lone (bits)", "batched: lone dets matched", "per-image = lone (bits)", "per-image: lone dets matched"]  # fmt: skip
    return common.markdown_table(headers, table)


def entry_text(args: argparse.Namespace, argv: Sequence[str], rows: Sequence[BatchTiming], machine: dict) -> str:
    head = common.entry_header("batch invariance and batched throughput (benchmarks/batch_invariance.py)",
                               common.command_line("benchmarks/batch_invariance.py", argv), machine,
                               common.software_versions(), args.threads)  # fmt: skip
    return head + (
        f"- Setting: scale {args.scale[0]}×{args.scale[1]}, device {args.device}, {max(args.batch_sizes)} synthetic scenes "
        f"640×427 (one padded shape), synthetic weights seed {args.seed}; median of {args.repeats} after {args.warmup} "
        f"warm-up per path and batch size, the two paths alternating call by call; malloc: {args.malloc_note}\n"
        + common.load_note(machine) + "\n" + results_table(rows)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated aliases (default: all four)")
    parser.add_argument("--scale", default="1333,800", help="test-time keep-ratio scale LONG,SHORT (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1,2,4", help="comma-separated (default: %(default)s; the service's max_batch is 4)")
    parser.add_argument("--cpu-kernels", default="fast", help="comma-separated: fast, portable (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per path and batch size (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per path and batch size")
    parser.add_argument("--threads", type=int, default=common.default_threads(), help="torch threads (default: all cores, %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep", help="as benchmarks/speed.py (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-weights seed")
    common.add_output_arguments(parser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.scale = common.parse_scale(args.scale)
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        args.cpu_kernels = [k.strip() for k in args.cpu_kernels.split(",") if k.strip()]
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        if not args.variants or any(v not in VARIANTS for v in args.variants):
            raise ValueError(f"--variants must name some of {list(VARIANTS)}")
        if not args.cpu_kernels or any(k not in ("fast", "portable") for k in args.cpu_kernels):
            raise ValueError("--cpu-kernels must be fast and/or portable")
        if not args.batch_sizes or min(args.batch_sizes) < 1:
            raise ValueError("--batch-sizes must be positive integers")
        if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
            raise ValueError("--repeats and --threads must be >= 1, --warmup >= 0")
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.speed import apply_malloc

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.malloc_note = apply_malloc(args.malloc)
    torch.set_num_threads(args.threads)
    machine = common.machine_info()
    rows = run(args)
    text = entry_text(args, argv, rows, machine)
    common.publish(text, args, {"machine": machine, "rows": [asdict(row) for row in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
