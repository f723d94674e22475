"""RetryPacing: a lone refused client is told the soonest it could get in; a crowd is spread over
the places the model frees, never past a request's budget; the crowd is forgotten once it is gone."""

from __future__ import annotations

import pytest

from app.core.retry_pacing import ARRIVALS_PER_PLACE, RetryPacing


def test_a_lone_refusal_is_told_the_soonest_it_could_get_in():
    pacing = RetryPacing(window_s=30)
    assert pacing.advise(2.5, 30.0, places_per_s=0.5, now=100.0) == 2.5
    assert pacing.advise(1.0, 30.0, places_per_s=None, now=100.0) == 1.0  # nothing measured: the soonest


def test_a_crowd_is_spread_over_the_places_the_model_frees_and_never_past_the_budget():
    pacing = RetryPacing(window_s=30)
    places_per_s = 0.5
    advice = [pacing.advise(2.0, 30.0, places_per_s, now=100.0 + i * 0.001) for i in range(640)]
    assert advice[0] == 2.0
    assert advice == sorted(advice)  # each refusal adds to the crowd the next one allows for
    assert advice[-1] == 30.0 and max(advice) == 30.0  # capped at the budget
    # below the cap, the advice is the crowd away over the pace clients should come back at
    away = pacing.clients_away(100.0 + 640 * 0.001)
    assert away > ARRIVALS_PER_PLACE * places_per_s * 30.0


def test_the_advice_follows_the_crowd_it_counts():
    pacing = RetryPacing(window_s=10)
    for i in range(50):
        pacing.advise(1.0, 10.0, places_per_s=1.0, now=i * 0.01)
    crowd = pacing.clients_away(0.5)
    expected = crowd / (ARRIVALS_PER_PLACE * 1.0)
    assert 1.0 < expected < 10.0
    assert pacing.advise(1.0, 10.0, places_per_s=1.0, now=0.5) == pytest.approx(expected)


def test_a_crowd_that_is_gone_is_forgotten():
    pacing = RetryPacing(window_s=5)
    for i in range(200):
        pacing.advise(1.0, 30.0, places_per_s=1.0, now=i * 0.01)
    assert pacing.advise(1.0, 30.0, places_per_s=1.0, now=2.0) > 1.0
    # ten windows later: e^-10 of the crowd is left, far under one client per place
    assert pacing.advise(1.0, 30.0, places_per_s=1.0, now=52.0) == 1.0


def test_the_window_must_be_positive():
    with pytest.raises(ValueError):
        RetryPacing(window_s=0)
