"""Domain errors of the model zoo. Every message names the bad value and, where there are
choices, the valid ones; callers (CLI, service) print or map them without a traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence


class AttnzooError(Exception):
    """Base class of every error the model zoo raises on purpose."""


class UnknownVariantError(AttnzooError):
    def __init__(self, name: str, valid: Sequence[str]) -> None:
        super().__init__(f"unknown variant {name!r}; valid variants: {', '.join(valid)}")
        self.name = name
        self.valid = list(valid)


class MetafileError(AttnzooError):
    """The metafile (or an architecture file it names) cannot be used."""

    def __init__(self, source: str, message: str, *, entry: str | None = None, field: str | None = None) -> None:
        where = source
        if entry is not None:
            where += f", entry {entry!r}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.entry = entry
        self.field = field


class CheckpointError(AttnzooError):
    """A checkpoint file does not fit the architecture it was loaded for."""


class WeightsError(AttnzooError):
    """A weights file is missing, could not be downloaded, or failed verification."""


class WeightsMissingError(WeightsError):
    pass


class HashMismatchError(WeightsError):
    """A weights file's sha256 does not start with the hash prefix its name carries."""

    def __init__(self, path: str | os.PathLike[str], sha256: str, expected: str, *, message: str | None = None) -> None:
        super().__init__(
            message
            or f"{str(path)!r}: sha256 {sha256[:16]}… does not start with {expected!r} from its name; the file is "
            "corrupt or not the published one (delete it and run `attnzoo fetch`, or put the downloaded file "
            "there again; for a file of your own, skip the check with --no-verify)"
        )
        self.path = Path(path)
        self.sha256 = sha256
        self.expected = expected


class DownloadError(WeightsError):
    pass


class ImageDecodeError(AttnzooError):
    """Bytes or a path that do not decode to an image."""


class AttentionQueryError(AttnzooError):
    """A query point, stage, block or head that the variant's attention blocks cannot answer."""
