"""`attnzoo predict --demo` (a synthetic stand-in where the official file is missing, made once in
<weights dir>/demo/, as `serve --demo` does) and `weights_source` in every image's JSON object;
the small synthetic zoo of conftest.py, real images, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_zoo.cli import main
from model_zoo.demo_weights import demo_weights_dir

IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
IMAGE = str(IMAGES / "chelsea_small.png")
SCHEMA = ["image", "weights_source", "width", "height", "detections"]


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    for name in ("ATTNZOO_METAFILE", "ATTNZOO_WEIGHTS_DIR", "ATTNZOO_CPU_KERNELS", "ATTNZOO_KEEP_FREED_MEMORY"):
        monkeypatch.delenv(name, raising=False)


def predict(capsys, *args: str) -> tuple[int, list[dict], str]:
    status = main(["predict", "--variant", "attn0010", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return status, (json.loads(captured.out) if captured.out else []), captured.err


def test_demo_predicts_with_a_stand_in_made_once_where_the_weights_are_missing(synthetic_zoo, tmp_path, capsys):
    weights = tmp_path / "weights"  # empty: no official file, and no network needed
    args = ["--metafile", str(synthetic_zoo.metafile), "--weights-dir", str(weights), "--demo", IMAGE]

    status, printed, err = predict(capsys, *args)

    assert (status, err) == (0, "")
    (item,) = printed
    assert list(item) == SCHEMA and item["image"] == IMAGE and item["weights_source"] == "synthetic"
    assert item["detections"]
    (stand_in,) = demo_weights_dir(weights).glob("attn0010-synthetic-*.pth")
    made = stand_in.stat().st_mtime_ns

    assert predict(capsys, *args)[1] == printed  # the cached stand-in, the same detections
    assert stand_in.stat().st_mtime_ns == made


def test_demo_uses_the_file_that_is_there(synthetic_zoo, capsys):
    status, printed, _ = predict(capsys, *synthetic_zoo.cli_args(), "--demo", IMAGE)

    assert status == 0
    # The zoo's own file (its metafile names it; it is not the published file): custom weights.
    assert [item["weights_source"] for item in printed] == ["custom"]
    assert not demo_weights_dir(synthetic_zoo.weights_dir).exists()


def test_without_demo_missing_weights_are_one_line_that_offers_demo(synthetic_zoo, tmp_path, capsys):
    status, printed, err = predict(capsys, "--metafile", str(synthetic_zoo.metafile), "--weights-dir", str(tmp_path), IMAGE)

    assert (status, printed) == (2, [])
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("attnzoo predict: error: checkpoint for 'attn0010' not found at ")
    assert "run `attnzoo fetch attn0010`" in err and err.rstrip().endswith(
        "or add --demo to predict with a synthetic stand-in (its detections mean nothing)"
    )
    assert not demo_weights_dir(tmp_path).exists()


def test_a_checkpoint_path_reports_its_weights_source(synthetic_zoo, capsys):
    status, printed, _ = predict(capsys, *synthetic_zoo.cli_args(), "--checkpoint", str(synthetic_zoo.checkpoint), IMAGE)
    assert status == 0 and [list(item) for item in printed] == [SCHEMA]
    assert printed[0]["weights_source"] == "custom"


def test_demo_and_checkpoint_together_are_a_usage_error(synthetic_zoo, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--variant", "attn0010", "--demo", "--checkpoint", str(synthetic_zoo.checkpoint), IMAGE])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "attnzoo predict: error: argument --checkpoint: not allowed with argument --demo (see attnzoo predict --help)\n"
