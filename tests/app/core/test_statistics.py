"""InferenceStatistics: what requests and executions add, Triton's meaning of each figure."""

from __future__ import annotations

import time

from app.core.statistics import FAILURE_REASONS, BatchStatistics, Duration, InferenceStatistics, RequestStages, nanoseconds


def test_requests_count_per_request_and_images_per_image():
    statistics = InferenceStatistics()
    assert statistics.snapshot().last_inference_ms == 0 and statistics.snapshot().batches == ()
    before_ms = time.time_ns() // 1_000_000
    statistics.record_success(3, 900, RequestStages(compute_input=100, queue=200, compute_infer=500, compute_output=50))
    statistics.record_success(1, 100, RequestStages(compute_input=10, queue=20, compute_infer=50, compute_output=5))
    now = statistics.snapshot()
    assert now.inference_count == 4 and now.execution_count == 0  # executions come from the batcher's hook
    assert (now.success, now.queue, now.compute_input) == (Duration(2, 1000), Duration(2, 220), Duration(2, 110))
    assert (now.compute_infer, now.compute_output, now.fail) == (Duration(2, 550), Duration(2, 55), Duration())
    assert now.last_inference_ms >= before_ms


def test_executions_count_per_batch_size_and_failures_per_reason():
    statistics = InferenceStatistics()
    for size, seconds in ((2, 0.5), (1, 0.25), (2, 0.25)):
        statistics.record_execution(size, seconds)
    statistics.record_failure("REJECTED", 0)
    statistics.record_failure("OTHER", 1_000)
    now = statistics.snapshot()
    assert now.execution_count == 3 and now.inference_count == 0
    assert now.batches == (
        BatchStatistics(1, Duration(1, 0), Duration(1, 250_000_000), Duration(1, 0)),
        BatchStatistics(2, Duration(2, 0), Duration(2, 750_000_000), Duration(2, 0)),
    )
    assert now.fail == Duration(2, 1_000) and now.failures == {**dict.fromkeys(FAILURE_REASONS, 0), "REJECTED": 1, "OTHER": 1}
    assert now.success == Duration() and now.last_inference_ms == 0


def test_a_snapshot_does_not_move_with_later_records():
    statistics = InferenceStatistics()
    then = statistics.snapshot()
    statistics.record_execution(1, 0.1)
    statistics.record_failure("BACKEND", 5)
    assert then.execution_count == 0 and then.batches == () and then.failures["BACKEND"] == 0
    assert nanoseconds(1.5) == 1_500_000_000 and nanoseconds(-1.0) == 0
