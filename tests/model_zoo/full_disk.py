"""Commands run where the disk fills up: for real, two ways.

- ``tmpfs``: a small tmpfs mounted in the test's folder and filled up to ``room`` free bytes; a
  write past them fails with ENOSPC, "No space left on device". Needs root (mount); skipped else.
- ``file size limit``: the command runs under ``RLIMIT_FSIZE = room`` (Python ignores SIGXFSZ), so
  a write that takes a file past ``room`` bytes fails with EFBIG, "File too large". Runs anywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
# `python -m model_zoo ARGS` under RLIMIT_FSIZE = argv[1] bytes (0: no limit), set in the process itself.
_LIMITED = """
import resource, runpy, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["attnzoo", *sys.argv[2:]]
runpy.run_module("model_zoo", run_name="__main__", alter_sys=True)
"""
KINDS = ("tmpfs", "file size limit")
TMPFS_BYTES = 4 * 2**20


@dataclass(frozen=True)
class FullDisk:
    kind: str
    root: Path  # where the command writes
    room: int  # bytes it may write: free space (tmpfs) or the size of each file (file size limit)
    error: str  # the OS's words for the failed write

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``python -m model_zoo ARGS`` with the disk full past ``room`` bytes."""
        limit = 0 if self.kind == "tmpfs" else self.room
        return subprocess.run(
            [sys.executable, "-c", _LIMITED, str(limit), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )

    def files(self) -> list[Path]:
        """Every regular file under ``root`` but the filler."""
        return sorted(path for path in self.root.rglob("*") if path.is_file() and path.name != FILLER)


FILLER = ".filler"


def full_disk(kind: str, folder: Path, room: int) -> Iterator[FullDisk]:
    """A :class:`FullDisk` of ``kind`` in ``folder`` with ``room`` bytes to write (a fixture's body)."""
    root = folder / "disk"
    root.mkdir()
    if kind == "file size limit":
        yield FullDisk(kind, root, room, "File too large")
        return
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(root)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        free = shutil.disk_usage(root).free
        with open(root / FILLER, "wb") as filler:
            filler.write(b"\0" * (free - room))
        yield FullDisk(kind, root, room, "No space left on device")
    finally:
        subprocess.run(["umount", "--lazy", str(root)], check=False)
