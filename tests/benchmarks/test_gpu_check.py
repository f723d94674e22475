"""benchmarks/gpu_check.py end to end on CPU (``--device cpu --quick``), as CI runs it: every phase
runs, parity with the committed mmdet fixtures holds on the portable-on-CPU path, and the entry goes
to the file given, never to the repository's BENCHMARKS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import common, gpu_check  # noqa: E402


def test_quick_cpu_run_writes_every_phase(tmp_path: Path, capsys) -> None:
    log, out = tmp_path / "BENCHMARKS.md", tmp_path / "gpu_check.json"
    real_log = common.BENCHMARKS_FILE.read_text() if common.BENCHMARKS_FILE.exists() else None
    argv = ["--device", "cpu", "--quick", "--variants", "attn1111-dcn", "--threads", str(torch.get_num_threads()),
            "--benchmarks-file", str(log), "--json", str(out)]  # fmt: skip
    assert gpu_check.main(argv) == 0

    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["speed_scale"] == [512, 320]
    (parity_row,) = result["parity"]
    assert parity_row["images"] == parity_row["of"] == 2 and parity_row["problems"] == []
    assert parity_row["matched"] == parity_row["reference"] > 0
    (fps_row,) = result["fps"]
    assert fps_row["fps"] > 0 and fps_row["published_v100_fps"] == pytest.approx(12.7) and fps_row["peak_mib"] is None
    assert [(r["precision"], r["batch"]) for r in result["batched"]] == [("fp32", 2), ("bf16", 2)]
    matched, total = result["batched"][1]["fp32_kept"]
    assert total > 0 and 0 <= matched <= total
    assert result["compiled"] == []  # CUDA only
    assert result["seconds"] < 420

    entry = log.read_text()
    assert "- Command: `python benchmarks/gpu_check.py --device cpu --quick" in entry
    assert "| attn1111-dcn | small | 2/2 |" in entry and "Compiled: not run (no CUDA device)" in entry
    assert "NOT met" in entry  # a 2-core CPU is far from the GPU targets, and the entry says so
    assert (common.BENCHMARKS_FILE.read_text() if common.BENCHMARKS_FILE.exists() else None) == real_log
    assert "parity attn1111-dcn small" in capsys.readouterr().out  # progress lines


def test_cuda_without_a_gpu_is_one_clear_line(capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as refused:
        gpu_check.parse_args(["--device", "cuda"])
    assert refused.value.code == 2
    assert "no CUDA GPU here (use --device cpu --quick" in capsys.readouterr().err
