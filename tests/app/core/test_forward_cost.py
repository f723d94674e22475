"""ForwardCost: what a forward of n images costs, learned from measured forwards (hand-set figures)."""

from __future__ import annotations

import pytest

from app.core.forward_cost import ForwardCost


def test_nothing_is_known_before_the_first_forward():
    cost = ForwardCost()
    assert cost.seconds(1) is None and cost.lone_floor_s() is None and cost.spread_s(4) == 0.0


def test_one_size_measured_scales_proportionally_to_the_others():
    cost = ForwardCost()
    cost.observe(4, 2.0)
    assert cost.seconds(4) == pytest.approx(2.0)
    assert cost.seconds(1) == pytest.approx(0.5)  # not the batch of 4's time: a lone image costs a quarter
    assert cost.seconds(8) == pytest.approx(4.0)
    assert cost.lone_floor_s() is None  # no forward of one image yet


def test_a_fixed_cost_and_a_per_image_cost_are_told_apart():
    # a GPU-like batch: 0.1 s per forward plus 0.05 s per image
    cost = ForwardCost(smoothing=0.5)
    for size in (1, 4, 1, 4, 2, 4, 1, 3):
        cost.observe(size, 0.1 + 0.05 * size)
    for size in (1, 2, 3, 4, 8):
        assert cost.seconds(size) == pytest.approx(0.1 + 0.05 * size)
    before = cost.relative_spread
    cost.observe(2, 0.2)  # exactly as predicted: the spread only decays
    assert cost.relative_spread == pytest.approx(before * 0.5)


def test_fresh_measurements_replace_an_old_slow_one():
    cost = ForwardCost(smoothing=0.2)
    cost.observe(4, 20.0)  # one batch that ran slow (the machine was busy)
    for _ in range(20):
        cost.observe(1, 1.0)
    assert cost.seconds(1) == pytest.approx(1.0, rel=0.05)
    assert cost.seconds(4) < 8.0  # the slow batch has faded


def test_the_lone_floor_is_the_fastest_recent_forward_of_one_image():
    cost = ForwardCost(lone_history=3)
    for seconds in (2.0, 1.0, 3.0, 4.0, 5.0):  # 1.0 falls out of the last three
        cost.observe(1, seconds)
        cost.observe(4, 40.0)  # batches of several images do not count
    assert cost.lone_floor_s() == 3.0


def test_the_spread_is_relative_and_follows_the_deviations():
    cost = ForwardCost(smoothing=0.5)
    for seconds in (1.0, 1.5, 0.5, 1.5, 0.5):
        cost.observe(1, seconds)
    assert cost.relative_spread > 0.2
    assert cost.spread_s(4) == pytest.approx(cost.relative_spread * cost.seconds(4))


@pytest.mark.parametrize(("size", "seconds"), [(0, 1.0), (1, -0.5)])
def test_impossible_forwards_are_refused(size, seconds):
    with pytest.raises(ValueError):
        ForwardCost().observe(size, seconds)
