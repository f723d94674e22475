"""The COCO layout check and the image list in annotation-file order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_zoo.evaluation.coco_data import CocoDataError, load_coco_split
from model_zoo.images import load_image


def test_lists_images_in_annotation_file_order(tiny_coco) -> None:
    split = load_coco_split(tiny_coco.root)
    assert split.image_ids == [632, 139, 885, 285, 724, 776]  # file order, not sorted
    assert split.total_images == 6
    assert [image.index for image in split.images] == list(range(6))
    first = split.images[0]
    assert first.path == tiny_coco.root / "val2017" / "000000000632.jpg"
    assert (first.width, first.height) == (200, 150)
    assert load_image(first.path).shape == (150, 200, 3)  # a real, decodable image


def test_limit_takes_the_first_images(tiny_coco) -> None:
    split = load_coco_split(tiny_coco.root, limit=2)
    assert split.image_ids == [632, 139]
    assert split.total_images == 6
    assert load_coco_split(tiny_coco.root, limit=100).image_ids == tiny_coco.image_ids


def _assert_explains_layout(message: str, root: Path) -> None:
    assert str(root / "annotations" / "instances_val2017.json") in message
    assert str(root / "val2017") + "/*.jpg" in message
    assert "https://cocodataset.org" in message


def test_missing_root_explains_layout_and_source(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(CocoDataError) as caught:
        load_coco_split(root)
    assert "is not a directory" in str(caught.value)
    _assert_explains_layout(str(caught.value), root)


def test_missing_annotation_file(fresh_coco_root: Path) -> None:
    (fresh_coco_root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(CocoDataError, match="missing annotation file") as caught:
        load_coco_split(fresh_coco_root)
    _assert_explains_layout(str(caught.value), fresh_coco_root)


def test_missing_image_dir(fresh_coco_root: Path) -> None:
    (fresh_coco_root / "val2017").rename(fresh_coco_root / "images")
    with pytest.raises(CocoDataError, match="missing image directory") as caught:
        load_coco_split(fresh_coco_root)
    _assert_explains_layout(str(caught.value), fresh_coco_root)


def test_missing_image_file_is_named(fresh_coco_root: Path) -> None:
    (fresh_coco_root / "val2017" / "000000000885.jpg").unlink()
    with pytest.raises(CocoDataError, match=r"1 of 6 images .* missing, first .*000000000885\.jpg"):
        load_coco_split(fresh_coco_root)
    # the images before it are still usable
    assert load_coco_split(fresh_coco_root, limit=2).image_ids == [632, 139]


def test_annotation_file_that_is_not_coco(fresh_coco_root: Path) -> None:
    annotation_file = fresh_coco_root / "annotations" / "instances_val2017.json"
    annotation_file.write_text("{not json")
    with pytest.raises(CocoDataError, match="not valid JSON"):
        load_coco_split(fresh_coco_root)
    annotation_file.write_text(json.dumps({"annotations": []}))
    with pytest.raises(CocoDataError, match="no 'images' list"):
        load_coco_split(fresh_coco_root)


def test_limit_must_be_positive(tiny_coco) -> None:
    with pytest.raises(CocoDataError, match="positive"):
        load_coco_split(tiny_coco.root, limit=0)
