"""Give the memory malloc keeps back to the OS once the service has been idle for a while.

The service keeps freed memory for the next forward (``model_zoo.keep_freed_memory``): a busy
service never page-faults its working set in again. After a peak (large uploads decoded, a burst),
that memory would stay with the process for good; :class:`IdleMemoryRelease` returns it
(``model_zoo.release_freed_memory``, glibc's ``malloc_trim``) when no request has been in flight for
``idle_s`` seconds since the last one ended, once per busy spell.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from model_zoo import release_freed_memory

logger = logging.getLogger("attnzoo.memory")


class IdleMemoryRelease:
    """Counts requests in flight (:meth:`started`, :meth:`ended`); a thread releases memory when
    the service has been idle for ``idle_s`` seconds after work (0: never)."""

    def __init__(self, idle_s: float, release: Callable[[], bool] = release_freed_memory) -> None:
        self.idle_s = idle_s
        self._release = release
        self._cond = threading.Condition()
        self._in_flight = 0
        self._worked = False  # requests ran since the last release
        self._last_end = time.monotonic()
        self._stop = False
        self._thread: threading.Thread | None = None
        if idle_s > 0:
            self._thread = threading.Thread(target=self._run, name="memory-release", daemon=True)
            self._thread.start()

    def started(self) -> None:
        with self._cond:
            self._in_flight += 1
            self._worked = True

    def ended(self) -> None:
        with self._cond:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._last_end = time.monotonic()
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                if not self._worked or self._in_flight:
                    self._cond.wait()
                    continue
                remaining = self._last_end + self.idle_s - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._worked = False
                self._cond.release()
                try:
                    released = self._release()
                    logger.debug("idle for %.1f s: freed memory given back to the OS: %s", self.idle_s, released)
                finally:
                    self._cond.acquire()
