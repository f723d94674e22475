"""``attnzoo predict``: detections of images as one JSON list on stdout.

Every image path is checked before the model loads: a missing or unreadable file stops the
command at once with one line naming it. An image that exists but does not decode is reported on
stderr (one line) and left out of the JSON list; the others are still printed, and the exit
status is 1. Each image's object says where the weights came from (``weights_source``: official,
synthetic or custom); ``--demo`` loads a synthetic stand-in where the variant's official file is
missing, as ``attnzoo serve --demo`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_zoo.errors import AttnzooError, ImageDecodeError, WeightsMissingError

from .environment import add_cpu_kernels_option, keep_freed_memory_wanted

if TYPE_CHECKING:
    import numpy as np

    from model_zoo.predictor import DetectionResult
    from model_zoo.registry import VariantEntry


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "predict",
        parents=[common],
        help="detect objects in images and print one JSON list",
        description="Print one JSON list with an object per image (in the order given): image, weights_source "
        "(official, synthetic or custom), width, height and detections (bbox [x1, y1, x2, y2] in original pixels, "
        "score, label, category_id, class_name). "
        "Missing image files are refused before the model loads; an image that cannot be decoded is reported "
        "on stderr and left out, and the exit status is then 1.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, BMP, TIFF, ...)")
    parser.add_argument("--variant", required=True, help="short name (attn1111, ...) or full metafile name")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", default=None, help="checkpoint path (default: the registry's file in --weights-dir)")
    weights.add_argument(
        "--demo",
        action="store_true",
        help="where the variant's official file is missing, use its synthetic stand-in (made once, cached in "
        "<weights dir>/demo/, as `attnzoo serve --demo` does): to try it without downloads; the detections mean nothing",
    )
    parser.add_argument("--score-thr", type=float, default=0.05, help="keep detections scoring above this (default 0.05)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto (CUDA if available)")
    add_cpu_kernels_option(parser)
    parser.add_argument(
        "--no-verify", action="store_true", help="do not refuse a checkpoint whose sha256 does not match its file name"
    )
    parser.add_argument(
        "--draw", metavar="OUT_DIR", default=None, help="also write each image with its detections drawn to OUT_DIR (PNG)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_readable(args.images)
    from model_zoo.demo_weights import weights_source
    from model_zoo.images import load_image  # torch and OpenCV only once the arguments are known good
    from model_zoo.predictor import load_detector
    from model_zoo.registry import load_registry
    from model_zoo.runtime import keep_freed_memory

    if keep_freed_memory_wanted():
        keep_freed_memory()
    registry = load_registry(args.metafile)
    entry = registry.resolve(args.variant)
    checkpoint = Path(args.checkpoint) if args.checkpoint is not None else registry_weights(entry, args.weights_dir, demo=args.demo)
    detector = load_detector(
        entry.name,
        checkpoint,
        device=args.device,
        registry=registry,
        verify_hash=not args.no_verify,
        cpu_kernels=args.cpu_kernels,
    )
    source = weights_source(entry, checkpoint, sha256=detector.sha256)
    outputs: list[dict[str, Any]] = []
    drawn_names: set[str] = set()
    failures = 0
    for image in args.images:
        try:
            pixels = load_image(image)
            result = detector.predict(pixels, score_thr=args.score_thr)
        except ImageDecodeError as exc:
            failures += 1
            print(f"attnzoo predict: error: {exc}", file=sys.stderr)
            continue
        outputs.append({"image": image, "weights_source": source, **result.to_dict()})
        if args.draw:
            write_drawing(image, pixels, result, Path(args.draw), drawn_names)
    json.dump(outputs, sys.stdout)
    sys.stdout.write("\n")
    return 1 if failures else 0


def registry_weights(entry: VariantEntry, weights_dir: str | None, *, demo: bool) -> Path:
    """The variant's file in the weights dir, or with ``demo`` its stand-in where that file is missing.

    Raises:
        WeightsMissingError: the file is missing and ``demo`` is not set; the message also offers ``--demo``.
    """
    from model_zoo.demo_weights import weights_or_stand_in

    try:
        return weights_or_stand_in(entry, weights_dir, demo=demo)
    except WeightsMissingError as exc:
        raise WeightsMissingError(f"{exc}; or add --demo to predict with a synthetic stand-in (its detections mean nothing)") from None


def check_readable(images: list[str]) -> None:
    """Refuse, in one line, image paths that are not readable files (all of them named)."""
    bad = [image for image in images if not (os.path.isfile(image) and os.access(image, os.R_OK))]
    if bad:
        what = "image file not found or not readable" if len(bad) == 1 else f"{len(bad)} image files not found or not readable"
        raise AttnzooError(f"{what}: {', '.join(repr(image) for image in bad)} (nothing was run)")


def write_drawing(image_path: str, pixels: np.ndarray, result: DetectionResult, out_dir: Path, taken: set[str]) -> Path:
    """Write ``pixels`` with ``result`` drawn to ``out_dir/<stem>.png`` (``<stem>-2.png``, ... on clashes)."""
    import cv2

    from model_zoo.visualize import draw_detections

    out_dir.mkdir(parents=True, exist_ok=True)
    stem, index = Path(image_path).stem, 1
    name = f"{stem}.png"
    while name in taken:
        index += 1
        name = f"{stem}-{index}.png"
    taken.add(name)
    target = out_dir / name
    cv2.imwrite(str(target), draw_detections(pixels, result.detections))
    return target
