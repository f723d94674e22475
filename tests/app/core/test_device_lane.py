"""DeviceLane: forwards of every model on a device take turns, oldest work first, and each model's
admission sees the others' work (plain Python batch functions)."""

from __future__ import annotations

import threading
import time

import pytest

from app.core.batching import MicroBatcher
from app.core.device_lane import DeviceLane


class Held:
    """A batch function that records when it runs (and its batches) and waits at a gate."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name, self.log = name, log
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.log.append((self.name, "start"))
        self.batches.append(list(items))
        self.entered.set()
        assert self.gate.wait(10)
        self.log.append((self.name, "end"))
        return items


def test_turns_are_taken_one_at_a_time_in_the_order_asked():
    lane = DeviceLane("cpu")
    order: list[int] = []
    inside = threading.Lock()

    def forward(index: int) -> None:
        with lane.turn(index, None):
            assert inside.acquire(blocking=False), "two forwards at once"
            order.append(index)
            time.sleep(0.01)
            inside.release()

    first = threading.Thread(target=forward, args=(0,))
    with lane.turn("holder", None):  # everyone queues behind this turn, in the order they start
        first.start()
        threads = [first]
        for index in range(1, 5):
            while len(lane._turns) < index:  # the previous thread waits for its turn
                time.sleep(0.001)
            threads.append(threading.Thread(target=forward, args=(index,)))
            threads[-1].start()
        while len(lane._turns) < 5:
            time.sleep(0.001)
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_two_models_on_one_device_never_run_at_once_and_see_each_others_queue():
    lane = DeviceLane("cpu")
    log: list[tuple[str, str]] = []
    a_fn, b_fn = Held("a", log), Held("b", log)
    a = MicroBatcher(a_fn, max_batch=1, max_wait_s=0, queue_size=8, name="a", lane=lane)
    b = MicroBatcher(b_fn, max_batch=1, max_wait_s=0, queue_size=8, name="b", lane=lane)
    try:
        a_fn.gate.set()
        b_fn.gate.set()
        far = time.monotonic() + 60
        a.submit(0, far).result(10)  # both measured: 1 forward each
        b.submit(0, far).result(10)
        a_fn.gate.clear()
        a_fn.entered.clear()
        running = a.submit(1, far)
        assert a_fn.entered.wait(10)  # a's forward holds the device
        mark = len(log)
        queued_a = [a.submit(i, far) for i in (2, 3)]
        alone = b.predicted_wait_s(position=0)
        assert alone is not None and alone >= a.queued_work_s()  # b waits for a's queue as well as its own batch
        b_future = b.submit(9, far)
        time.sleep(0.2)
        assert ("b", "start") not in log[mark:]  # b's forward waits for its turn
        a_fn.gate.set()
        assert [f.result(10).result for f in (running, *queued_a, b_future)] == [1, 2, 3, 9]
    finally:
        a.close(5)
        b.close(5)
    starts_and_ends = [event for _, event in log]
    assert all(starts_and_ends[i] == "start" and starts_and_ends[i + 1] == "end" for i in range(0, len(starts_and_ends), 2))


def test_older_work_goes_first_whichever_model_asked_first():
    lane = DeviceLane("cpu")
    log: list[tuple[str, str]] = []
    a_fn, b_fn = Held("a", log), Held("b", log)
    a = MicroBatcher(a_fn, max_batch=1, max_wait_s=0, queue_size=8, name="a", lane=lane)
    b = MicroBatcher(b_fn, max_batch=1, max_wait_s=0, queue_size=8, name="b", lane=lane)
    try:
        far = time.monotonic() + 60
        a_fn.entered.clear()
        running = a.submit(1, far)
        assert a_fn.entered.wait(10)  # a's first forward holds the device
        # queued while it runs, oldest first: a's two, then b's two (b's worker asks for its turn
        # at once, a's only once its running forward has ended)
        futures = [a.submit(2, far), a.submit(3, far), b.submit(10, far), b.submit(11, far)]
        while b.qsize() > 1:  # b's worker has formed its first batch and waits for the device
            time.sleep(0.001)
        time.sleep(0.05)
        b_fn.gate.set()
        a_fn.gate.set()
        assert [f.result(10).result for f in (running, *futures)] == [1, 2, 3, 10, 11]
    finally:
        a_fn.gate.set()
        b_fn.gate.set()
        a.close(5)
        b.close(5)
    # admission charged each of these for the work queued before it: none ran behind later work
    assert [name for name, event in log if event == "start"] == ["a", "a", "a", "b", "b"]


def test_a_batch_takes_no_companion_younger_than_another_models_waiting_work():
    lane = DeviceLane("cpu")
    log: list[tuple[str, str]] = []
    a_fn, b_fn = Held("a", log), Held("b", log)
    a = MicroBatcher(a_fn, max_batch=4, max_wait_s=0, queue_size=8, name="a", lane=lane)
    b = MicroBatcher(b_fn, max_batch=4, max_wait_s=0, queue_size=8, name="b", lane=lane)
    try:
        far = time.monotonic() + 60
        running = a.submit(1, far)
        assert a_fn.entered.wait(10)
        first_b = b.submit(10, far)
        while len(lane._turns) < 1:  # b's worker waits for the device with its batch of one
            time.sleep(0.001)
        # a's request is older than b's next two: b's next batch may not carry the younger one
        # past it (admission counted a's request behind b's work of that moment only)
        futures = [a.submit(2, far), b.submit(11, far), b.submit(12, far)]
        time.sleep(0.05)
        a_fn.gate.set()
        b_fn.gate.set()
        assert [f.result(10).result for f in (running, first_b, *futures)] == [1, 10, 2, 11, 12]
    finally:
        a_fn.gate.set()
        b_fn.gate.set()
        a.close(5)
        b.close(5)
    assert [name for name, event in log if event == "start"] == ["a", "b", "a", "b", "b"]
    assert (a_fn.batches, b_fn.batches) == ([[1], [2]], [[10], [11], [12]])


def test_the_running_forward_is_charged_once_for_what_is_left_of_it():
    lane = DeviceLane("cpu")
    release = threading.Event()
    started = threading.Event()

    def slow(items: list[int]) -> list[int]:
        started.set()
        release.wait(10)
        return items

    # every batch counted as its time plus 2 × 50%: twice its time
    batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0, queue_size=4, name="m", lane=lane, spread_allowance=2, min_spread=0.5)
    try:
        release.set()
        batcher.submit(0, time.monotonic() + 60).result(10)
        one = batcher.cost.seconds(1)
        release.clear()
        started.clear()
        running = batcher.submit(1, time.monotonic() + 60)
        assert started.wait(10)
        # the running forward's rest (at most its time, no allowance), then its own batch (twice
        # its time): never the allowance twice
        assert 2 * one <= batcher.predicted_wait_s() <= 3 * one
        time.sleep(one * 1.5 + 0.05)  # past its prediction: nothing is left of it to charge
        assert lane.running_remaining_s(time.monotonic()) == 0.0
        assert batcher.predicted_wait_s() == pytest.approx(2 * one)
        release.set()
        assert running.result(10).result == 1
    finally:
        release.set()
        batcher.close(5)
