"""`attnzoo models [--json]`: the registry with its published figures and local weights state."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from model_zoo.registry import Registry, VariantEntry, default_weights_dir, load_registry, weights_path_for
from model_zoo.weights import WeightsStatus, weights_status


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "models",
        parents=[common],
        help="list the variants: published box AP / fps / memory and whether weights are present",
        description="List the registry's variants with their published figures and whether each "
        "checkpoint is in the weights dir and matches the sha256 prefix of its name.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registry = load_registry(args.metafile)
    weights_dir = Path(args.weights_dir) if args.weights_dir else default_weights_dir()
    rows = model_rows(registry, weights_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        print(f"\nweights dir: {weights_dir}; published fps = 1000 / inference ms on the hardware column")
    return 0


def model_rows(registry: Registry, weights_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One JSON-ready dict per entry, with the stable keys of ``attnzoo models --json``."""
    return [_row(entry, _status(entry, weights_dir)) for entry in registry]


def _status(entry: VariantEntry, weights_dir: str | os.PathLike[str]) -> WeightsStatus:
    if entry.weights_url is None:
        return WeightsStatus(path=Path(weights_dir), present=False, verified=None, sha256=None)
    return weights_status(weights_path_for(entry, weights_dir))


def _row(entry: VariantEntry, status: WeightsStatus) -> dict[str, Any]:
    published = entry.published
    return {
        "name": entry.name,
        "alias": entry.alias,
        "attention": entry.arch.attention_type,
        "dcn": entry.arch.with_dcn,
        "published_box_ap": published.box_ap,
        "published_fps": published.fps,
        "published_train_memory_gb": published.train_memory_gb,
        "hardware": published.hardware,
        "weights_url": entry.weights_url,
        "weights_file": str(status.path) if entry.weights_url else None,
        "weights_present": status.present,
        "weights_verified": status.verified,
    }


_COLUMNS = (
    ("NAME", "name"),
    ("ALIAS", "alias"),
    ("BOX AP", "published_box_ap"),
    ("FPS", "published_fps"),
    ("TRAIN MEM GB", "published_train_memory_gb"),
    ("HARDWARE", "hardware"),
    ("WEIGHTS", None),
)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table; missing figures print as ``-``."""
    cells = [[title for title, _ in _COLUMNS]]
    for row in rows:
        cells.append([_weights_cell(row) if key is None else _cell(row[key]) for _, key in _COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _weights_cell(row: dict[str, Any]) -> str:
    if row["weights_url"] is None:
        return "no URL"
    if not row["weights_present"]:
        return "missing"
    return {True: "present, sha256 ok", False: "present, sha256 MISMATCH", None: "present (no hash in name)"}[
        row["weights_verified"]
    ]
