"""Writers on a full disk (``full_disk.py``): one line naming the file and the OS's reason, a non-zero
exit, and no partial file left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from model_zoo.atomic_files import write_atomic
from tests.model_zoo.full_disk import KINDS, FullDisk, full_disk

ROOM = 64 * 1024  # far less than any checkpoint


@pytest.fixture(params=KINDS)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    yield from full_disk(request.param, tmp_path, ROOM)


def _one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr.strip()


def test_synth_weights_out_leaves_nothing(disk: FullDisk) -> None:
    target = disk.root / "attn0010-synthetic.pth"
    done = disk.run("synth-weights", "--variant", "attn0010", "--out", str(target))
    assert done.returncode == 1
    assert _one_line(done.stderr) == f"attnzoo synth-weights: error: cannot write or read {str(target)!r}: {disk.error}"
    assert disk.files() == []


def test_synth_weights_stand_in_leaves_nothing(disk: FullDisk) -> None:
    weights_dir = disk.root / "weights"
    done = disk.run("synth-weights", "--variant", "attn0010", "--weights-dir", str(weights_dir))
    assert done.returncode == 2
    demo = weights_dir / "demo"
    assert _one_line(done.stderr) == f"attnzoo synth-weights: error: cannot write demo weights into {str(demo)!r}: {disk.error}"
    assert [path.relative_to(demo) for path in disk.files()] == [Path(".locks/attn0010.lock")]  # the lock, empty


def test_fetch_deletes_the_part_it_cannot_write(disk: FullDisk, weights_server, checkpoints, make_metafile) -> None:
    url = weights_server.add("mine", checkpoints["a"])
    metafile = make_metafile({"mine": url})
    done = disk.run("fetch", "mine", "--metafile", str(metafile), "--weights-dir", str(disk.root), "--no-progress")
    assert done.returncode == 1
    target = disk.root / url.rsplit("/", 1)[1]
    assert done.stderr.splitlines() == [
        f"attnzoo fetch: mine: error: cannot write {str(target)!r}: {disk.error} (nothing was kept)",
        "attnzoo fetch: 1 of 1 failed",
    ]
    assert [path.name for path in disk.files()] == [f"{target.name}.lock"]  # the lock, empty


def test_write_atomic_keeps_the_old_file_and_names_the_target(tmp_path: Path) -> None:
    """In process, on a tmpfs only (a file size limit would apply to the test process itself)."""
    for disk in full_disk("tmpfs", tmp_path, ROOM):
        target = disk.root / "table.json"
        target.write_bytes(b"old")
        with pytest.raises(OSError) as failure:
            write_atomic(target, b"x" * (2 * ROOM))
        assert (failure.value.filename, failure.value.strerror) == (str(target), disk.error)
        assert disk.files() == [target] and target.read_bytes() == b"old"
