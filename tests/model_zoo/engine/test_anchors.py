import torch

from model_zoo.engine.anchors import AnchorGenerator, base_anchors, grid_anchors


def test_base_anchors_stride_4_match_mmdet_values():
    anchors = base_anchors(4, (0.5, 1.0, 2.0), (8,))
    expected = torch.tensor(
        [[-22.627417, -11.313708, 22.627417, 11.313708], [-16.0, -16.0, 16.0, 16.0], [-11.313708, -22.627417, 11.313708, 22.627417]]
    )
    assert torch.allclose(anchors, expected, atol=1e-5)


def test_grid_order_is_y_then_x_then_anchor():
    base = base_anchors(8, (0.5, 1.0, 2.0), (8,))
    grid = grid_anchors(base, (2, 3), 8, "cpu")
    assert grid.shape == (2 * 3 * 3, 4)
    # location (y=1, x=2), anchor 1 → index (1 * 3 + 2) * 3 + 1, centred at (16, 8)
    assert grid[(1 * 3 + 2) * 3 + 1].tolist() == [16 - 32, 8 - 32, 16 + 32, 8 + 32]


def test_generator_counts_match_spec_example():
    # 640x480 → 1088x800 padded: 3·(200·272 + 100·136 + 50·68 + 25·34 + 13·17) = 217,413 anchors.
    generator = AnchorGenerator((4, 8, 16, 32, 64), (0.5, 1.0, 2.0), (8,))
    sizes = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    features = [torch.zeros(1, 1, h, w) for h, w in sizes]
    assert sum(level.shape[0] for level in generator(features)) == 217_413
