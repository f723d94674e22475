"""``attnzoo predict``: detections of images as one JSON list on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "predict",
        parents=[common],
        help="detect objects in images and print one JSON list",
        description="Print one JSON list with an object per image (in the order given): image, width, "
        "height and detections (bbox [x1, y1, x2, y2] in original pixels, score, label, category_id, class_name).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, BMP, TIFF, ...)")
    parser.add_argument("--variant", required=True, help="short name (attn1111, ...) or full metafile name")
    parser.add_argument("--checkpoint", default=None, help="checkpoint path (default: the registry's file in --weights-dir)")
    parser.add_argument("--score-thr", type=float, default=0.05, help="keep detections scoring above this (default 0.05)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to run (default cpu)")
    parser.add_argument(
        "--no-verify", action="store_true", help="do not refuse a checkpoint whose sha256 does not match its file name"
    )
    parser.add_argument(
        "--draw", metavar="OUT_DIR", default=None, help="also write each image with its detections drawn to OUT_DIR (PNG)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_zoo.predictor import load_detector
    from model_zoo.registry import load_registry
    from model_zoo.runtime import keep_freed_memory
    from model_zoo.visualize import draw_detections  # noqa: F401  (fail early if drawing is unavailable)

    keep_freed_memory()
    detector = load_detector(
        args.variant,
        args.checkpoint,
        device=args.device,
        registry=load_registry(args.metafile),
        weights_dir=args.weights_dir,
        verify_hash=not args.no_verify,
    )
    outputs = []
    drawn_names: set[str] = set()
    for image in args.images:
        result = detector.predict(image, score_thr=args.score_thr)
        outputs.append({"image": image, **result.to_dict()})
        if args.draw:
            write_drawing(image, result, Path(args.draw), drawn_names)
    json.dump(outputs, sys.stdout)
    sys.stdout.write("\n")
    return 0


def write_drawing(image_path: str, result, out_dir: Path, taken: set[str]) -> Path:
    """Write ``image_path`` with ``result`` drawn to ``out_dir/<stem>.png`` (``<stem>-2.png``, ... on clashes)."""
    import cv2

    from model_zoo.images import load_image
    from model_zoo.visualize import draw_detections

    out_dir.mkdir(parents=True, exist_ok=True)
    stem, index = Path(image_path).stem, 1
    name = f"{stem}.png"
    while name in taken:
        index += 1
        name = f"{stem}-{index}.png"
    taken.add(name)
    target = out_dir / name
    cv2.imwrite(str(target), draw_detections(load_image(image_path), result.detections))
    return target
