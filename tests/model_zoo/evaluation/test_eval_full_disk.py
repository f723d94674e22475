"""`attnzoo eval` where the disk fills up (``tests/model_zoo/full_disk.py``): one line naming the file
it could not write, exit 1, complete log lines only (the run resumes from them), no temporary file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from tests.model_zoo.full_disk import KINDS, FullDisk, full_disk

ROOM = 4096  # one tmpfs page: the log's header and a record or two
VARIANT = "attn0010"


@pytest.fixture(params=KINDS)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    yield from full_disk(request.param, tmp_path, ROOM)


def test_eval_stops_with_one_line_and_leaves_complete_lines(disk: FullDisk, tiny_coco, synthetic_zoo) -> None:
    out = disk.root / "results"
    args = ["eval", "--coco-root", str(tiny_coco.root), "--out", str(out), "--device", "cpu", "--no-progress"]
    done = disk.run(*args, *synthetic_zoo.cli_args())

    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    log = out / VARIANT / "log.rank0.jsonl"
    assert done.stderr == f"attnzoo eval: error: cannot write or read {str(log)!r}: {disk.error}\n"
    lines = log.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") and json.loads(line) for line in lines)  # no torn line
    assert 2 <= len(lines) < 1 + len(tiny_coco.image_ids)  # the header, then the images that fitted
    assert not [path for path in disk.files() if path.suffix == ".tmp"] and not (out / "table.json").exists()
