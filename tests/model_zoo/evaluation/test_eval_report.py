"""table.json rows, table.md (published beside measured, with the memory caveat) and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from model_zoo.evaluation.report import make_row, render_plot, write_report

REQUIRED = (
    "variant", "images", "device", "box_ap", "box_ap50", "box_ap75", "box_ap_s", "box_ap_m", "box_ap_l",
    "fps", "fps_end_to_end", "peak_memory_mb", "published_box_ap", "published_fps", "published_train_memory_gb",
)  # fmt: skip


def _row(registry, alias: str, *, box_ap: float, fps: float | None) -> dict:
    ap = {"box_ap": box_ap, "box_ap50": 60.123, "box_ap75": 42.0, "box_ap_s": 22.5, "box_ap_m": 43.0, "box_ap_l": None}
    return make_row(
        registry.resolve(alias),
        ap=ap,
        images=5000,
        fps=fps,
        fps_end_to_end=None if fps is None else fps / 2,
        timed_images=1995,
        peak_memory_mb=1234.56,
        memory_kind="cuda_max_memory_allocated",
        device="cuda (NVIDIA H100)",
        world_size=1,
        checkpoint_sha256="7cb0c14d" + "0" * 56,
    )


def test_row_has_the_issue_fields_and_deltas(registry) -> None:
    row = _row(registry, "attn0010", box_ap=39.256, fps=25.0)
    assert set(REQUIRED) <= set(row)
    assert row["variant"] == "attn0010" and row["attention"] == "0010" and row["dcn"] is False
    assert (row["published_box_ap"], row["published_fps"], row["published_train_memory_gb"]) == (39.1, 18.4, 4.2)
    assert row["box_ap"] == 39.26 and row["box_ap50"] == 60.12 and row["box_ap_l"] is None
    assert row["delta_box_ap"] == pytest.approx(0.16)
    assert row["delta_fps"] == pytest.approx(6.6)
    assert row["peak_memory_mb"] == 1234.6
    json.dumps(row, allow_nan=False)  # plain JSON


def test_write_report_writes_three_files_and_keeps_other_variants(tmp_path: Path, registry) -> None:
    order = registry.aliases
    first = write_report(
        tmp_path, [_row(registry, "attn1111-dcn", box_ap=41.0, fps=11.0)], order=order, source={"run": 1}
    )
    second = write_report(tmp_path, [_row(registry, "attn0010", box_ap=39.0, fps=None)], order=order, source={"run": 2})
    assert first == second

    table = json.loads(second.table_json.read_text())
    assert [row["variant"] for row in table["rows"]] == ["attn0010", "attn1111-dcn"]  # registry order
    assert table["source"] == {"run": 2}
    assert "TRAINING memory" in table["notes"]["memory"] and "INFERENCE memory" in table["notes"]["memory"]

    markdown = second.table_md.read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| attn")]
    assert len(lines) == 2
    cells = [cell.strip() for cell in lines[1].strip("|").split("|")]
    # variant, attention, dcn, AP pub, AP ours, ΔAP, … , fps pub, fps ours, Δfps, e2e, mem pub, mem ours
    assert cells[:6] == ["attn1111-dcn", "1111", "Y", "42.1", "41.0", "-1.1"]
    assert cells[11:17] == ["12.7", "11.0", "-1.7", "5.5", "8.0", "1235"]
    no_fps = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert no_fps[12] == "—"  # fps not measured is shown as a dash, not 0
    assert "Mem GB (published, TRAINING)" in markdown and "Peak MB (measured, INFERENCE)" in markdown
    assert "The two are not comparable" in markdown

    image = cv2.imdecode(np.frombuffer(second.plot_png.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (600, 900, 3)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_plot_shows_measured_points(registry) -> None:
    published_only = _row(registry, "attn0010", box_ap=39.0, fps=None)
    measured = _row(registry, "attn0010", box_ap=30.0, fps=5.0)
    decoded = [
        cv2.imdecode(np.frombuffer(render_plot([row]), np.uint8), cv2.IMREAD_COLOR)
        for row in (published_only, measured)
    ]
    orange = [
        np.count_nonzero((img[:, :, 2] > 200) & (img[:, :, 1] > 100) & (img[:, :, 1] < 160) & (img[:, :, 0] < 60))
        for img in decoded
    ]
    assert orange[0] == 0 and orange[1] > 20  # tab:orange square marker only where measured
