"""IdleMemoryRelease: freed memory goes back to the OS once the service has been idle after work."""

from __future__ import annotations

import threading
import time

from app.core.memory import IdleMemoryRelease
from model_zoo import release_freed_memory


class Releases:
    """glibc's malloc_trim (the real one), with the instants it was called at."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.called = threading.Event()

    def __call__(self) -> bool:
        self.at.append(time.monotonic())
        self.called.set()
        return release_freed_memory()


def test_memory_goes_back_once_per_busy_spell_after_the_idle_time():
    releases = Releases()
    memory = IdleMemoryRelease(0.3, releases)
    try:
        assert not releases.called.wait(0.6)  # no work yet: nothing to give back
        memory.started()
        memory.started()
        memory.ended()
        assert not releases.called.wait(0.6)  # a request is still in flight
        ended = time.monotonic()  # before its end: the idle time counts from a later instant
        memory.ended()
        assert releases.called.wait(5)
        assert releases.at[0] - ended >= 0.3  # not before the idle time
        time.sleep(0.6)
        assert len(releases.at) == 1  # once per busy spell
        memory.started()
        memory.ended()
        releases.called.clear()
        assert releases.called.wait(5) and len(releases.at) == 2
    finally:
        memory.close()


def test_work_that_resumes_within_the_idle_time_postpones_the_release():
    releases = Releases()
    memory = IdleMemoryRelease(0.5, releases)
    try:
        for _ in range(4):  # requests 0.15 s apart
            memory.started()
            last_end = time.monotonic()
            memory.ended()
            time.sleep(0.15)
        assert releases.called.wait(5)
        assert releases.at[0] >= last_end + 0.5  # counted from the last request's end, not the first's
    finally:
        memory.close()


def test_zero_idle_time_never_releases():
    releases = Releases()
    memory = IdleMemoryRelease(0.0, releases)
    memory.started()
    memory.ended()
    assert not releases.called.wait(0.5)
    memory.close()
