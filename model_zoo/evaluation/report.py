"""The job's outputs: ``table.json``, ``table.md`` and ``ap_vs_fps.png``, published beside measured.

``table.json`` is ``{"weights_source": {variant: source}, "rows": [...], ...}`` with one row per
variant (see :func:`make_row` for the fields; AP in percent, fps in images/s, memory in MB of 2**20
bytes); ``table.md`` opens with the same ``weights_source`` line, so synthetic stand-ins measured
with ``--demo`` cannot pass for the real weights. Rows of variants that this run did not evaluate
are kept from an existing ``table.json`` in the same directory, so variants can be evaluated one
run at a time. Files are replaced atomically (:func:`~model_zoo.atomic_files.write_atomic`): a
reader (the service's ``GET /models``) never sees half a file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from model_zoo.atomic_files import write_atomic
from model_zoo.registry import VariantEntry

TABLE_JSON = "table.json"
TABLE_MD = "table.md"
PLOT_PNG = "ap_vs_fps.png"

MEMORY_NOTE = (
    "The published Mem (GB) column is TRAINING memory (max torch.cuda.max_memory_allocated over "
    "8 V100 GPUs, 2 images per GPU, from the training log). Our peak memory is INFERENCE memory at "
    "batch 1 (torch.cuda.max_memory_allocated on CUDA, peak resident set size of the process on "
    "CPU). The two are not comparable."
)
SPEED_NOTE = (
    "fps is measured as mmdet measured the published table: batch 1, images in annotation-file "
    "order, the first 5 images of each process are warm-up, model time (normalise, pad, forward, "
    "post-process) between device synchronisations, images up to the 2000th. End-to-end fps adds "
    "reading, decoding and resizing the file. Published fps were taken on a V100 in FP32 with 2020 "
    "PyTorch; other hardware gives numbers that are comparable only in method, not in value."
)


@dataclass(frozen=True)
class ReportPaths:
    table_json: Path
    table_md: Path
    plot_png: Path


def make_row(
    entry: VariantEntry,
    *,
    ap: Mapping[str, float | None],
    images: int,
    fps: float | None,
    fps_end_to_end: float | None,
    timed_images: int,
    peak_memory_mb: float | None,
    memory_kind: str,
    device: str,
    world_size: int,
    checkpoint_sha256: str | None,
    endpoint: str | None = None,
    weights_source: str | None = None,
) -> dict[str, Any]:
    """One ``table.json`` row: measured figures of ``entry`` beside its published ones."""
    published = entry.published
    box_ap = _round(ap.get("box_ap"), 2)
    measured_fps = _round(fps, 2)
    return {
        "variant": entry.alias,
        "name": entry.name,
        "attention": entry.arch.attention_type,
        "dcn": entry.arch.with_dcn,
        "images": images,
        "device": device,
        "world_size": world_size,
        "box_ap": box_ap,
        "box_ap50": _round(ap.get("box_ap50"), 2),
        "box_ap75": _round(ap.get("box_ap75"), 2),
        "box_ap_s": _round(ap.get("box_ap_s"), 2),
        "box_ap_m": _round(ap.get("box_ap_m"), 2),
        "box_ap_l": _round(ap.get("box_ap_l"), 2),
        "fps": measured_fps,
        "fps_end_to_end": _round(fps_end_to_end, 2),
        "timed_images": timed_images,
        "peak_memory_mb": _round(peak_memory_mb, 1),
        "memory_kind": memory_kind,
        "published_box_ap": published.box_ap,
        "published_fps": published.fps,
        "published_train_memory_gb": published.train_memory_gb,
        "published_hardware": published.hardware,
        "delta_box_ap": _delta(box_ap, published.box_ap),
        "delta_fps": _delta(measured_fps, published.fps),
        "checkpoint_sha256": checkpoint_sha256,
        "endpoint": endpoint,  # the service that answered (None: a local model)
        "weights_source": weights_source,  # official | synthetic | custom (None: not reported)
    }


def merge_rows(
    previous: Iterable[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], order: Sequence[str]
) -> list[dict[str, Any]]:
    """New rows replace previous rows of the same variant; sorted by ``order`` (registry order)."""
    by_variant = {row["variant"]: dict(row) for row in previous if isinstance(row, Mapping) and "variant" in row}
    by_variant.update({row["variant"]: dict(row) for row in new})
    rank = {variant: position for position, variant in enumerate(order)}
    return sorted(by_variant.values(), key=lambda row: (rank.get(row["variant"], len(rank)), row["variant"]))


def read_rows(table_json: Path) -> list[dict[str, Any]]:
    """Rows of an existing ``table.json``; none if it is missing or unreadable."""
    try:
        rows = json.loads(table_json.read_text(encoding="utf-8")).get("rows", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [row for row in rows if isinstance(row, dict)]


def write_report(
    out_dir: Path, new_rows: Sequence[Mapping[str, Any]], *, order: Sequence[str], source: Mapping[str, Any]
) -> ReportPaths:
    """Write the three outputs into ``out_dir`` (keeping other variants' rows); ``source`` says
    where the measurement came from (e.g. the annotation file) and goes into ``table.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out_dir / TABLE_JSON, out_dir / TABLE_MD, out_dir / PLOT_PNG)
    rows = merge_rows(read_rows(paths.table_json), new_rows, order)
    document = {
        "weights_source": weights_sources(rows),
        "rows": rows,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source),
        "notes": {"memory": MEMORY_NOTE, "speed": SPEED_NOTE},
    }
    write_atomic(paths.table_json, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    write_atomic(paths.table_md, render_markdown(rows).encode("utf-8"))
    write_atomic(paths.plot_png, render_plot(rows))
    return paths


def weights_sources(rows: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """variant → where its weights came from (official, synthetic, custom; None: not reported)."""
    return {str(row.get("variant")): row.get("weights_source") for row in rows}


# the table's figures between the DCN and Images columns, in order: (row key, decimals); a delta is signed
NUMBER_COLUMNS = (
    ("published_box_ap", 1), ("box_ap", 1), ("delta_box_ap", 1), ("box_ap50", 1), ("box_ap75", 1), ("box_ap_s", 1),
    ("box_ap_m", 1), ("box_ap_l", 1), ("published_fps", 1), ("fps", 1), ("delta_fps", 1), ("fps_end_to_end", 1),
    ("published_train_memory_gb", 1), ("peak_memory_mb", 0),
)  # fmt: skip


def render_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The seed's table with our measurement beside each published column, and the deltas."""
    header = (
        "| Variant | Attention Component | DCN | box AP (published) | box AP (measured) | Δ box AP "
        "| AP50 | AP75 | APs | APm | APl "
        "| Inf time fps (published, V100) | fps (measured, model) | Δ fps | fps (measured, end to end) "
        "| Mem GB (published, TRAINING) | Peak MB (measured, INFERENCE) | Images | Device |"
    )
    lines = [
        "# Empirical Attention Faster R-CNN: published vs measured (COCO val2017, bbox)",
        "",
        _weights_line(rows),
        "",
        header,
        "|" + "|".join([":--"] + [":-:"] * (header.count("|") - 2)) + "|",
    ]
    for row in rows:
        figures = [_fmt(row.get(key), digits, signed=key.startswith("delta_")) for key, digits in NUMBER_COLUMNS]
        cells = [row.get("variant"), row.get("attention") or "-", "Y" if row.get("dcn") else "N", *figures, row.get("images"), _device_cell(row)]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    lines += [
        "",
        f"**Memory.** {MEMORY_NOTE}",
        "",
        f"**Speed.** {SPEED_NOTE} A dash means no image was timed (5 or fewer images in a process).",
        "",
        (
            "**Accuracy.** Box AP is pycocotools COCOeval (bbox) over the evaluated images, in percent; "
            "published figures are over all 5000 val2017 images, so a run with `--limit` is not "
            "comparable to them."
        ),
        "",
    ]
    return "\n".join(lines)


def _weights_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """``weights_source: attn0010 synthetic, ...``, with a warning when stand-ins were measured."""
    sources = weights_sources(rows)
    line = "weights_source: " + (", ".join(f"{variant} {source or 'not reported'}" for variant, source in sources.items()) or "—")
    if "synthetic" in sources.values():
        line += " (**synthetic**: stand-in weights from `--demo`; their detections and AP mean nothing)"
    return line


def render_plot(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """PNG bytes: box AP against fps, one published and one measured point per variant."""
    figure = Figure(figsize=(7.5, 5.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    series = (
        ("published", "published_fps", "published_box_ap", "o", "tab:blue", "published (V100, mmdet)"),
        ("measured", "fps", "box_ap", "s", "tab:orange", "measured (" + _devices(rows) + ")"),
    )
    for _, fps_key, ap_key, marker, color, label in series:
        points = [(row[fps_key], row[ap_key], row["variant"]) for row in rows if _plottable(row, fps_key, ap_key)]
        if not points:
            continue
        axes.scatter(
            [p[0] for p in points], [p[1] for p in points], marker=marker, color=color, s=50, label=label, zorder=3
        )
        for fps, ap, variant in points:
            axes.annotate(variant, (fps, ap), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for row in rows:  # link each variant's two points
        if _plottable(row, "published_fps", "published_box_ap") and _plottable(row, "fps", "box_ap"):
            axes.plot(
                [row["published_fps"], row["fps"]], [row["published_box_ap"], row["box_ap"]], ls=":", color="grey", lw=1
            )
    axes.set_xlabel("inference speed, batch 1 (images/s)")
    axes.set_ylabel("box AP, COCO val2017 (%)")
    axes.set_title("Empirical Attention Faster R-CNN: AP vs speed")
    axes.grid(True, alpha=0.3)
    axes.margins(x=0.15, y=0.1)  # room for the variant labels
    if axes.has_data():
        axes.legend(loc="best", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _plottable(row: Mapping[str, Any], fps_key: str, ap_key: str) -> bool:
    return isinstance(row.get(fps_key), (int, float)) and isinstance(row.get(ap_key), (int, float))


def _devices(rows: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(sorted({str(row.get("device")) for row in rows})) or "?"


def _device_cell(row: Mapping[str, Any]) -> str:
    world = row.get("world_size") or 1
    return f"{row.get('device')}" + (f" ×{world}" if world > 1 else "")


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _delta(measured: float | None, published: float | None) -> float | None:
    return None if measured is None or published is None else round(measured - published, 2)


def _fmt(value: Any, digits: int, *, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
