"""A variant's recent in-service latencies, for ``variant=auto`` (``app/variant_choice.py``)."""

from __future__ import annotations

import math
import threading
from collections import deque


class LatencyWindow:
    """The last ``size`` latencies of one variant (seconds); thread-safe."""

    def __init__(self, size: int) -> None:
        self._seconds: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._seconds.append(seconds)

    def p95(self) -> float | None:
        """Nearest-rank 95th percentile (seconds); None before the first observation."""
        with self._lock:
            ordered = sorted(self._seconds)
        if not ordered:
            return None
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
