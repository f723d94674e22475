"""COCOeval (bbox) wrapper, checked against AP values computed by hand.

pycocotools' AP per category and IoU threshold is the mean, over the 101 recall thresholds
0.00, 0.01, …, 1.00, of the best precision reached at a recall at least that high (0 where the
recall is never reached). With all true positives ranked before any false positive, precision is
1 up to the final recall R and there is no point beyond it, so AP = #{r in thresholds: r <= R} / 101.
For the dog category (3 boxes) with one box missed, R = 2/3 and 67 thresholds (0.00…0.66) qualify.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from model_zoo.evaluation.coco_metrics import evaluate_bbox, load_ground_truth, to_coco_result

PARTIAL = 67 / 101  # AP of a category whose recall stops at 2/3 (see module docstring)
FIELDS = ("box_ap", "box_ap50", "box_ap75", "box_ap_s", "box_ap_m", "box_ap_l")


@pytest.fixture(scope="module")
def ground_truth(tiny_coco):
    return load_ground_truth(tiny_coco.annotation_file)


def test_ground_truth_as_detections_scores_100(tiny_coco, ground_truth) -> None:
    metrics = evaluate_bbox(ground_truth, tiny_coco.ground_truth_results(), tiny_coco.image_ids)
    assert metrics.ap == {name: pytest.approx(100.0) for name in FIELDS}
    assert "Average Precision" in metrics.summary and "maxDets=1000" in metrics.summary


def test_shifted_box_matches_only_up_to_its_iou(tiny_coco, ground_truth) -> None:
    """The large dog (100×100 in image 885) detected 16 px to the right, ranked last.

    IoU = (100-16)·100 / (2·100·100 - 84·100) = 84/116 = 0.724: a match at the IoU thresholds
    0.50…0.70 (5 of 10), a false positive (and a missed dog) at 0.75…0.95.
    """
    results = tiny_coco.ground_truth_results()
    shifted = next(r for r in results if r["image_id"] == 885 and r["category_id"] == 18)
    shifted["bbox"] = [shifted["bbox"][0] + 16, *shifted["bbox"][1:]]
    shifted["score"] = 0.5
    ap = evaluate_bbox(ground_truth, results, tiny_coco.image_ids).ap

    dog = (5 * 1.0 + 5 * PARTIAL) / 10  # over the 10 IoU thresholds
    assert ap["box_ap"] == pytest.approx(100 * (1 + 1 + dog) / 3)  # 94.39
    assert ap["box_ap50"] == pytest.approx(100.0)
    assert ap["box_ap75"] == pytest.approx(100 * (1 + 1 + PARTIAL) / 3)  # 88.78
    assert ap["box_ap_s"] == pytest.approx(100.0)
    assert ap["box_ap_m"] == pytest.approx(100.0)
    # in the large range the shifted dog is the only dog: matched at 5 thresholds, else nothing
    assert ap["box_ap_l"] == pytest.approx(100 * (1 + 1 + 0.5) / 3)  # 83.33


def test_missed_small_box(tiny_coco, ground_truth) -> None:
    """Drop the small person (image 885): person recall 2/3 at every IoU threshold, and no
    small person is found at all."""
    results = [r for r in tiny_coco.ground_truth_results() if not (r["image_id"] == 885 and r["category_id"] == 1)]
    ap = evaluate_bbox(ground_truth, results, tiny_coco.image_ids).ap
    assert ap["box_ap"] == pytest.approx(100 * (PARTIAL + 1 + 1) / 3)  # 88.78
    assert ap["box_ap50"] == pytest.approx(100 * (PARTIAL + 1 + 1) / 3)
    assert ap["box_ap_s"] == pytest.approx(100 * (0 + 1 + 1) / 3)  # 66.67
    assert ap["box_ap_m"] == pytest.approx(100.0)
    assert ap["box_ap_l"] == pytest.approx(100.0)


def test_only_listed_images_are_evaluated(tiny_coco, ground_truth) -> None:
    """Evaluating image 632 alone: its three boxes are large person, medium car, small dog."""
    results = [r for r in tiny_coco.ground_truth_results() if r["image_id"] == 632]
    assert evaluate_bbox(ground_truth, results, [632]).ap["box_ap"] == pytest.approx(100.0)
    # the same detections judged against all images miss two thirds of every category
    ap_all = evaluate_bbox(ground_truth, results, tiny_coco.image_ids).ap["box_ap"]
    assert ap_all == pytest.approx(100 * 34 / 101)  # recall 1/3 → thresholds 0.00…0.33


def test_no_detections_scores_zero_and_none_without_ground_truth(tiny_coco, ground_truth) -> None:
    ap = evaluate_bbox(ground_truth, [], tiny_coco.image_ids).ap
    assert ap == {name: 0.0 for name in FIELDS}
    # images without objects: COCOeval reports -1 (no ground truth) → None
    empty_images = [285, 724]
    assert evaluate_bbox(ground_truth, [], empty_images).ap == {name: None for name in FIELDS}


@dataclass(frozen=True)
class _Det:
    bbox: tuple[float, float, float, float]
    score: float
    category_id: int


def test_to_coco_result_converts_corners_to_width_height() -> None:
    result = to_coco_result(139, _Det((10.5, 20.0, 30.25, 60.0), 0.875, 18))
    assert result == {"image_id": 139, "bbox": [10.5, 20.0, 19.75, 40.0], "score": 0.875, "category_id": 18}
