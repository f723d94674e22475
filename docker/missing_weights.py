"""Print the short names of the served variants whose checkpoint is not in the weights dir.

Used by ``docker/entrypoint.sh`` when ``ATTNZOO_FETCH_ON_START=1``; one name per line, nothing
when every checkpoint is present. Its arguments are the options the entrypoint passes to
``attnzoo serve`` (``--variants``, ``--metafile``, ``--weights-dir``), parsed by the real CLI
parser; what they leave unset comes from the service settings (``ATTNZOO_*`` environment).
Presence is all it checks: the service verifies each file's hash when it loads it.
"""

from __future__ import annotations

import sys
from typing import Sequence

from app.settings import Settings
from model_zoo import load_registry, weights_path_for
from model_zoo.cli import build_parser


def missing_variants(serve_args: Sequence[str]) -> list[str]:
    """Aliases of the variants ``attnzoo serve <serve_args>`` would serve whose file is absent."""
    args = build_parser().parse_args(["serve", *serve_args])
    settings = Settings()
    registry = load_registry(args.metafile or settings.metafile)
    weights_dir = args.weights_dir or settings.weights_dir
    missing = []
    for name in getattr(args, "variants", None) or settings.variants or registry.aliases:
        entry = registry.resolve(name)
        if entry.weights_url and not weights_path_for(entry, weights_dir).is_file():
            missing.append(entry.alias)
    return missing


if __name__ == "__main__":
    print("\n".join(missing_variants(sys.argv[1:])))
