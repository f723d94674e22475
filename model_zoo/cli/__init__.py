"""The ``attnzoo`` command: thin argparse subcommands over the model_zoo library.

Each subcommand lives in its own module with ``register(subparsers, common)``; ``common`` is the
parent parser carrying ``--metafile`` and ``--weights-dir``, which every command accepts.
Commands of other installed packages join through the ``attnzoo.commands`` entry-point group
(``attnzoo serve`` comes from ``app``, which model_zoo never imports by name).
Every error is one line on stderr with a non-zero exit status, never a traceback: domain errors
and usage mistakes exit with 2, an operating-system error (a file that cannot be written) with 1.
``attnzoo --version`` (``-V``) prints the build (:func:`model_zoo.version.build_info`).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from typing import NoReturn, Sequence

from model_zoo.errors import AttnzooError
from model_zoo.version import build_info

from . import eval as eval_command
from . import fetch, models, predict, synth_weights

SUBCOMMANDS = (predict, synth_weights, fetch, models, eval_command)
COMMANDS_ENTRY_POINTS = "attnzoo.commands"  # modules with register(subparsers, common)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``attnzoo predict: error: ...``), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class VersionAction(argparse.Action):
    """``--version``: ``attnzoo 0.1.0 (git 1a2b3c4)`` on stdout, exit 0.

    argparse's own ``version`` action takes the text when the parser is built; this one looks the
    build up only when asked, so other commands do not run git.
    """

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option_string: str | None = None) -> None:
        print(version_line())
        parser.exit(0)


def version_line() -> str:
    return f"attnzoo {build_info()}"


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
    parser = OneLineErrorParser(
        prog="attnzoo",
        description="Empirical Attention Faster R-CNN model zoo: predict, fetch weights, evaluate, serve.",
    )
    parser.add_argument(
        "-V", "--version", action=VersionAction, help="print the version (and the git commit of a checkout) and exit"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers, common)
    for entry_point in sorted(entry_points(group=COMMANDS_ENTRY_POINTS), key=lambda e: e.name):
        entry_point.load().register(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] in (["-V"], ["--version"]):  # answered before the subcommands, and what they import, are loaded
        print(version_line())
        return 0
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
    except OSError as exc:  # e.g. an output directory that cannot be written
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        print(f"attnzoo {args.command}: error: cannot write or read{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"attnzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
