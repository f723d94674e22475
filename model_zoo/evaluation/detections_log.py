"""Append-only, crash-safe log of per-image detections: one JSON object per line (JSONL).

Line 1 is a header naming what produced the file (variant, checkpoint sha256); every further
line is one image's record with at least an ``image_id``. Each line is appended and made durable
with ``fsync`` before the next image starts (a write that fails, on a full disk say, is cut back
off), so a process killed at any moment leaves complete lines plus at most one torn last line.
Reopening the log drops that torn line and continues after the last complete one: this is how
``attnzoo eval`` resumes.

One process writes one log (a file lock enforces it); any process may read any log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from filelock import FileLock, Timeout

from model_zoo.atomic_files import fsync_dir, naming
from model_zoo.errors import AttnzooError

HEADER_KEY = "attnzoo_detections_log"
FORMAT_VERSION = 1


class DetectionsLogError(AttnzooError):
    """A log is corrupt, belongs to another run, or is being written by another process."""


def encode_line(record: Mapping[str, Any]) -> bytes:
    """The canonical bytes of one record: compact JSON, keys sorted, newline-terminated."""
    return (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


class DetectionsLog:
    """The log one process appends to (``path``, the JSONL file). Use :meth:`open`; it is a context
    manager. :func:`read_log` reads the records."""

    def __init__(self, path: Path, header: dict[str, Any], lock: FileLock) -> None:
        self.path = path
        self.header = header
        self._lock = lock
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND)

    @classmethod
    def open(cls, path: str | os.PathLike[str], header: Mapping[str, Any]) -> "DetectionsLog":
        """Open ``path`` for appending, creating it with ``header`` or resuming an existing file.

        A torn last line is cut off. Raises :class:`DetectionsLogError` if the file's header
        differs from ``header`` (another checkpoint or variant), a middle line is corrupt, or
        another process holds the log.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise DetectionsLogError(f"{str(path)!r} is being written by another process") from None
        try:
            wanted = {HEADER_KEY: FORMAT_VERSION, **header}
            found_header, _, good_bytes = _parse(path)
            if path.exists() and path.stat().st_size != good_bytes:
                os.truncate(path, good_bytes)  # drop the torn last line
            if found_header is None:
                _create(path, encode_line(wanted))
            elif found_header != wanted:
                raise DetectionsLogError(
                    f"{str(path)!r} was written by another run ({_describe(found_header)}; this run: "
                    f"{_describe(wanted)}); delete it or choose another output directory"
                )
            return cls(path, wanted, lock)
        except BaseException:
            lock.release()
            raise

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one image's record and fsync it; the record must carry an ``image_id``.

        Raises:
            OSError: naming the log (a full disk, say); the log is left as it was.
        """
        if "image_id" not in record:
            raise ValueError("a detections-log record needs an 'image_id'")
        if self._fd is None:
            raise ValueError(f"{str(self.path)!r} is closed")
        _append_whole(self._fd, encode_line(record), self.path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    def __enter__(self) -> "DetectionsLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_log(path: str | os.PathLike[str], header: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The complete image records of a log (read-only; a torn last line is ignored).

    If ``header`` is given the file's header must equal it (see :meth:`DetectionsLog.open`).
    A missing file has no records.
    """
    path = Path(path)
    found_header, records, _ = _parse(path)
    if header is not None and found_header is not None:
        wanted = {HEADER_KEY: FORMAT_VERSION, **header}
        if found_header != wanted:
            raise DetectionsLogError(
                f"{str(path)!r} was written by another run ({_describe(found_header)}; this run: "
                f"{_describe(wanted)}); delete it or choose another output directory"
            )
    return records


def merge_records(logs: Iterable[Iterable[Mapping[str, Any]]]) -> dict[int, dict[str, Any]]:
    """image_id → record over several logs; the first record of an image wins."""
    merged: dict[int, dict[str, Any]] = {}
    for records in logs:
        for record in records:
            merged.setdefault(int(record["image_id"]), dict(record))
    return merged


def _parse(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """(header, records, byte length of the complete lines) of ``path``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, [], 0
    except OSError as exc:
        raise DetectionsLogError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    header: dict[str, Any] | None = None
    records: list[dict[str, Any]] = []
    good_bytes = 0
    for number, line in enumerate(lines):
        if number == len(lines) - 1:
            break  # text after the last newline: empty, or a torn line
        is_last_complete = number == len(lines) - 2
        try:
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError("not an object")
        except ValueError:
            if is_last_complete:
                break  # garbage in the final line (a write cut short): treat as torn
            raise DetectionsLogError(
                f"{str(path)!r} line {number + 1} is corrupt; delete the file to start over"
            ) from None
        if number == 0:
            if value.get(HEADER_KEY) is None:
                raise DetectionsLogError(f"{str(path)!r} is not an attnzoo detections log (no header line)")
            header = value
        elif "image_id" not in value:
            raise DetectionsLogError(f"{str(path)!r} line {number + 1} has no image_id")
        else:
            records.append(value)
        good_bytes += len(line) + 1
    return header, records, good_bytes


def _create(path: Path, header_line: bytes) -> None:
    """Start the log with its header line, durably; on failure no file is left."""
    existed = path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _append_whole(fd, header_line, path)
    except OSError:
        if not existed:
            path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def _append_whole(fd: int, line: bytes, path: Path) -> None:
    """Append ``line`` to the file open as ``fd`` and fsync it, or (a failed write: a full disk)
    cut the file back to where it was and raise the OSError, naming ``path``."""
    end = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as exc:
        try:
            os.ftruncate(fd, end)
        except OSError:
            pass  # left for the next open, which drops a torn last line
        raise naming(exc, path) from None


def _describe(header: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(header.items()) if key != HEADER_KEY)
