"""COCO val2017 on disk, in mmdet's layout, and the image list in annotation-file order.

Expected layout (``--coco-root DIR``)::

    DIR/annotations/instances_val2017.json
    DIR/val2017/000000000139.jpg ...

mmdet's test set iterates the images in the order of the annotation file's ``images`` list
(``COCO.get_img_ids()``) without filtering, and its benchmark takes the first 2000 of them; we
keep that order so that ``--limit N`` and the speed window select the same images as mmdet.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_zoo.errors import AttnzooError

ANNOTATION_FILE = Path("annotations") / "instances_val2017.json"
IMAGE_DIR = Path("val2017")
COCO_WEBSITE = "https://cocodataset.org"


class CocoDataError(AttnzooError):
    """The COCO root is missing, incomplete or not in the expected layout."""


@dataclass(frozen=True)
class CocoImage:
    """One image of the split: ``index`` is its position in the annotation file's list."""

    index: int
    image_id: int
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class CocoSplit:
    root: Path
    annotation_file: Path
    images: tuple[CocoImage, ...]  # annotation-file order, possibly cut by ``limit``
    total_images: int  # images listed in the annotation file

    @property
    def image_ids(self) -> list[int]:
        return [image.image_id for image in self.images]


def layout_help(root: str | os.PathLike[str]) -> str:
    """The sentence every data error ends with: the expected layout and where COCO comes from."""
    root = Path(root)
    return (
        f"expected {root / ANNOTATION_FILE} and {root / IMAGE_DIR}/*.jpg "
        f"(COCO 2017 val images and train/val annotations, published at {COCO_WEBSITE})"
    )


def load_coco_split(root: str | os.PathLike[str], limit: int | None = None) -> CocoSplit:
    """Check the layout under ``root`` and list the first ``limit`` images (all if ``None``).

    Raises:
        CocoDataError: a missing directory/file, an unreadable annotation file, or an image the
            annotation file lists that is not on disk (message includes the expected layout).
    """
    root = Path(root)
    if limit is not None and limit < 1:
        raise CocoDataError(f"limit must be a positive number of images, got {limit}")
    annotation_file = root / ANNOTATION_FILE
    image_dir = root / IMAGE_DIR
    if not root.is_dir():
        raise CocoDataError(f"COCO root {str(root)!r} is not a directory; {layout_help(root)}")
    for path, kind in ((annotation_file, "annotation file"), (image_dir, "image directory")):
        exists = path.is_file() if kind == "annotation file" else path.is_dir()
        if not exists:
            raise CocoDataError(f"missing {kind} {str(path)!r}; {layout_help(root)}")
    raw_images = _read_image_records(annotation_file, root)
    selected = raw_images if limit is None else raw_images[:limit]
    images = tuple(_to_image(index, record, image_dir, annotation_file) for index, record in enumerate(selected))
    missing = [image.path for image in images if not image.path.is_file()]
    if missing:
        raise CocoDataError(
            f"{len(missing)} of {len(images)} images listed in {str(annotation_file)!r} are missing, "
            f"first {str(missing[0])!r}; {layout_help(root)}"
        )
    return CocoSplit(root=root, annotation_file=annotation_file, images=images, total_images=len(raw_images))


def _read_image_records(annotation_file: Path, root: Path) -> list[Any]:
    try:
        with open(annotation_file, encoding="utf-8") as handle:
            dataset = json.load(handle)
    except OSError as exc:
        raise CocoDataError(f"cannot read {str(annotation_file)!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CocoDataError(f"{str(annotation_file)!r} is not valid JSON ({exc}); {layout_help(root)}") from None
    images = dataset.get("images") if isinstance(dataset, dict) else None
    if not isinstance(images, list) or not images:
        raise CocoDataError(
            f"{str(annotation_file)!r} has no 'images' list: not a COCO instances file; {layout_help(root)}"
        )
    return images


def _to_image(index: int, record: Any, image_dir: Path, annotation_file: Path) -> CocoImage:
    try:
        return CocoImage(
            index=index,
            image_id=int(record["id"]),
            path=image_dir / str(record["file_name"]),
            width=int(record["width"]),
            height=int(record["height"]),
        )
    except (TypeError, KeyError, ValueError):
        raise CocoDataError(
            f"{str(annotation_file)!r}: images[{index}] lacks an integer 'id', 'width', 'height' or a 'file_name'"
        ) from None
