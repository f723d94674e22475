"""Files written whole or not at all.

Every file the model zoo writes in one piece (checkpoints, demo stand-ins, evaluation results and
reports) goes through :func:`write_atomic`: the bytes go to a hidden temporary file beside the
target, are flushed to disk, and the file is renamed over the target, so a reader sees the old
file or the new one, never half of one. When the write fails (a full disk, a read-only folder) the
temporary file is removed and the error names the target, not the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o644  # mkstemp's 0600 would hide the file from other users


def write_atomic(path: str | os.PathLike[str], payload: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` by a file holding ``payload`` (its folder must exist).

    Raises:
        OSError: with ``filename`` set to ``path``; nothing is left behind.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise naming(exc, path) from None
        raise
    fsync_dir(path.parent)


def naming(exc: OSError, path: str | os.PathLike[str]) -> OSError:
    """``exc`` as an error about ``path`` (a failed ``write`` names no file of its own)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``directory`` durable (POSIX); a no-op where directories
    cannot be opened or synced."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
