import numpy as np
import pytest
import torch

from model_zoo.attention_maps import attention_map
from model_zoo.detections import Detection
from model_zoo.engine.detector import build_detector
from model_zoo.errors import AttentionQueryError
from model_zoo.predictor import Detector
from model_zoo.registry import load_registry
from model_zoo.synth import calibration_image, synthetic_state_dict
from model_zoo.visualize import (
    MIN_TEXT_SCALE,
    TEXT_SCALE_PER_PIXEL,
    class_color,
    draw_detections,
    grid,
    line_width,
    place_labels,
    text_scale,
    titled,
)
from tests.conftest import at_scale


def detection(label: int, bbox, score: float = 0.9) -> Detection:
    return Detection(bbox=bbox, score=score, label=label, category_id=label + 1, class_name=f"class{label}")


def test_boxes_are_drawn_where_the_detections_say():
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    drawn = draw_detections(image, [detection(3, (50.0, 80.0, 150.0, 180.0))])
    color = np.array(class_color(3), dtype=np.uint8)
    assert line_width(image) == 1
    assert (drawn[130, 50] == color).all() and (drawn[130, 150] == color).all()  # left and right edges
    assert (drawn[180, 100] == color).all()  # bottom edge
    assert (drawn[130, 100] == 0).all()  # inside stays untouched
    assert (drawn[20, 250] == 0).all()  # far away stays untouched
    assert (image == 0).all()  # the input is not modified


def test_label_box_is_drawn_above_the_box_in_class_colour():
    image = np.full((200, 300, 3), 255, dtype=np.uint8)
    drawn = draw_detections(image, [detection(7, (60.0, 100.0, 200.0, 190.0))])
    (spot,) = place_labels(image, [detection(7, (60.0, 100.0, 200.0, 190.0))])
    assert (spot.text, spot.x, spot.y + spot.height) == ("class7 0.90", 60, 100)  # just above the top-left corner
    color = np.array(class_color(7), np.uint8)
    label = drawn[spot.y : spot.y + spot.height, spot.x : spot.x + spot.width]
    assert (label[0] == color).all() and (label[:, 0] == color).all()  # filled: its top row and left column
    assert (label != color).any(axis=-1).sum() > 20  # and the text drawn on it
    assert (drawn[: spot.y] == 255).all()  # nothing above it


def test_labels_scale_with_the_image():
    assert text_scale(np.zeros((120, 160, 3), np.uint8)) == MIN_TEXT_SCALE
    large = np.zeros((960, 1280, 3), np.uint8)
    assert text_scale(large) == pytest.approx(TEXT_SCALE_PER_PIXEL * np.sqrt(960 * 1280))
    assert text_scale(np.zeros((1920, 2560, 3), np.uint8)) == pytest.approx(2 * text_scale(large))
    sizes = {}  # image height → the label's (width, height) for the same box, relative to the image
    for height, width in ((120, 160), (480, 640), (960, 1280), (1920, 2560)):
        box = (width / 16, height / 3, width * 0.6, height * 0.8)
        (spot,) = place_labels(np.zeros((height, width, 3), np.uint8), [detection(1, box, 0.75)])
        sizes[height] = (spot.width, spot.height)
    # pinned: 7 px text on the smallest (the floor), then in proportion to the image
    assert sizes == {120: (58, 12), 480: (95, 18), 960: (188, 33), 1920: (373, 64)}


def crowd() -> list[Detection]:
    """Twelve detections of nearly the same place, scores 0.95, 0.90, …"""
    return [detection(label, (40.0 + 3 * label, 60.0 + 2 * label, 200.0, 180.0), 0.95 - 0.05 * label) for label in range(12)]


def test_labels_never_overlap_and_the_best_ones_are_kept():
    image = np.zeros((240, 320, 3), np.uint8)
    spots = place_labels(image, crowd())
    assert 1 < len(spots) < 12  # some fit (above, inside, below), the rest are left out
    assert [spot.index for spot in spots] == sorted(spot.index for spot in spots)  # best first
    assert spots[0].index == 0 and spots[0].y + spots[0].height == 60  # the best: above its box
    for i, first in enumerate(spots):
        assert 0 <= first.x and first.x + first.width <= 320 and 0 <= first.y and first.y + first.height <= 240
        for second in spots[i + 1 :]:
            assert not first.overlaps(second), (first, second)


def test_drawing_is_deterministic_whatever_the_input_order():
    image = np.full((240, 320, 3), 90, np.uint8)
    detections = crowd()
    drawn = draw_detections(image, detections)
    assert np.array_equal(drawn, draw_detections(image, detections))
    assert np.array_equal(drawn, draw_detections(image, list(reversed(detections))))  # distinct scores: order-free


def test_a_label_wider_than_the_image_is_left_out():
    image = np.zeros((40, 30, 3), np.uint8)
    assert place_labels(image, [detection(2, (2.0, 10.0, 20.0, 30.0))]) == []
    drawn = draw_detections(image, [detection(2, (2.0, 10.0, 20.0, 30.0))])
    assert (drawn[20, 2] == np.array(class_color(2), np.uint8)).all()  # the box is still drawn


def test_colours_are_stable_and_distinct_per_class():
    assert class_color(5) == class_color(5)
    assert len({class_color(label) for label in range(80)}) == 80


def test_line_width_scales_with_the_image():
    assert line_width(np.zeros((2000, 3000, 3), np.uint8)) == 10


def test_grid_and_titles_place_panels():
    panels = [titled(np.full((50, 80, 3), value, np.uint8), f"panel {value}") for value in (10, 20, 30)]
    canvas = grid(panels, columns=2, gap=4)
    assert canvas.shape[1] == 2 * 80 + 3 * 4
    assert (canvas[-10, 10] == 30).all()  # third panel, second row, first column


@pytest.fixture(scope="module", params=["attn1111", "attn0010"])
def detector(request):
    entry = at_scale(load_registry().resolve(request.param))
    model = build_detector(entry.arch)
    model.load_state_dict(synthetic_state_dict(entry.arch, seed=5))
    return Detector(entry, model, device=torch.device("cpu"))


def test_attention_map_weights_sum_to_one_and_cover_the_key_grid(detector):
    image = calibration_image(21)  # 640x427 → 480x320 at the test scale, padded 480x320
    detections = detector.predict(image)
    amap = attention_map(detector, image, stage=3, block=1, x=100, y=50)
    # stage 3 feature map of a 320x480 input is 20x30; keys at stride 2: 10x15
    assert amap.weights.shape == (8, 10, 15)
    assert np.allclose(amap.weights.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert amap.key_centers_x.shape == (15,) and amap.key_centers_y.shape == (10,)
    other = attention_map(detector, image, stage=4, block=2, x=600, y=400)
    assert other.weights.shape == (8, 5, 8)  # 512 channels, still 8 heads
    moved = attention_map(detector, image, stage=3, block=1, x=600, y=400)
    assert amap.query_independent == (detector.entry.arch.attention_type == "0010")
    assert np.allclose(amap.weights, moved.weights, atol=1e-7) == amap.query_independent
    assert detector.predict(image) == detections  # the maps leave the model's detections as they were


def test_attention_map_rejects_bad_queries(detector):
    image = calibration_image(22)
    with pytest.raises(AttentionQueryError, match="stage 2"):
        attention_map(detector, image, stage=2, block=0, x=1, y=1)
    with pytest.raises(AttentionQueryError, match="block must be in 0..5"):
        attention_map(detector, image, stage=3, block=6, x=1, y=1)
    with pytest.raises(AttentionQueryError, match="outside"):
        attention_map(detector, image, stage=3, block=0, x=640, y=1)
