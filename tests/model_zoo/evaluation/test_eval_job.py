"""`attnzoo eval` end to end on the tiny COCO set with a synthetic attn0010 checkpoint (CPU).

One uninterrupted run over all six images is the reference. Against it: a run killed with
SIGKILL and started again, a ``--limit`` run, and a ``torchrun --nproc-per-node 1`` run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model_zoo.cli import main
from model_zoo.evaluation.coco_metrics import evaluate_bbox, load_ground_truth
from model_zoo.evaluation.detections_log import read_log
from model_zoo.weights import sha256_file

REPO = Path(__file__).resolve().parents[3]
VARIANT = "attn0010"


def _eval_args(tiny_coco, synthetic_zoo, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--coco-root",
        str(tiny_coco.root),
        "--out",
        str(out),
        "--device",
        "cpu",
        *synthetic_zoo.cli_args(),
        *extra,
    ]


def _subprocess_env() -> dict[str, str]:
    """This process's environment minus torchrun's variables, with its torch thread count:
    CPU results are bit-identical across processes only at the same number of threads."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def _records(out: Path) -> list[dict]:
    return [record for path in sorted((out / VARIANT).glob("log.rank*.jsonl")) for record in read_log(path)]


@pytest.fixture(scope="module")
def full_run(tiny_coco, synthetic_zoo, tmp_path_factory):
    """The uninterrupted reference run over all six images: (out dir, stdout, stderr)."""
    out = tmp_path_factory.mktemp("full") / "results"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(_eval_args(tiny_coco, synthetic_zoo, out)) == 0
    return out, stdout.getvalue(), stderr.getvalue()


def _expected_results(full_out: Path, image_ids: list[int]) -> bytes:
    """The reference run's results for the first images, serialised like the job does."""
    results = json.loads((full_out / VARIANT / "detections.bbox.json").read_text())
    return json.dumps([r for r in results if r["image_id"] in image_ids]).encode()


def test_full_run_writes_table_markdown_and_plot(full_run, tiny_coco) -> None:
    out, stdout, stderr = full_run
    table = json.loads((out / "table.json").read_text())
    (row,) = table["rows"]
    assert (
        row["variant"] == VARIANT
        and row["images"] == 6
        and row["device"] == f"cpu ({torch.get_num_threads()} threads)"
        and row["world_size"] == 1
    )
    assert (row["published_box_ap"], row["published_fps"], row["published_train_memory_gb"]) == (39.1, 18.4, 4.2)
    assert row["timed_images"] == 1  # six images, five of them warm-up
    assert row["fps"] > 0 and row["fps_end_to_end"] > 0 and row["fps_end_to_end"] <= row["fps"]
    assert row["memory_kind"] == "cpu_peak_rss" and row["peak_memory_mb"] > 100
    assert all(
        isinstance(row[k], float) for k in ("box_ap", "box_ap50", "box_ap75", "box_ap_s", "box_ap_m", "box_ap_l")
    )

    # the row's AP is COCOeval over the results file the job wrote
    results = json.loads((out / VARIANT / "detections.bbox.json").read_text())
    assert results and {r["image_id"] for r in results} <= set(tiny_coco.image_ids)
    ap = evaluate_bbox(load_ground_truth(tiny_coco.annotation_file), results, tiny_coco.image_ids).ap
    assert row["box_ap"] == pytest.approx(ap["box_ap"], abs=0.005)

    markdown = (out / "table.md").read_text()
    assert f"| {VARIANT} | 0010 | N | 39.1 |" in markdown and "TRAINING" in markdown and "INFERENCE" in markdown
    plot = cv2.imdecode(np.frombuffer((out / "ap_vs_fps.png").read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert plot is not None and plot.shape[2] == 3

    assert f"{VARIANT}: box AP" in stdout and "table.json" in stdout
    assert "6/6" in stderr  # the progress bar ran to the end


def test_logged_detections_are_the_detectors_output(full_run, tiny_coco, synthetic_zoo) -> None:
    """Records in annotation-file order; boxes converted from (x1, y1, x2, y2) to (x, y, w, h)."""
    from model_zoo.predictor import load_detector
    from model_zoo.registry import load_registry

    out, _, _ = full_run
    records = _records(out)
    assert [r["image_id"] for r in records] == tiny_coco.image_ids
    assert [r["warmup"] for r in records] == [True] * 5 + [False]

    detector = load_detector(
        VARIANT, registry=load_registry(synthetic_zoo.metafile), weights_dir=synthetic_zoo.weights_dir
    )
    expected = detector.predict(tiny_coco.root / "val2017" / tiny_coco.scene(885).file_name)
    logged = records[2]["detections"]
    assert len(logged) == len(expected.detections) > 0
    for entry, detection in zip(logged, expected.detections):
        x1, y1, x2, y2 = detection.bbox
        assert entry["bbox"] == [x1, y1, x2 - x1, y2 - y1]
        assert (entry["score"], entry["category_id"], entry["image_id"]) == (
            detection.score,
            detection.category_id,
            885,
        )


def test_killed_run_resumes_to_identical_detections(full_run, tiny_coco, synthetic_zoo, tmp_path) -> None:
    """SIGKILL after the first logged image, a torn line on top, then run again (--limit 3)."""
    out = tmp_path / "results"
    args = _eval_args(tiny_coco, synthetic_zoo, out, "--limit", "3", "--no-progress")
    log = out / VARIANT / "log.rank0.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "model_zoo", *args],
        cwd=REPO,
        env=_subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and log.read_bytes().count(b"\n") >= 2):  # header + one image
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no image logged within 120 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    done_before = [r["image_id"] for r in _records(out)]
    assert 1 <= len(done_before) < 3
    with open(log, "ab") as handle:  # as if the kill had cut a write short
        handle.write(b'{"image_id":139,"detections":[{"bbox":[1.0,')

    assert main(args) == 0

    records = _records(out)
    assert [r["image_id"] for r in records] == tiny_coco.image_ids[:3]  # each image once, in order
    assert [r["image_id"] for r in records[: len(done_before)]] == done_before  # kept, not redone
    resumed = (out / VARIANT / "detections.bbox.json").read_bytes()
    assert resumed == _expected_results(full_run[0], tiny_coco.image_ids[:3])
    (row,) = json.loads((out / "table.json").read_text())["rows"]
    assert row["images"] == 3  # --limit


def test_limit_evaluates_only_the_first_images(full_run, tiny_coco, synthetic_zoo, tmp_path) -> None:
    """--limit 2 over an output directory that already holds all six images: nothing is
    recomputed, and only the first two images are evaluated."""
    out = tmp_path / "results"
    shutil.copytree(full_run[0], out)
    (out / VARIANT / "detections.bbox.json").unlink()
    assert main(_eval_args(tiny_coco, synthetic_zoo, out, "--limit", "2", "--no-progress")) == 0
    assert len(_records(out)) == 6  # no new log lines
    assert (out / VARIANT / "detections.bbox.json").read_bytes() == _expected_results(
        full_run[0], tiny_coco.image_ids[:2]
    )
    (row,) = json.loads((out / "table.json").read_text())["rows"]
    assert row["images"] == 2
    ground_truth = load_ground_truth(tiny_coco.annotation_file)
    results = json.loads((out / VARIANT / "detections.bbox.json").read_text())
    assert row["box_ap"] == pytest.approx(
        evaluate_bbox(ground_truth, results, tiny_coco.image_ids[:2]).ap["box_ap"], abs=0.005
    )


def test_torchrun_one_process_on_cpu(full_run, tiny_coco, synthetic_zoo, tmp_path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    out = tmp_path / "results"
    args = _eval_args(tiny_coco, synthetic_zoo, out, "--limit", "2", "--no-progress")
    command = [torchrun, "--standalone", "--nproc-per-node", "1", "-m", "model_zoo", *args]
    process = subprocess.Popen(
        command, cwd=REPO, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:  # SIGTERM: torchrun passes it on to its worker (own session)
            process.terminate()
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    assert (out / VARIANT / "log.rank0.jsonl").is_file()
    (row,) = json.loads((out / "table.json").read_text())["rows"]
    assert (row["images"], row["world_size"]) == (2, 1)
    assert (out / VARIANT / "detections.bbox.json").read_bytes() == _expected_results(
        full_run[0], tiny_coco.image_ids[:2]
    )
    assert (out / "table.md").is_file() and (out / "ap_vs_fps.png").is_file()


def test_missing_weights_name_the_fetch_command(tiny_coco, synthetic_zoo, tmp_path, capsys) -> None:
    args = [
        "eval",
        "--coco-root",
        str(tiny_coco.root),
        "--metafile",
        str(synthetic_zoo.metafile),
        "--weights-dir",
        str(tmp_path),
    ]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("attnzoo eval: error:") and "`attnzoo fetch attn0010`" in error
    assert "Traceback" not in error


def test_missing_data_explains_the_layout(synthetic_zoo, tmp_path, capsys) -> None:
    out = tmp_path / "results"
    assert main(["eval", "--coco-root", str(tmp_path / "coco"), "--out", str(out), *synthetic_zoo.cli_args()]) == 2
    error = capsys.readouterr().err
    assert (
        "annotations/instances_val2017.json" in error
        and "val2017/*.jpg" in error
        and "https://cocodataset.org" in error
    )
    assert "Traceback" not in error and not out.exists()  # refused before any work


def test_weights_dir_defaults_to_the_environment(full_run, tiny_coco, synthetic_zoo, tmp_path, monkeypatch) -> None:
    """`attnzoo eval --coco-root DIR --out DIR` as the README writes it: no --weights-dir, no --metafile."""
    monkeypatch.setenv("ATTNZOO_METAFILE", str(synthetic_zoo.metafile))
    monkeypatch.setenv("ATTNZOO_WEIGHTS_DIR", str(synthetic_zoo.weights_dir))
    out = tmp_path / "results"
    assert main(["eval", "--coco-root", str(tiny_coco.root), "--out", str(out), "--limit", "1", "--no-progress"]) == 0
    assert (out / VARIANT / "detections.bbox.json").read_bytes() == _expected_results(full_run[0], tiny_coco.image_ids[:1])


def test_missing_weights_without_weights_dir_option_is_one_line(tiny_coco, synthetic_zoo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNZOO_WEIGHTS_DIR", str(tmp_path))
    args = ["eval", "--coco-root", str(tiny_coco.root), "--metafile", str(synthetic_zoo.metafile)]
    assert main(args) == 2
    error = capsys.readouterr().err
    expected = str(tmp_path / synthetic_zoo.checkpoint.name)
    assert error.startswith(f"attnzoo eval: error: checkpoint for 'attn0010' not found at {expected!r}")
    assert "`attnzoo fetch attn0010`" in error and error.count("\n") == 1 and "Traceback" not in error


def test_the_table_says_where_the_weights_came_from(full_run) -> None:
    out, stdout, _ = full_run
    table = json.loads((out / "table.json").read_text())
    assert table["weights_source"] == {VARIANT: "custom"} and table["rows"][0]["weights_source"] == "custom"
    assert (out / "table.md").read_text().splitlines()[2] == f"weights_source: {VARIANT} custom"
    assert "weights custom" in stdout


def test_demo_evaluates_stand_ins_where_the_weights_are_missing(tiny_coco, synthetic_zoo, tmp_path) -> None:
    out, weights_dir = tmp_path / "results", tmp_path / "weights"
    args = ["eval", "--coco-root", str(tiny_coco.root), "--out", str(out), "--device", "cpu", "--limit", "2", "--no-progress"]
    assert main([*args, "--metafile", str(synthetic_zoo.metafile), "--weights-dir", str(weights_dir), "--demo"]) == 0

    (stand_in,) = (weights_dir / "demo").glob(f"{VARIANT}-synthetic-*.pth")
    table = json.loads((out / "table.json").read_text())
    (row,) = table["rows"]
    assert table["weights_source"] == {VARIANT: "synthetic"} and row["weights_source"] == "synthetic"
    assert row["checkpoint_sha256"] == sha256_file(stand_in) and row["images"] == 2
    header = (out / "table.md").read_text().splitlines()[2]
    assert header.startswith(f"weights_source: {VARIANT} synthetic (**synthetic**: stand-in weights from `--demo`")
