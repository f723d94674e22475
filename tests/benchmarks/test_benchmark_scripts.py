"""Smoke tests of the benchmark scripts: each ``main`` runs on a tiny setting and its JSON output,
markdown table and BENCHMARKS.md entry have the promised structure.

With the reference venv present (``/tmp/refenv/venv``) the same runs include mmdet / mmcv, and
the attention test then also checks our block's output against mmcv's.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import attention_memory, common, speed  # noqa: E402
from model_zoo.predictor import load_detector  # noqa: E402

TINY = ["--scale", "256,160", "--repeats", "1", "--warmup", "0"]
HAS_REFERENCE = common.reference_python(None, "mmdet")[0] is not None  # mmdet implies mmcv
HAS_PRECISION = "precision" in inspect.signature(load_detector).parameters


def threads() -> list[str]:
    return ["--threads", str(torch.get_num_threads())]  # keep the session's setting


def test_speed_main_writes_table_json_and_entry(tmp_path: Path, capsys) -> None:
    out, log = tmp_path / "speed.json", tmp_path / "BENCHMARKS.md"
    precision = "fp32,bf16" if HAS_PRECISION else "fp32"
    argv = [*TINY, *threads(), "--variants", "attn0010", "--num-images", "1", "--precision", precision,
            "--no-mmdet", "--json", str(out), "--benchmarks-file", str(log)]  # fmt: skip
    assert speed.main(argv) == 0

    result = json.loads(out.read_text())
    assert [row["model"] for row in result["rows"]] == [speed.TORCHVISION] + ["attn0010"] * len(precision.split(","))
    for row in result["rows"]:
        assert row["e2e_s"] > 0 and row["model_s"] > 0
        (image,) = row["per_image"]
        assert (speed.IMAGES / image["image"]).is_file() and len(image["e2e_times"]) == len(image["model_times"]) == 1
    ours = result["rows"][1]
    assert ours["detections_per_image"] > 0  # the synthetic weights detect something
    if HAS_PRECISION:
        reproduced = result["rows"][2]["fp32_reproduced"]
        assert reproduced["fp32_detections"] == ours["detections_per_image"] and 0 <= reproduced["share"] <= 1

    entry = log.read_text()
    assert entry.startswith("# Benchmarks\n")
    assert "- Command: `python benchmarks/speed.py --scale 256,160" in entry
    assert f"torch threads: {torch.get_num_threads()}" in entry and "other processes may have been running" in entry
    table_row = next(line for line in entry.splitlines() if line.startswith("| attn0010 | fp32 |"))
    assert table_row.split(" | ")[4].endswith("×")  # e2e ÷ torchvision is filled in
    if HAS_PRECISION:
        bf16_row = next(line for line in entry.splitlines() if line.startswith("| attn0010 | bf16 |"))
        assert bf16_row.split(" | ")[9].endswith("×") and "%)" in bf16_row.split(" | ")[10]
    assert "| attn0010 | fp32 |" in capsys.readouterr().out


@pytest.mark.skipif(not HAS_REFERENCE, reason="needs the mmdet reference venv (/tmp/refenv/venv)")
def test_speed_main_times_mmdet_on_the_same_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    argv = [*TINY, *threads(), "--variants", "attn0010", "--num-images", "1", "--no-torchvision", "--no-append", "--json", str(out)]
    assert speed.main(argv) == 0
    ours, mmdet = json.loads(out.read_text())["rows"]
    assert (ours["model"], mmdet["model"]) == ("attn0010", "mmdet attn0010")
    assert mmdet["e2e_s"] > 0 and mmdet["model_s"] > 0
    # Same checkpoint file, same image: mmdet finds as many detections as we do.
    assert mmdet["detections_per_image"] == ours["detections_per_image"] > 0


def test_attention_memory_main_measures_our_block(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    assert attention_memory.main([*TINY, *threads(), "--no-mmcv", "--no-append", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["input_shape"] == [1, 256, 10, 16] and result["kv_hw"] == [5, 8]
    # The output tensor is allocated inside the forward, so the measured peak includes it.
    assert result["ours"]["peak_bytes"] >= result["output_bytes"] == 256 * 10 * 16 * 4
    assert result["energy_bytes"] == 8 * 160 * 40 * 4
    assert result["mmcv"] is None and result["ratio"] is None


@pytest.mark.skipif(not HAS_REFERENCE, reason="needs the mmcv reference venv (/tmp/refenv/venv)")
def test_attention_memory_against_mmcv(tmp_path: Path) -> None:
    out, log = tmp_path / "memory.json", tmp_path / "BENCHMARKS.md"
    assert attention_memory.main([*TINY, *threads(), "--json", str(out), "--benchmarks-file", str(log)]) == 0
    result = json.loads(out.read_text())
    assert result["mmcv"]["peak_bytes"] >= result["output_bytes"]
    assert result["ratio"] == pytest.approx(result["ours"]["peak_bytes"] / result["mmcv"]["peak_bytes"])
    assert result["rel_error"] <= attention_memory.TARGET_REL_ERROR
    assert result["branch_rel_error"] <= 1e-4
    entry = log.read_text()
    assert "- Outputs equal (max |Δ| / max |mmcv| ≤ 1e-05): yes" in entry and "| mmcv 2.1.0 GeneralizedAttention |" in entry


def test_forward_peak_bytes_counts_live_temporaries() -> None:
    class TwoTemporaries(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = x * 2  # 4 MB
            b = a + 1  # 4 MB, both alive
            return b.sum(0)  # a, b freed; the 4 KB output stays

    x = torch.ones(1000, 1000)
    peak = attention_memory.forward_peak_bytes(TwoTemporaries(), x)
    assert 8_000_000 <= peak < 8_100_000


class Recorder:
    """A contestant that answers instantly and records the order of calls; ``fail_at`` makes its
    n-th call raise (like an op without a bf16 kernel)."""

    def __init__(self, name: str, calls: list[str], fail_at: int | None = None) -> None:
        self.row, self.calls, self.fail_at = speed.ModelTiming(name), calls, fail_at

    def _call(self, what: str) -> float:
        self.calls.append(f"{self.row.model}:{what}")
        if self.fail_at is not None and sum(c.startswith(self.row.model) for c in self.calls) == self.fail_at:
            raise RuntimeError("deep inside\n\"deformable_im2col\" not implemented for 'BFloat16' | x")
        return 0.5 if what == "e2e" else 0.25

    def end_to_end(self, image) -> tuple[float, int]:
        return self._call("e2e"), 7

    def model_only(self, image) -> float:
        return self._call("model")


def test_interleaving_rotates_models_and_a_failure_is_a_row_not_a_lost_run() -> None:
    calls: list[str] = []
    a, b, broken = Recorder("a", calls), Recorder("b", calls), Recorder("broken", calls, fail_at=3)
    image = speed.BenchImage("x.jpg", Path("x.jpg"), b"")
    speed.time_interleaved([a, b, broken], [image], repeats=3, warmup=1, log=lambda line: None)

    # warm-up, then each round starts one model later; `broken` fails on its third call.
    assert calls[:3] == ["a:e2e", "b:e2e", "broken:e2e"]
    assert calls[3:9] == ["a:e2e", "b:e2e", "broken:e2e", "b:e2e", "broken:e2e", "a:e2e"]
    assert calls[9:] == ["a:e2e", "b:e2e"] + ["a:model", "b:model", "b:model", "a:model", "a:model", "b:model"]
    assert a.row.per_image == [speed.image_record("x.jpg", [0.5] * 3, [0.25] * 3, 7)]
    assert broken.row.error == "RuntimeError: \"deformable_im2col\" not implemented for 'BFloat16' / x"
    assert broken.row.per_image == [] and broken.row.e2e_s is None

    table = speed.results_table([a.row, broken.row])
    assert "| a | fp32 | 0.500 | 0.250 |" in table
    assert "| broken | fp32 | failed: RuntimeError: " in table and table.count("\n") == 4


def test_stage3_shape_matches_the_issue() -> None:
    assert attention_memory.stage3_shape((1333, 800), 256) == (1, 256, 50, 84)


def test_append_entry_keeps_earlier_entries(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    common.append_entry("## first\n", path)
    common.append_entry("## second\n", path)
    text = path.read_text()
    assert text.startswith("# Benchmarks\n") and text.index("## first") < text.index("## second")
    assert text.count("# Benchmarks") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scale", "wide"], "--scale expects LONG,SHORT"),
        (["--variants", "attn9999"], "unknown or empty --variants"),
        (["--mmdet-python", "/nonexistent/python"], "does not exist"),
    ],
)
def test_speed_bad_arguments_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        speed.parse_args(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(HAS_PRECISION, reason="the engine has a precision option")
def test_speed_bf16_without_engine_support_is_a_clear_error(capsys) -> None:
    with pytest.raises(SystemExit):
        speed.parse_args(["--precision", "bf16", "--no-mmdet"])
    assert "has no 'precision' option" in capsys.readouterr().err
