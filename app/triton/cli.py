"""``attnzoo triton-repo``: write a Triton model repository of the variants (``repository.py``).

It joins ``attnzoo`` through the ``attnzoo.commands`` entry point, as ``serve`` does. Mistakes are
one line on stderr with a non-zero exit: an unknown variant, a missing or hash-mismatched
checkpoint, an output folder that is not empty.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model_zoo import load_registry
from model_zoo.cli.environment import add_cpu_kernels_option

from .model_config import Scheduling
from .repository import verified_weights, write_repository


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "triton-repo",
        parents=[common],
        help="write a Triton Inference Server model repository of the variants (Python backend)",
        description="Write a Triton model repository: one model per variant, named by its alias, version 1, each "
        "with a config.pbtxt (input IMAGE, the four outputs of attnzoo serve's v2 door, dynamic batching, instance "
        "group) and a model.py that runs the attnzoo engine on its checkpoint, verified by hash. The models use the "
        "Python environment this command runs from (recorded in each model's environment.json), or the "
        "site-packages listed in ATTNZOO_TRITON_SYS_PATH where tritonserver runs. Serve it with "
        "`tritonserver --model-repository DIR`.",
    )
    defaults = Scheduling()
    parser.add_argument("--out", required=True, type=Path, help="the repository folder to write (absent or empty)")
    parser.add_argument(
        "--variants", nargs="+", default=None, metavar="VARIANT", help="variants to write (default: every registry entry)"
    )
    parser.add_argument(
        "--device", choices=["gpu", "cpu"], default=defaults.instance_kind,
        help="where Triton runs each model's instances: gpu (default, on every GPU) or cpu",
    )  # fmt: skip
    parser.add_argument(
        "--instances", type=_positive, default=defaults.instances, metavar="N",
        help=f"instances of each model (per GPU with --device gpu; default {defaults.instances})",
    )  # fmt: skip
    parser.add_argument(
        "--max-batch-size", type=_positive, default=defaults.max_batch_size, metavar="N",
        help=f"most images Triton's dynamic batcher gives one execution (default {defaults.max_batch_size}, as ATTNZOO_MAX_BATCH)",
    )  # fmt: skip
    parser.add_argument(
        "--weights", choices=["copy", "link"], default="copy",
        help="copy each checkpoint into the repository (default: self-contained, for KServe's storageUri) or link to it",
    )  # fmt: skip
    add_cpu_kernels_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = load_registry(args.metafile)
    weights = verified_weights(registry, args.variants, args.weights_dir)
    scheduling = Scheduling(max_batch_size=args.max_batch_size, instance_kind=args.device, instances=args.instances)
    written = write_repository(args.out, registry, weights, scheduling, weights_mode=args.weights, cpu_kernels=args.cpu_kernels)
    for model in written:
        how = "linked" if model.checkpoint.is_symlink() else "copied"
        print(f"{model.name}: {model.folder} (checkpoint {how}, sha256 {model.sha256})")
    print(f"wrote {args.out}: tritonserver --model-repository {args.out.resolve()}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number >= 1")
    return value
