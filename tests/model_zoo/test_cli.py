"""The CLI's contracts: ATTNZOO_* defaults, one-line errors, and `attnzoo predict` on real files
(the small synthetic zoo of conftest.py, real images from tests/fixtures/images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_zoo.cli import build_parser, main
from model_zoo.weights import sha256_file

IMAGES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
GOOD = [str(IMAGES / "chelsea_small.png"), str(IMAGES / "coffee_landscape.png")]


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    for name in ("ATTNZOO_METAFILE", "ATTNZOO_WEIGHTS_DIR", "ATTNZOO_CPU_KERNELS", "ATTNZOO_KEEP_FREED_MEMORY"):
        monkeypatch.delenv(name, raising=False)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


def test_predict_and_eval_default_to_device_auto():
    parser = build_parser()
    assert parser.parse_args(["predict", "--variant", "attn0010", "a.jpg"]).device == "auto"
    assert parser.parse_args(["eval", "--coco-root", "coco"]).device == "auto"


@pytest.mark.parametrize("command", [["predict", "--variant", "attn0010", "a.jpg"], ["eval", "--coco-root", "coco"]])
def test_cpu_kernels_default_comes_from_the_environment(monkeypatch, command):
    assert build_parser().parse_args(command).cpu_kernels == "fast"
    monkeypatch.setenv("ATTNZOO_CPU_KERNELS", "portable")
    assert build_parser().parse_args(command).cpu_kernels == "portable"
    assert build_parser().parse_args([*command, "--cpu-kernels", "fast"]).cpu_kernels == "fast"  # the option wins


def test_bad_cpu_kernels_from_the_environment_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("ATTNZOO_CPU_KERNELS", "turbo")
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--variant", "attn0010", "a.jpg"])
    assert exit_.value.code == 2
    assert one_error_line(capsys) == (
        "attnzoo predict: error: argument --cpu-kernels: invalid value 'turbo' (from --cpu-kernels or "
        "ATTNZOO_CPU_KERNELS): expected fast or portable (see attnzoo predict --help)"
    )


def test_usage_mistake_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "a.jpg"])
    assert exit_.value.code == 2
    assert one_error_line(capsys) == (
        "attnzoo predict: error: the following arguments are required: --variant (see attnzoo predict --help)"
    )


def test_bad_keep_freed_memory_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("ATTNZOO_KEEP_FREED_MEMORY", "sometimes")
    assert main(["predict", "--variant", "attn0010", *GOOD]) == 2
    assert one_error_line(capsys) == (
        "attnzoo predict: error: invalid ATTNZOO_KEEP_FREED_MEMORY='sometimes': expected true or false"
    )


def test_synth_weights_help_has_a_description(capsys):
    with pytest.raises(SystemExit):
        main(["synth-weights", "--help"])
    assert "deterministic synthetic checkpoint" in " ".join(capsys.readouterr().out.split())


def test_predict_refuses_missing_images_before_loading_the_model(tmp_path, capsys):
    """The weights dir is empty, so a model load would fail naming the checkpoint: the error names
    the images instead, so nothing was loaded."""
    missing = [str(tmp_path / "nope.jpg"), str(tmp_path / "gone.png")]
    assert main(["predict", "--variant", "attn0010", "--weights-dir", str(tmp_path), GOOD[0], *missing]) == 2
    assert one_error_line(capsys) == (
        f"attnzoo predict: error: 2 image files not found or not readable: {missing[0]!r}, {missing[1]!r} "
        "(nothing was run)"
    )


def test_predict_prints_the_good_images_and_reports_an_undecodable_one(synthetic_zoo, tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    args = ["predict", "--variant", "attn0010", "--device", "cpu", *synthetic_zoo.cli_args()]

    assert main([*args, GOOD[0], str(broken), GOOD[1]]) == 1

    captured = capsys.readouterr()
    assert captured.err == (
        f"attnzoo predict: error: {str(broken)!r}: data is not an image OpenCV can decode (or it is truncated/corrupt)\n"
    )
    printed = json.loads(captured.out)
    assert [item["image"] for item in printed] == GOOD and all(item["detections"] for item in printed)

    # the same detections without the bad file, with the metafile and weights dir from the environment
    monkeypatch.setenv("ATTNZOO_METAFILE", str(synthetic_zoo.metafile))
    monkeypatch.setenv("ATTNZOO_WEIGHTS_DIR", str(synthetic_zoo.weights_dir))
    drawn = tmp_path / "drawn"
    assert main(["predict", "--variant", "attn0010", "--device", "cpu", "--draw", str(drawn), *GOOD]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    assert sorted(path.name for path in drawn.iterdir()) == ["chelsea_small.png", "coffee_landscape.png"]


def test_missing_registry_checkpoint_says_where_to_put_the_file(synthetic_zoo, tmp_path, capsys):
    args = ["predict", "--variant", "attn0010", "--metafile", str(synthetic_zoo.metafile), "--weights-dir", str(tmp_path)]
    assert main([*args, GOOD[0]]) == 2
    expected = tmp_path / synthetic_zoo.checkpoint.name
    assert one_error_line(capsys) == (
        f"attnzoo predict: error: checkpoint for 'attn0010' not found at {str(expected)!r}: run `attnzoo fetch "
        f"attn0010`, or download https://example.invalid/weights/{synthetic_zoo.checkpoint.name} and put the file "
        "there (keep its name); or add --demo to predict with a synthetic stand-in (its detections mean nothing)"
    )


def test_missing_checkpoint_option_names_the_file_only(synthetic_zoo, tmp_path, capsys):
    missing = tmp_path / "mine.pth"
    args = ["predict", "--variant", "attn0010", "--checkpoint", str(missing), *synthetic_zoo.cli_args(), GOOD[0]]
    assert main(args) == 2
    assert one_error_line(capsys) == f"attnzoo predict: error: checkpoint file {str(missing)!r} not found"


def test_hash_mismatch_names_no_verify_which_then_loads_the_file(synthetic_zoo, tmp_path, capsys):
    renamed = tmp_path / "mine-00000000.pth"
    shutil.copyfile(synthetic_zoo.checkpoint, renamed)
    args = ["predict", "--variant", "attn0010", "--device", "cpu", "--checkpoint", str(renamed), *synthetic_zoo.cli_args()]

    assert main([*args, GOOD[0]]) == 2
    sha256 = sha256_file(renamed)
    assert one_error_line(capsys) == (
        f"attnzoo predict: error: {str(renamed)!r}: sha256 {sha256[:16]}… does not start with '00000000' from its "
        "name; the file is corrupt or not the published one (delete it and run `attnzoo fetch`, or put the "
        "downloaded file there again; for a file of your own, skip the check with --no-verify)"
    )
    assert main([*args, "--no-verify", GOOD[0]]) == 0


def test_unwritable_draw_directory_is_one_line(synthetic_zoo, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output directory should go")
    args = ["predict", "--variant", "attn0010", "--device", "cpu", *synthetic_zoo.cli_args(), "--draw", str(blocker)]
    assert main([*args, GOOD[0]]) == 1
    assert one_error_line(capsys) == f"attnzoo predict: error: cannot write or read {str(blocker)!r}: File exists"
