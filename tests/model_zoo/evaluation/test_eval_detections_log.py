"""The append-only detections log: durable lines, resume, torn last line, foreign logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_zoo.evaluation.detections_log import (
    DetectionsLog,
    DetectionsLogError,
    encode_line,
    merge_records,
    read_log,
)

HEADER = {"variant": "attn0010", "sha256": "ab" * 32}


def _record(image_id: int) -> dict:
    return {"image_id": image_id, "detections": [{"bbox": [1.5, 2.0, 3.0, 4.25], "score": 0.5, "category_id": 18}]}


def test_append_then_reopen_resumes(tmp_path: Path) -> None:
    path = tmp_path / "variant" / "log.rank0.jsonl"
    with DetectionsLog.open(path, HEADER) as log:
        assert read_log(log.path) == []
        log.append(_record(632))
        log.append(_record(139))
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    assert json.loads(lines[0])["variant"] == "attn0010"
    assert lines[1] == encode_line(_record(632))

    with DetectionsLog.open(path, HEADER) as log:
        assert [r["image_id"] for r in read_log(log.path)] == [632, 139]
        log.append(_record(885))
    assert [r["image_id"] for r in read_log(path, HEADER)] == [632, 139, 885]


def test_torn_last_line_is_dropped_and_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with DetectionsLog.open(path, HEADER) as log:
        log.append(_record(632))
    intact = path.read_bytes()
    torn = encode_line(_record(139))[:-9]  # a write cut short by a kill
    path.write_bytes(intact + torn)

    assert [r["image_id"] for r in read_log(path)] == [632]  # readers ignore it ...
    assert path.read_bytes() == intact + torn  # ... without touching the file

    with DetectionsLog.open(path, HEADER) as log:  # the owner cuts it off and goes on
        assert [r["image_id"] for r in read_log(log.path)] == [632]
        assert path.read_bytes() == intact
        log.append(_record(139))
    assert path.read_bytes() == intact + encode_line(_record(139))


def test_garbage_final_line_counts_as_torn(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with DetectionsLog.open(path, HEADER) as log:
        log.append(_record(632))
    intact = path.read_bytes()
    path.write_bytes(intact + b"\x00\x00\x00\n")  # zeros after a crash, newline included
    with DetectionsLog.open(path, HEADER) as log:
        assert [r["image_id"] for r in read_log(log.path)] == [632]
    assert path.read_bytes() == intact


def test_torn_header_starts_the_log_over(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"attnzoo_detections_log":1,"sha')
    with DetectionsLog.open(path, HEADER) as log:
        assert read_log(log.path) == []
        log.append(_record(632))
    assert [r["image_id"] for r in read_log(path, HEADER)] == [632]


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with DetectionsLog.open(path, HEADER) as log:
        log.append(_record(632))
        log.append(_record(139))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{broken\n" + lines[2])
    with pytest.raises(DetectionsLogError, match="line 2 is corrupt"):
        DetectionsLog.open(path, HEADER)


def test_log_of_another_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with DetectionsLog.open(path, HEADER) as log:
        log.append(_record(632))
    other = {**HEADER, "sha256": "cd" * 32}
    with pytest.raises(DetectionsLogError, match="written by another run") as caught:
        DetectionsLog.open(path, other)
    assert "delete it" in str(caught.value)
    with pytest.raises(DetectionsLogError):
        read_log(path, other)
    assert [r["image_id"] for r in read_log(path, HEADER)] == [632]  # untouched


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with DetectionsLog.open(path, HEADER), pytest.raises(DetectionsLogError, match="another process"):
        DetectionsLog.open(path, HEADER)
    with DetectionsLog.open(path, HEADER):  # released on close
        pass


def test_records_need_an_image_id(tmp_path: Path) -> None:
    with DetectionsLog.open(tmp_path / "log.jsonl", HEADER) as log, pytest.raises(ValueError):
        log.append({"detections": []})


def test_merge_keeps_the_first_record_of_an_image() -> None:
    merged = merge_records([[{"image_id": 1, "n": "a"}], [{"image_id": 2, "n": "b"}, {"image_id": 1, "n": "c"}]])
    assert merged == {1: {"image_id": 1, "n": "a"}, 2: {"image_id": 2, "n": "b"}}
