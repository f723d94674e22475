"""benchmarks/speed.py --before: another checkout's engine timed in the same run (issue 13's
before/after speed comparison). Here the "other checkout" is this one, in a worker process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import speed  # noqa: E402


def test_before_rows_and_ratios(tmp_path: Path) -> None:
    out, log = tmp_path / "speed.json", tmp_path / "BENCHMARKS.md"
    argv = ["--scale", "256,160", "--repeats", "1", "--warmup", "0", "--threads", str(torch.get_num_threads()),
            "--variants", "attn0010", "--num-images", "1", "--no-mmdet", "--no-torchvision", "--before", str(REPO_ROOT),
            "--json", str(out), "--benchmarks-file", str(log)]  # fmt: skip
    assert speed.main(argv) == 0
    ours, before = json.loads(out.read_text())["rows"]
    assert (ours["model"], before["model"]) == ("attn0010", "before attn0010")
    assert before["e2e_s"] > 0 and before["model_s"] > 0
    assert before["detections_per_image"] == ours["detections_per_image"] > 0  # same engine, same checkpoint file
    entry = log.read_text()
    row = next(line for line in entry.splitlines() if line.startswith("| attn0010 | fp32 |")).split(" | ")
    assert row[11].endswith("×") and row[12].rstrip(" |").endswith("×")  # e2e ÷ before, model ÷ before
    assert f"before: the engine of {REPO_ROOT}" in entry


def test_before_without_an_engine_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        speed.parse_args(["--before", str(tmp_path), "--no-mmdet"])
    assert refused.value.code == 2
    assert "has no model_zoo/predictor.py" in capsys.readouterr().err
