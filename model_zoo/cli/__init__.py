"""The ``attnzoo`` command: thin argparse subcommands over the model_zoo library.

Each subcommand lives in its own module with ``register(subparsers, common)``; ``common`` is the
parent parser carrying ``--metafile`` and ``--weights-dir``, which every command accepts.
Commands of other installed packages join through the ``attnzoo.commands`` entry-point group
(``attnzoo serve`` comes from ``app``, which model_zoo never imports by name).
Domain errors are printed as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import Sequence

from model_zoo.errors import AttnzooError

from . import eval as eval_command
from . import fetch, models, predict, synth_weights

SUBCOMMANDS = (predict, synth_weights, fetch, models, eval_command)
COMMANDS_ENTRY_POINTS = "attnzoo.commands"  # modules with register(subparsers, common)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--metafile",
        default=None,
        help="OpenMMLab-schema metafile to use instead of the bundled one (env ATTNZOO_METAFILE)",
    )
    common.add_argument(
        "--weights-dir",
        default=None,
        help="directory holding checkpoints under their URL file names (env ATTNZOO_WEIGHTS_DIR, default weights/)",
    )
    parser = argparse.ArgumentParser(
        prog="attnzoo",
        description="Empirical Attention Faster R-CNN model zoo: predict, fetch weights, evaluate, serve.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers, common)
    for entry_point in sorted(entry_points(group=COMMANDS_ENTRY_POINTS), key=lambda e: e.name):
        entry_point.load().register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AttnzooError as exc:
        print(f"attnzoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `attnzoo models --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"attnzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
