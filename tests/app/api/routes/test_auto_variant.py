"""variant=auto: the rule (app/variant_choice.py) on hand-set latencies, then through a real server."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from app.core.variant_choice import LatencyWindow, choose_variant


@dataclass
class Candidate:
    """What the rule reads of a core: its variant, published box AP and latency window."""

    variant: str
    entry: SimpleNamespace
    latency: LatencyWindow


def candidate(variant: str, box_ap: float | None, latencies_s: list[float], window: int = 100) -> Candidate:
    latency = LatencyWindow(window)
    for seconds in latencies_s:
        latency.observe(seconds)
    return Candidate(variant, SimpleNamespace(published=SimpleNamespace(box_ap=box_ap)), latency)


def test_p95_is_the_nearest_rank_over_the_window():
    latency = LatencyWindow(20)
    assert latency.p95() is None
    for ms in range(1, 41):  # only the last 20 (21..40 ms) stay
        latency.observe(ms / 1000)
    assert latency.p95() == 0.039  # rank ceil(0.95 * 20) = 19 of 21..40


def test_the_most_accurate_fitting_variant_wins():
    cores = [candidate("fast", 39.1, [0.05]), candidate("accurate", 42.1, [0.2]), candidate("middle", 40.0, [0.1])]
    assert [choose_variant(cores, 0.25).served.variant, choose_variant(cores, 0.15).served.variant] == ["accurate", "middle"]
    choice = choose_variant(cores, 0.06)
    assert (choice.served.variant, choice.budget_met, choice.p95_s) == ("fast", True, 0.05)


def test_equal_accuracy_prefers_the_faster():
    cores = [candidate("slow", 42.0, [0.2]), candidate("quick", 42.0, [0.1])]
    assert choose_variant(cores, 1.0).served.variant == "quick"


def test_when_nothing_fits_the_fastest_answers_and_the_budget_is_not_met():
    cores = [candidate("a", 42.1, [0.3]), candidate("b", 39.1, [0.2])]
    choice = choose_variant(cores, 0.1)
    assert (choice.served.variant, choice.budget_met) == ("b", False)


def test_a_variant_counts_only_once_it_is_measured():
    cores = [candidate("unmeasured", 42.1, []), candidate("measured", 39.1, [0.5])]
    assert choose_variant(cores, 1.0).served.variant == "measured"
    nothing = choose_variant([candidate("x", 40.0, []), candidate("y", 42.0, [])], 1.0)
    assert (nothing.served.variant, nothing.budget_met, nothing.p95_s) == ("x", False, None)


def test_auto_on_a_real_server_follows_the_rule(client, live_server, jpeg, metric):
    pool = live_server.app.state.service.pool
    p95 = {core.variant: core.latency.p95() for core in pool.loaded()}
    assert all(value is not None for value in p95.values())  # measured by the warm-up at load
    generous = client.post("/detect", params={"variant": "auto", "budget_ms": 1e7}, content=jpeg)
    assert generous.status_code == 200, generous.text
    assert (generous.json()["variant"], generous.json()["budget_met"]) == ("attn1111", True)  # AP 40.0 > 39.1

    p95 = {core.variant: core.latency.p95() for core in pool.loaded()}
    fastest = min(p95, key=p95.__getitem__)
    before = metric(live_server.base_url, "attnzoo_auto_choices_total", variant=fastest, budget_met="false")
    hopeless = client.post("/detect", params={"variant": "auto", "budget_ms": 1e-3}, content=jpeg)
    assert hopeless.status_code == 200
    assert (hopeless.json()["variant"], hopeless.json()["budget_met"]) == (fastest, False)
    after = metric(live_server.base_url, "attnzoo_auto_choices_total", variant=fastest, budget_met="false")
    assert after == before + 1

    named = client.post("/detect", params={"variant": "attn0010"}, content=jpeg)
    assert named.json()["budget_met"] is None


@pytest.mark.parametrize("budget", ["0", "-5", "fast"])
def test_a_bad_budget_is_a_422(client, jpeg, budget):
    response = client.post("/detect", params={"variant": "auto", "budget_ms": budget}, content=jpeg)
    assert response.status_code == 422 and response.json()["error"] == "invalid_parameter"
