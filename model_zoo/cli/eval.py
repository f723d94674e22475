"""``attnzoo eval``: re-measure the published COCO table (box AP, fps, memory) in one resumable run.

Scale out with ``torchrun --nproc-per-node N -m model_zoo eval ...`` (one process per GPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .environment import add_cpu_kernels_option, keep_freed_memory_wanted


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "eval",
        parents=[common],
        help="evaluate variants on COCO val2017: box AP, fps, peak inference memory (resumable)",
        description=(
            "Run the variants over COCO val2017 (batch 1), evaluate with pycocotools and measure speed "
            "the way mmdet did. Writes OUT/table.json, OUT/table.md and OUT/ap_vs_fps.png. Killed and "
            "run again with the same arguments, it continues where it stopped. Under "
            "`torchrun --nproc-per-node N -m model_zoo eval ...` the images are sharded over N processes."
        ),
    )
    parser.add_argument(
        "--coco-root",
        required=True,
        type=Path,
        metavar="DIR",
        help="COCO root holding annotations/instances_val2017.json and val2017/*.jpg",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help="variants to evaluate (short or full names, space or comma separated; default: all)",
    )
    parser.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="evaluate the first N images only"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results"), metavar="DIR", help="output directory (default: results/)"
    )
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto (CUDA if available)"
    )
    add_cpu_kernels_option(parser)
    parser.add_argument(
        "--demo",
        action="store_true",
        help="use synthetic stand-in weights where the official files are missing (made once, cached in "
        "<weights dir>/demo/), as `attnzoo serve --demo` does: the table then says weights_source synthetic "
        "and its AP means nothing",
    )
    parser.add_argument(
        "--endpoint",
        default=None,
        metavar="URL",
        help="run the images through this live service (e.g. http://127.0.0.1:8000) instead of a local model; "
        "the table records the endpoint and the weights sha256 it reports",
    )
    parser.add_argument(
        "--endpoint-protocol",
        default="attnzoo",
        choices=("attnzoo", "v2"),
        help="attnzoo: POST /detect (default); v2: the Open Inference Protocol (KServe/Triton REST)",
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, default=4, metavar="N", help="requests in flight to --endpoint (default 4)"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not draw progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_zoo.evaluation.job import EvalOptions, run_eval  # pycocotools and matplotlib only when the command runs
    from model_zoo.runtime import keep_freed_memory

    if keep_freed_memory_wanted():
        keep_freed_memory()
    variants = tuple(name for value in args.variants or () for name in value.split(",") if name)
    outcome = run_eval(
        EvalOptions(
            coco_root=args.coco_root,
            variants=variants,
            limit=args.limit,
            out_dir=args.out,
            device=args.device,
            cpu_kernels=args.cpu_kernels,
            metafile=Path(args.metafile) if args.metafile else None,
            weights_dir=Path(args.weights_dir) if args.weights_dir else None,
            demo=args.demo,
            progress=not args.no_progress,
            endpoint=args.endpoint,
            endpoint_protocol=args.endpoint_protocol,
            concurrency=args.concurrency,
        )
    )
    if outcome.report is None:  # torchrun ranks other than 0 report nothing
        return 0
    for row in outcome.rows:
        print(
            f"{row['variant']}: box AP {_num(row['box_ap'])} (published {_num(row['published_box_ap'])}), "
            f"fps {_num(row['fps'])} (published {_num(row['published_fps'])}, V100), "
            f"end to end {_num(row['fps_end_to_end'])}, peak inference memory {_num(row['peak_memory_mb'], 0)} MB, "
            f"{row['images']} images on {row['device']}, weights {row['weights_source'] or 'not reported'}"
        )
    report = outcome.report
    print(f"wrote {report.table_json}, {report.table_md}, {report.plot_png}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
