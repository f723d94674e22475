"""Synthetic stand-in weights for a demo without the official files, and where weights come from.

A stand-in is :mod:`model_zoo.synth`'s deterministic checkpoint of the variant (seed
:data:`DEMO_SEED`): the official keys and shapes, random but well-conditioned values, so every
command and the service run and draw boxes, which mean nothing. It is made once and cached as
``<weights dir>/demo/<alias>-synthetic-<first 8 hex of its sha256>.pth``: a sub-folder and a name
that cannot be taken for an official file, with a hash prefix that is checked like theirs.

:func:`weights_source` tells the three kinds apart:

- ``"official"``: the bundled metafile's file for the variant, its sha256 matching its name;
- ``"synthetic"``: a stand-in made here;
- ``"custom"``: anything else (a user metafile's own file, a ``--checkpoint`` path, a file
  loaded with the hash check switched off).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

from filelock import FileLock

from model_zoo.atomic_files import write_atomic
from model_zoo.errors import HashMismatchError, WeightsError
from model_zoo.registry import (
    BUNDLED_METAFILE,
    VariantEntry,
    default_weights_dir,
    existing_weights_path,
    load_registry,
    weights_path_for,
)
from model_zoo.weights import hash_prefix_of, sha256_file, verify_weights

WeightsSource = Literal["official", "synthetic", "custom"]

DEMO_SUBDIR = "demo"
DEMO_SEED = 0
SYNTHETIC_MARKER = "-synthetic"


def demo_weights_dir(weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<weights dir>/demo``: where stand-ins are cached (default weights dir: ``ATTNZOO_WEIGHTS_DIR``)."""
    return Path(weights_dir if weights_dir is not None else default_weights_dir()) / DEMO_SUBDIR


def ensure_demo_weights(entry: VariantEntry, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cached stand-in of ``entry``, made first if there is none (a forward of the model on
    one calibration image, see :mod:`model_zoo.synth`).

    Safe to call from several processes at once (a file lock); a cached file whose sha256 no
    longer matches its name is replaced.

    Raises:
        WeightsError: the demo folder cannot be created or written.
    """
    folder = demo_weights_dir(weights_dir)
    try:
        (folder / ".locks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the demo weights folder {str(folder)!r}: {exc.strerror or exc}") from None
    with FileLock(str(folder / ".locks" / f"{entry.alias}.lock")):
        cached = _cached_stand_in(entry, folder)
        if cached is not None:
            return cached
        return _write_stand_in(entry, folder)


def weights_or_stand_in(entry: VariantEntry, weights_dir: str | os.PathLike[str] | None = None, *, demo: bool) -> Path:
    """The variant's file in the weights dir; when it is missing and ``demo`` is set, its stand-in.

    A present file is returned even if it fails its hash check: that is for the loader to report,
    not to hide behind a stand-in.

    Raises:
        WeightsMissingError: the file is missing and ``demo`` is not set (the message says where
            to put it); a variant without a Weights URL has no file and gets a stand-in in demo mode.
    """
    has_file = entry.weights_filename is not None and weights_path_for(entry, weights_dir).is_file()
    if has_file or not demo:
        return existing_weights_path(entry, weights_dir)
    return ensure_demo_weights(entry, weights_dir)


def weights_source(entry: VariantEntry, path: str | os.PathLike[str], *, sha256: str | None = None) -> WeightsSource:
    """Where the weights file ``path`` loaded for ``entry`` comes from (see the module docstring).

    Args:
        sha256: the file's sha256 if already known (the loader computes it), else it is computed.
    """
    path = Path(path)
    if _is_stand_in_name(entry, path.name) and path.parent.name == DEMO_SUBDIR:
        return "synthetic"
    official = _official_filename(entry)
    if official is None or path.name != official:
        return "custom"
    expected = hash_prefix_of(official)
    digest = sha256 if sha256 is not None else sha256_file(path)
    return "official" if expected is not None and digest.startswith(expected) else "custom"


def _official_filename(entry: VariantEntry) -> str | None:
    """The bundled metafile's weights file name for ``entry`` (matched by full name), if any."""
    for bundled in load_registry(BUNDLED_METAFILE):
        if bundled.name == entry.name:
            return bundled.weights_filename
    return None


def _is_stand_in_name(entry: VariantEntry, name: str) -> bool:
    return re.fullmatch(re.escape(entry.alias + SYNTHETIC_MARKER) + r"-[0-9a-f]{8}\.pth", name) is not None


def _cached_stand_in(entry: VariantEntry, folder: Path) -> Path | None:
    for path in sorted(folder.glob(f"{entry.alias}{SYNTHETIC_MARKER}-*.pth")):
        if not _is_stand_in_name(entry, path.name):
            continue
        try:
            verify_weights(path, hash_prefix_of(path))
        except HashMismatchError:
            path.unlink()  # damaged: make it again
            continue
        return path
    return None


def _write_stand_in(entry: VariantEntry, folder: Path) -> Path:
    from model_zoo.synth import synthetic_checkpoint_file  # torch only when a stand-in is made

    payload = synthetic_checkpoint_file(entry.arch, DEMO_SEED, variant=entry.alias)
    target = folder / f"{entry.alias}{SYNTHETIC_MARKER}-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    try:
        write_atomic(target, payload)
    except OSError as exc:
        raise WeightsError(f"cannot write demo weights into {str(folder)!r}: {exc.strerror or exc}") from None
    return target
