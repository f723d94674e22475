"""``attnzoo synth-weights``: write a deterministic synthetic checkpoint of a variant."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "synth-weights",
        parents=[common],
        help="write a synthetic checkpoint with the official file's keys, shapes and layout",
        description="Write a deterministic synthetic checkpoint of VARIANT: random but well-conditioned "
        "weights with exactly the keys, shapes and file layout of the official mmdet checkpoint, so that "
        "every command and the service run without the real weights (detections are meaningless). "
        "The same variant and seed always give the same file.",
    )
    parser.add_argument("--variant", required=True, help="short name (attn1111, ...) or full metafile name")
    parser.add_argument("--out", required=True, help="output .pth path")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_zoo.registry import load_registry
    from model_zoo.synth import write_synthetic_checkpoint
    from model_zoo.weights import sha256_file

    entry = load_registry(args.metafile).resolve(args.variant)
    path = write_synthetic_checkpoint(entry, args.out, seed=args.seed)
    print(f"wrote {path} (variant {entry.alias}, seed {args.seed}, sha256 {sha256_file(path)})")
    return 0
