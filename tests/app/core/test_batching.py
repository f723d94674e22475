"""MicroBatcher with plain Python batch functions (its real contract: list in, list out)."""

from __future__ import annotations

import gc
import math
import threading
import time
import weakref
from concurrent.futures import CancelledError, Future

import pytest

from app.core.batching import MicroBatcher
from app.core.errors import (
    BatcherClosedError,
    DeadlineExceededError,
    DeadlineUnreachableError,
    OverloadedError,
    QueueFullError,
)


class Recorder:
    """A batch function that doubles numbers, records every batch, and can be held at a gate."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot take {self.fail_on}")
        return [2 * item for item in items]


def far() -> float:
    return time.monotonic() + 30


def running_at_gate(batcher: MicroBatcher, fn: Recorder, item: int = 0) -> Future:
    """Submit ``item`` and wait until the worker runs its batch, held at ``fn``'s closed gate:
    what is submitted next waits in the queue until ``fn.gate.set()``."""
    fn.gate.clear()
    fn.entered.clear()
    running = batcher.submit(item, far())
    assert fn.entered.wait(5)
    return running


@pytest.fixture()
def make_batcher():
    made: list[MicroBatcher] = []

    def build(fn, **kwargs) -> MicroBatcher:
        options = dict(max_batch=4, max_wait_s=0.05, queue_size=8, name="test")
        options.update(kwargs)
        batcher = MicroBatcher(fn, **options)
        made.append(batcher)
        return batcher

    yield build
    for batcher in made:
        batcher.close(timeout=5)


def test_results_keep_order_and_batches_respect_max_batch(make_batcher):
    fn = Recorder()
    batcher = make_batcher(fn, max_batch=3, queue_size=16)
    blocker = running_at_gate(batcher, fn, -1)
    futures = [batcher.submit(i, far()) for i in range(7)]  # queue up while the worker is held
    fn.gate.set()
    assert blocker.result(5).result == -2
    outcomes = [f.result(5) for f in futures]
    assert [o.result for o in outcomes] == [2 * i for i in range(7)]
    assert fn.batches == [[-1], [0, 1, 2], [3, 4, 5], [6]]
    assert [o.batch_size for o in outcomes] == [3, 3, 3, 3, 3, 3, 1]
    assert all(o.model_s >= 0 and o.queue_s >= 0 for o in outcomes)


def test_a_lone_request_waits_at_most_max_wait(make_batcher):
    fn = Recorder()
    batcher = make_batcher(fn, max_wait_s=0.2)
    started = time.monotonic()
    outcome = batcher.submit(5, far()).result(5)
    elapsed = time.monotonic() - started
    assert outcome.result == 10 and outcome.batch_size == 1
    assert 0.15 <= elapsed < 1.5
    assert outcome.queue_s >= 0.15  # it waited in the queue for companions that never came


def test_companions_arriving_within_max_wait_share_a_batch(make_batcher):
    fn = Recorder()
    batcher = make_batcher(fn, max_wait_s=0.5)
    first = batcher.submit(1, far())
    time.sleep(0.05)
    second = batcher.submit(2, far())
    assert first.result(5).batch_size == second.result(5).batch_size == 2
    assert fn.batches == [[1, 2]]


def test_full_queue_refuses_with_retry_after(make_batcher):
    fn = Recorder()
    batcher = make_batcher(fn, max_batch=1, queue_size=2)
    running = running_at_gate(batcher, fn)
    queued = [batcher.submit(i, far()) for i in (1, 2)]
    assert batcher.qsize() == 2
    with pytest.raises(QueueFullError) as refused:
        batcher.submit(3, far())
    assert refused.value.retry_after_s >= 1
    fn.gate.set()
    assert [f.result(5).result for f in [running, *queued]] == [0, 2, 4]
    assert batcher.submit(4, far()).result(5).result == 8  # recovered


def test_cancelled_and_expired_requests_never_reach_the_function(make_batcher):
    fn = Recorder()
    batcher = make_batcher(fn, max_batch=4)
    running = running_at_gate(batcher, fn)
    gone = batcher.submit(1, far())
    expired = batcher.submit(2, time.monotonic() + 0.05)
    kept = batcher.submit(3, far())
    assert gone.cancel()
    time.sleep(0.1)  # past the deadline of `expired`
    fn.gate.set()
    assert running.result(5).result == 0
    assert kept.result(5).result == 6
    with pytest.raises(DeadlineExceededError):
        expired.result(5)
    with pytest.raises(CancelledError):
        gone.result(0)
    assert fn.batches == [[0], [3]]


def test_a_failing_item_fails_alone(make_batcher):
    fn = Recorder(fail_on=13)
    batcher = make_batcher(fn, max_batch=4)
    blocker = running_at_gate(batcher, fn)
    futures = [batcher.submit(i, far()) for i in (11, 12, 13, 14)]
    fn.gate.set()
    blocker.result(5)
    with pytest.raises(ValueError, match="cannot take 13"):
        futures[2].result(5)
    assert [futures[i].result(5).result for i in (0, 1, 3)] == [22, 24, 28]
    assert fn.batches[1] == [11, 12, 13, 14]  # tried together, then one by one
    assert fn.batches[2:] == [[11], [12], [13], [14]]
    assert batcher.submit(15, far()).result(5).result == 30


def test_wrong_result_count_is_an_error_for_the_callers(make_batcher):
    batcher = make_batcher(lambda items: [], max_batch=1)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        batcher.submit(1, far()).result(5)


def test_on_batch_hook_sees_every_call(make_batcher):
    seen: list[int] = []
    batcher = make_batcher(Recorder(), max_wait_s=0.0, on_batch=lambda size, seconds: seen.append(size))
    for i in range(3):
        batcher.submit(i, far()).result(5)
    assert seen == [1, 1, 1]


def test_close_fails_waiting_requests_and_refuses_new_ones():
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch=1, max_wait_s=0.0, queue_size=4)
    running = running_at_gate(batcher, fn)
    waiting = batcher.submit(1, far())
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    fn.gate.set()
    closer.join(5)
    assert running.result(5).result == 0
    with pytest.raises(BatcherClosedError):
        waiting.result(5)
    with pytest.raises(BatcherClosedError):
        batcher.submit(2, far())


@pytest.mark.parametrize("kwargs", [dict(max_batch=0), dict(queue_size=0), dict(max_wait_s=-1), dict(spread_allowance=-1)])
def test_invalid_configuration_is_refused(kwargs):
    options = dict(max_batch=1, max_wait_s=0.0, queue_size=1)
    options.update(kwargs)
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, **options)


def test_a_withdrawn_request_frees_its_place_at_once(make_batcher):
    fn = Recorder()
    batcher = make_batcher(fn, max_batch=1, queue_size=2)
    running = running_at_gate(batcher, fn)
    first, second = batcher.submit(1, far()), batcher.submit(2, far())
    with pytest.raises(QueueFullError):
        batcher.submit(3, far())
    assert first.cancel()
    assert batcher.qsize() == 1
    third = batcher.submit(3, far())  # the place is free again while the worker is still busy
    fn.gate.set()
    assert [f.result(5).result for f in (running, second, third)] == [0, 4, 6]
    assert fn.batches == [[0], [2], [3]]


def test_admitted_requests_hold_their_places_until_queued_or_released(make_batcher):
    # issue 12: requests admitted together (a burst, all still reading their uploads) see one another
    fn = Recorder()
    batcher = make_batcher(fn, max_batch=1, queue_size=2)
    running = running_at_gate(batcher, fn)
    first, second = batcher.admit(far()), batcher.admit(far())
    assert batcher.qsize() == 0  # nothing is queued yet, and yet the queue is full
    with pytest.raises(QueueFullError):
        batcher.admit(far())
    with pytest.raises(QueueFullError):
        batcher.submit(3, far())  # an item queued without a place of its own counts them too
    queued = batcher.submit(1, far(), first)  # the item takes its request's place over
    assert batcher.qsize() == 1
    with pytest.raises(QueueFullError):
        batcher.admit(far())
    second.release()
    second.release()  # a no-op: its place is free already
    first.release()  # a no-op: its place belongs to the queued item now
    third = batcher.admit(far())
    with pytest.raises(QueueFullError):
        batcher.admit(far())
    with third:
        pass  # the end of a with block gives the place back
    last = batcher.submit(2, far())
    fn.gate.set()
    assert [f.result(5).result for f in (running, queued, last)] == [0, 2, 4]


class Sleeper(Recorder):
    """A Recorder whose every batch takes at least ``seconds``: the batcher's measurements."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, items: list[int]) -> list[int]:
        time.sleep(self.seconds)
        return super().__call__(items)


def measured(batcher: MicroBatcher) -> float:
    """Run one batch of one item and return the batcher's prediction for such a batch."""
    batcher.submit(0, far()).result(30)
    predicted = batcher.cost.seconds(1)
    assert predicted is not None
    return predicted


def test_nothing_is_predicted_before_a_batch_was_measured(make_batcher):
    batcher = make_batcher(Sleeper(0.05))
    assert batcher.cost.seconds(1) is None and batcher.predicted_wait_s() is None
    batcher.admit(time.monotonic() + 0.001).release()  # no figures yet: admitted (and its place given back)
    one = measured(batcher)
    assert one >= 0.05
    assert batcher.cost.seconds(3) == pytest.approx(3 * one)  # scaled up linearly from the measured size
    assert batcher.predicted_wait_s() == pytest.approx(one)  # idle: its own batch


def test_a_request_that_cannot_make_its_deadline_is_refused_at_admission(make_batcher):
    fn = Sleeper(0.2)
    batcher = make_batcher(fn, max_batch=1)
    one = measured(batcher)
    with pytest.raises(DeadlineUnreachableError) as refused:
        batcher.admit(time.monotonic() + one / 2)
    assert isinstance(refused.value, OverloadedError) and refused.value.retry_after_s >= 1
    with pytest.raises(DeadlineUnreachableError):
        batcher.submit(1, time.monotonic() + one / 2)
    assert batcher.qsize() == 0 and fn.batches == [[0]]
    assert batcher.submit(2, time.monotonic() + 30).result(30).result == 4


class Alternating(Recorder):
    """A Recorder whose batches take at least ``seconds[0]``, ``seconds[1]``, ... in turn."""

    def __init__(self, *seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, items: list[int]) -> list[int]:
        time.sleep(self.seconds[len(self.batches) % len(self.seconds)])
        return super().__call__(items)


def test_admission_allows_for_batches_slower_than_their_average(make_batcher):
    # admitted on the average alone, a request missed its deadline whenever the batches ahead of
    # it ran a little slow, and waited for a 504 instead of getting a 429 at once
    batcher = make_batcher(Alternating(0.05, 0.25), max_batch=1)
    for item in range(4):
        batcher.submit(item, far()).result(30)
    average = batcher.cost.seconds(1)
    ahead = batcher.admit(far())  # a request ahead of the next one: the device is not idle
    counted = batcher.predicted_wait_s()  # its batch and the one ahead, as admission counts them
    assert counted > 2 * average
    with pytest.raises(DeadlineUnreachableError):
        batcher.admit(time.monotonic() + (2 * average + counted) / 2)  # the average would make it
    batcher.admit(time.monotonic() + counted + 1.0).release()
    ahead.release()


def test_a_caller_that_has_its_answer_sees_no_batch_running(make_batcher):
    # its batch took less than the average: still counted as running, the rest of its predicted
    # time would be added to a prediction made right after the answer (e.g. by the next admission)
    fn = Alternating(0.25, 0.05)
    batcher = make_batcher(fn, max_batch=1, spread_allowance=0.0)
    batcher.submit(0, far()).result(30)
    fn.gate.clear()
    second = batcher.submit(1, far())
    seen: list[tuple[float | None, float | None]] = []
    # called in the worker thread, as the answer is set
    second.add_done_callback(lambda done: seen.append((batcher.predicted_wait_s(), batcher.cost.seconds(1))))
    fn.gate.set()
    assert second.result(30).result == 2
    ((waited, own),) = seen
    assert waited == own  # idle: its own batch only


def test_held_places_count_in_the_predicted_wait(make_batcher):
    batcher = make_batcher(Sleeper(0.2), max_batch=1)
    one = measured(batcher)
    places = [batcher.admit(far()) for _ in range(2)]
    assert batcher.predicted_wait_s() == pytest.approx(3 * one)  # the two admitted requests first
    with pytest.raises(DeadlineUnreachableError):
        batcher.admit(time.monotonic() + 2.5 * one)
    for place in places:
        place.release()
    batcher.admit(time.monotonic() + 2.5 * one).release()  # its own batch fits now


def test_retry_after_follows_the_measured_batches(make_batcher):
    fn = Sleeper(1.5)
    batcher = make_batcher(fn, max_batch=1, queue_size=1)
    one = measured(batcher)
    running = running_at_gate(batcher, fn, 1)
    queued = batcher.submit(2, far())
    with pytest.raises(QueueFullError) as refused:
        batcher.submit(3, far())
    # a place frees up once the queued request is taken: after the rest of the running batch
    assert refused.value.retry_after_s >= math.ceil(one) >= 2
    fn.gate.set()
    assert [running.result(30).result, queued.result(30).result] == [2, 4]


def test_a_batch_does_not_grow_past_the_deadline_of_a_request_in_it(make_batcher):
    fn = Sleeper(0.5)
    batcher = make_batcher(fn, max_batch=4, max_wait_s=0.3)
    one = measured(batcher)
    # alone it ends in time (one batch of 1); with a companion (2 × one) it would not
    tight = batcher.submit(1, time.monotonic() + 1.5 * one)
    loose = batcher.submit(2, far())
    assert tight.result(30).result == 2 and loose.result(30).result == 4
    assert fn.batches[1:] == [[1], [2]]


def test_a_request_whose_batch_would_end_past_its_deadline_never_runs(make_batcher):
    fn = Sleeper(1.0)
    batcher = make_batcher(fn, max_batch=1)
    one = measured(batcher)
    blocker = running_at_gate(batcher, fn, 1)
    submitted = time.monotonic()
    doomed = batcher.submit(2, submitted + 3 * one)  # admitted: predicted at most 2 × one
    # the worker stays busy until 2.5 × one: the deadline has not passed, but one more batch ends after it
    time.sleep(max(0.0, submitted + 2.5 * one - time.monotonic()))
    fn.gate.set()
    assert blocker.result(30).result == 2
    with pytest.raises(DeadlineExceededError, match="past the deadline"):
        doomed.result(30)
    assert fn.batches == [[0], [1]]


class Turnstile(Recorder):
    """A batch function that signals ``entered``, then waits for a permit (``permits.release()``)
    before each batch, which then takes ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.permits = threading.Semaphore(0)

    def __call__(self, items: list[int]) -> list[int]:
        self.entered.set()
        if not self.permits.acquire(timeout=30):
            raise TimeoutError("no permit")
        time.sleep(self.seconds)
        return super().__call__(items)


def test_a_request_left_for_a_batch_that_would_end_past_its_deadline_is_dropped_at_once(make_batcher):
    fn = Turnstile(0.2)
    batcher = make_batcher(fn, max_batch=2, max_wait_s=0)
    fn.permits.release()
    one = measured(batcher)
    fn.entered.clear()
    blocker = batcher.submit(1, far())
    assert fn.entered.wait(5)  # its batch started and waits for a permit
    kept = batcher.submit(2, far())
    submitted = time.monotonic()
    doomed = batcher.submit(3, submitted + 3.5 * one)  # admitted: with kept, a batch of 2 after the rest of the running one
    time.sleep(max(0.0, submitted + 2 * one - time.monotonic()))
    fn.permits.release()  # the blocker's batch ends; kept's batch forms, and doomed would have to wait for the next
    assert blocker.result(30).result == 2
    with pytest.raises(DeadlineExceededError, match="after the batch ahead"):
        doomed.result(10)  # told at once, not when its turn would have come
    assert not kept.done()  # its batch still waits for a permit
    fn.permits.release()
    assert kept.result(30).result == 4
    assert fn.batches == [[0], [1], [2]]


class Image:
    """An item that can be watched: a weak reference to it dies when the last strong one does."""


@pytest.fixture()
def without_cycle_collector():
    """Only reference counting frees objects: what a reference cycle would keep stays alive."""
    gc.disable()
    yield
    gc.enable()


def test_an_answered_request_is_freed_by_reference_counting(make_batcher, eventually, without_cycle_collector):
    # issue 12: a request's item (its decoded image) held in a reference cycle stayed in memory
    # until a full garbage collection, and the heap grew in the meantime
    batcher = make_batcher(lambda items: [id(item) for item in items])
    item = Image()
    watched = weakref.ref(item)
    future = batcher.submit(item, far())
    assert future.result(5).result == id(item)
    del item
    eventually(lambda: watched() is None)
    assert future.done()  # the caller may keep its future: it does not hold the item


def test_a_withdrawn_request_is_freed_by_reference_counting(make_batcher, eventually, without_cycle_collector):
    fn = Recorder()
    fn.gate.clear()
    batcher = make_batcher(lambda items: fn([0]), max_batch=1)
    batcher.submit(Image(), far())
    assert fn.entered.wait(5)
    item = Image()
    watched = weakref.ref(item)
    future = batcher.submit(item, far())
    del item
    assert future.cancel()
    fn.gate.set()
    eventually(lambda: watched() is None)


def test_a_request_of_several_items_is_admitted_whole_or_not_at_all(make_batcher):
    fn = Recorder()
    batcher = make_batcher(fn, max_batch=1, queue_size=4)
    running = running_at_gate(batcher, fn)
    first = batcher.admit(far(), count=3)
    with pytest.raises(QueueFullError, match="2 images do not fit"):
        batcher.admit(far(), count=2)  # one place is left: none is taken
    second = batcher.admit(far())  # the last place
    queued = [batcher.submit(item, far(), first) for item in (1, 2, 3)]  # its items take its places over
    with pytest.raises(QueueFullError):
        batcher.admit(far())
    second.release()
    fn.gate.set()
    assert [f.result(5).result for f in (running, *queued)] == [0, 2, 4, 6]


def test_an_idle_batcher_admits_a_request_its_figures_would_refuse(make_batcher):
    # one batch that ran slow (here: a batch of 4 held 1 s) must not shut the model out: with
    # nothing running or waiting, a request whose deadline outlasts the fastest lone forward runs
    fn = Sleeper(0.05)
    batcher = make_batcher(fn, max_batch=4, max_wait_s=0.3)
    batcher.submit(0, far()).result(30)  # a lone forward: about 0.05 s
    fn.seconds = 1.0
    for future in [batcher.submit(item, far()) for item in range(4)]:
        future.result(30)
    fn.seconds = 0.05
    lone_floor = batcher.cost.lone_floor_s()
    assert lone_floor is not None and lone_floor < 0.2
    deadline_s = 0.4  # what admission counts for a lone request is more, the fastest lone forward less
    counted_s = batcher.predicted_wait_s()
    assert counted_s is not None and counted_s > deadline_s
    outcome = batcher.submit(9, time.monotonic() + deadline_s).result(30)
    assert outcome.result == 18
    assert batcher.predicted_wait_s() < counted_s  # what it measured brought the figures down
    with pytest.raises(DeadlineUnreachableError):
        batcher.submit(10, time.monotonic() + lone_floor / 2)  # shorter than any lone forward: refused
