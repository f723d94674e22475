"""``attnzoo synth-weights``: write a deterministic synthetic checkpoint of a variant, to a path
of your choice or as the demo stand-in that ``attnzoo serve --demo`` uses."""

from __future__ import annotations

import argparse

from model_zoo.errors import AttnzooError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "synth-weights",
        parents=[common],
        help="write a synthetic checkpoint with the official file's keys, shapes and layout",
        description="Write a deterministic synthetic checkpoint of VARIANT: random but well-conditioned "
        "weights with exactly the keys, shapes and file layout of the official mmdet checkpoint, so that "
        "every command and the service run without the real weights (detections are meaningless). "
        "The same variant and seed always give the same file. Without --out, the file is the demo "
        "stand-in (seed 0) cached in WEIGHTS_DIR/demo/ as VARIANT-synthetic-<sha256 prefix>.pth, "
        "which `attnzoo serve --demo` uses where the official file is missing.",
    )
    parser.add_argument("--variant", required=True, help="short name (attn1111, ...) or full metafile name")
    parser.add_argument("--out", default=None, help="output .pth path (default: the demo stand-in in the weights dir)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0); only with --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_zoo.demo_weights import DEMO_SEED, ensure_demo_weights
    from model_zoo.registry import load_registry
    from model_zoo.synth import write_synthetic_checkpoint
    from model_zoo.weights import sha256_file

    entry = load_registry(args.metafile).resolve(args.variant)
    if args.out is None:
        if args.seed not in (None, DEMO_SEED):
            raise AttnzooError(f"--seed {args.seed} needs --out: the demo stand-in always uses seed {DEMO_SEED}")
        path = ensure_demo_weights(entry, args.weights_dir)
        print(f"demo stand-in {path} (variant {entry.alias}, seed {DEMO_SEED}, sha256 {sha256_file(path)})")
        return 0
    seed = DEMO_SEED if args.seed is None else args.seed
    path = write_synthetic_checkpoint(entry, args.out, seed=seed)
    print(f"wrote {path} (variant {entry.alias}, seed {seed}, sha256 {sha256_file(path)})")
    return 0
