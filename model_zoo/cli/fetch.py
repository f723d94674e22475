"""`attnzoo fetch [VARIANT...] [--all]`: download verified checkpoints into the weights dir."""

from __future__ import annotations

import argparse
import sys

from model_zoo.errors import WeightsError
from model_zoo.registry import load_registry, weights_path_for
from model_zoo.weights import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S, fetch_weights


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "fetch",
        parents=[common],
        help="download checkpoints (resumable, sha256-verified) into the weights dir",
        description="Download each variant's checkpoint from its metafile Weights URL. A cut download "
        "resumes; a file whose sha256 does not start with the hex suffix of its name is deleted.",
    )
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help="short name (attn1111) or full metafile name")
    parser.add_argument("--all", action="store_true", help="every variant of the metafile")
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_READ_TIMEOUT_S,
        help=f"seconds without data before a download counts as stalled (default {DEFAULT_READ_TIMEOUT_S:g})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = load_registry(args.metafile)
    if not args.variants and not args.all:
        print(
            f"attnzoo fetch: error: name at least one VARIANT or pass --all (variants: {', '.join(registry.aliases)})",
            file=sys.stderr,
        )
        return 2
    entries = registry.resolve_many(None if args.all else args.variants)

    failures = 0
    for entry in entries:
        try:
            if not entry.weights_url:
                raise WeightsError(
                    f"nothing to fetch: variant {entry.alias!r} has no Weights URL in the metafile "
                    "(add one, or give its checkpoint path where the model is loaded)"
                )
            result = fetch_weights(
                entry.weights_url,
                weights_path_for(entry, args.weights_dir),
                progress=not args.no_progress,
                timeout=args.timeout,
                connect_timeout=min(DEFAULT_CONNECT_TIMEOUT_S, args.timeout),
                log=_note_for(entry.alias),
            )
        except WeightsError as exc:
            failures += 1
            print(f"attnzoo fetch: {entry.alias}: error: {exc}", file=sys.stderr)
            continue
        check = "sha256 ok" if result.verified else "no sha256 prefix in the file name to check"
        if not result.downloaded:
            print(f"{entry.alias}: already present, {check} ({result.path})")
        else:
            resumed = f", resumed from byte {result.resumed_from}" if result.resumed_from else ""
            print(f"{entry.alias}: downloaded, {check}{resumed} ({result.path})")
    if failures:
        print(f"attnzoo fetch: {failures} of {len(entries)} failed", file=sys.stderr)
    return 1 if failures else 0


def _note_for(alias: str):
    """One-line progress notes (waiting, resuming) on stderr, prefixed with the variant."""
    return lambda message: print(f"attnzoo fetch: {alias}: {message}", file=sys.stderr)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value
