import math

import pytest
import torch
import torchvision

from model_zoo.engine.boxes import MAX_LOG_RATIO, batched_nms, decode_deltas, nms, rescale_boxes


def test_decode_zero_deltas_is_identity_and_centres_use_x1_plus_x2():
    anchors = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert torch.equal(decode_deltas(anchors, torch.zeros(1, 4), (1, 1, 1, 1), (100, 100)), anchors)


def test_decode_hand_computed():
    # centre (20, 40), size (20, 40); dx=0.5 → +10, dy=-0.25 → -10; dw=log 2 → width 40, dh=0 → 40.
    anchors = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    deltas = torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]])
    out = decode_deltas(anchors, deltas, (1, 1, 1, 1), (200, 200))
    assert torch.allclose(out, torch.tensor([[10.0, 10.0, 50.0, 50.0]]))


def test_decode_applies_stds_and_clips_to_w_h_not_w_minus_1():
    anchors = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    deltas = torch.tensor([[10.0, 0.0, 0.0, 0.0]])  # ×0.1 std → shift by one width
    out = decode_deltas(anchors, deltas, (0.1, 0.1, 0.2, 0.2), (80, 150))
    assert out.tolist() == [[100.0, 0.0, 150.0, 80.0]]


def test_decode_clamps_log_ratio_both_ways():
    anchors = torch.tensor([[5000.0, 5000.0, 5010.0, 5010.0]])
    out = decode_deltas(anchors, torch.tensor([[0.0, 0.0, 100.0, -100.0]]), (1, 1, 1, 1), (10_000, 10_000))
    assert (out[0, 2] - out[0, 0]).item() == pytest.approx(10 * math.exp(MAX_LOG_RATIO), rel=1e-5)
    assert (out[0, 3] - out[0, 1]).item() == pytest.approx(10 * math.exp(-MAX_LOG_RATIO), rel=1e-3)
    assert MAX_LOG_RATIO == pytest.approx(4.135166556742356)


def test_decode_class_specific_columns():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.zeros(1, 8)
    deltas[0, 4] = 1.0  # class 1 moves right by one width
    out = decode_deltas(anchors, deltas, (1, 1, 1, 1), (100, 100)).view(2, 4)
    assert out.tolist() == [[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]]


def test_nms_strict_threshold_and_score_order():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.5, 0.9, 0.7])
    # IoU of boxes 0 and 1 is exactly 0.5: suppressed only above 0.5.
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 0]
    assert nms(boxes, scores, 0.49).tolist() == [1, 2]


def test_batched_nms_keeps_overlaps_of_other_groups():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


def test_batched_nms_split_path_keeps_what_per_group_nms_keeps():
    torch.manual_seed(0)
    xy = torch.rand(12000, 2) * 500
    boxes = torch.cat([xy, xy + 20 + torch.rand(12000, 2) * 50], dim=1)
    scores = torch.rand(12000)
    groups = torch.randint(0, 80, (12000,))
    kept = batched_nms(boxes, scores, groups, 0.5)  # ≥ 10000 boxes: mmcv's per-group loop
    assert torch.all(scores[kept][:-1] >= scores[kept][1:])
    expected = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
    assert set(kept.tolist()) == set(expected.tolist())


def test_empty_inputs():
    empty = torch.zeros((0, 4))
    assert nms(empty, torch.zeros(0), 0.5).numel() == 0
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_rescale_multiplies_by_reciprocal_scale():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert torch.allclose(rescale_boxes(boxes, (2.0, 4.0)), torch.tensor([[5.0, 5.0, 15.0, 10.0]]))
