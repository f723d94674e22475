"""What a forward costs, learned from the forwards that ran: the figures admission predicts with.

A forward of ``n`` images takes about ``fixed_s + per_image_s × n`` seconds. Both terms are fit by
least squares over the recent forwards, each weighted by an exponential decay (the newest weighs
``smoothing``), so the fit follows what happens now and an old measurement fades as new ones come
in. On a CPU, where the engine runs images one after another, ``fixed_s`` comes out near 0; on a
GPU a batch shares its fixed cost. While the recent forwards had (nearly) one size, the fit is
proportional (``fixed_s`` = 0: the mean seconds per image), which makes every other size a linear
scaling of it.

The spread is the decayed mean of ``|measured - predicted| / predicted``: a relative deviation, so
that it applies to any size. The lone floor is the fastest of the recent forwards of one image: what
a request that finds the device idle is sure to need at least.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

MIN_SIZE_SPREAD = 0.05  # variance of the recent sizes, relative to their mean squared, that a fixed cost needs


@dataclass(frozen=True)
class CostFit:
    """Seconds of a forward of ``n`` images: ``fixed_s + per_image_s × n``."""

    fixed_s: float
    per_image_s: float

    def seconds(self, size: int) -> float:
        return self.fixed_s + self.per_image_s * size


class ForwardCost:
    """The learned cost of one model's forwards; thread-safe.

    Args:
        smoothing: weight of the newest forward in the decayed sums, in (0, 1].
        lone_history: how many recent forwards of one image the lone floor is taken over.
    """

    def __init__(self, *, smoothing: float = 0.2, lone_history: int = 8) -> None:
        if not 0 < smoothing <= 1 or lone_history < 1:
            raise ValueError(f"need 0 < smoothing <= 1 and lone_history >= 1; got {smoothing}, {lone_history}")
        self.smoothing = smoothing
        self._lock = threading.Lock()
        # decayed sums over the forwards: weight, n, seconds, n², n × seconds
        self._weight = self._n = self._s = self._nn = self._ns = 0.0
        self._relative_spread = 0.0
        self._lone: deque[float] = deque(maxlen=lone_history)
        self._fit: CostFit | None = None

    def observe(self, size: int, seconds: float) -> None:
        """Learn from a forward of ``size`` images that took ``seconds``."""
        if size < 1 or seconds < 0:
            raise ValueError(f"a forward has size >= 1 and seconds >= 0; got {size}, {seconds}")
        alpha = self.smoothing
        with self._lock:
            if self._fit is not None:
                predicted = self._fit.seconds(size)
                if predicted > 0:
                    deviation = abs(seconds - predicted) / predicted
                    self._relative_spread = (1 - alpha) * self._relative_spread + alpha * deviation
            keep = 1 - alpha
            self._weight = keep * self._weight + alpha
            self._n = keep * self._n + alpha * size
            self._s = keep * self._s + alpha * seconds
            self._nn = keep * self._nn + alpha * size * size
            self._ns = keep * self._ns + alpha * size * seconds
            if size == 1:
                self._lone.append(seconds)
            self._fit = self._refit()

    def _refit(self) -> CostFit:
        mean_n, mean_s = self._n / self._weight, self._s / self._weight
        variance_n = self._nn / self._weight - mean_n * mean_n
        # a line through sizes that hardly vary (one old batch among lone forwards) extrapolates
        # wildly: the fixed cost is fit only when the recent forwards had several sizes
        if variance_n > MIN_SIZE_SPREAD * mean_n * mean_n:
            per_image = (self._ns / self._weight - mean_n * mean_s) / variance_n
            fixed = mean_s - per_image * mean_n
            if per_image > 0 and fixed >= 0:
                return CostFit(fixed, per_image)
        return CostFit(0.0, mean_s / mean_n)  # proportional: seconds per image on average

    def seconds(self, size: int) -> float | None:
        """Predicted seconds of a forward of ``size`` images; None before the first forward."""
        fit = self._fit
        return fit.seconds(size) if fit is not None else None

    def spread_s(self, size: int) -> float:
        """The typical deviation of a forward of ``size`` images from :meth:`seconds`, seconds."""
        fit = self._fit
        return self._relative_spread * fit.seconds(size) if fit is not None else 0.0

    @property
    def relative_spread(self) -> float:
        return self._relative_spread

    def lone_floor_s(self) -> float | None:
        """The fastest recent forward of one image, seconds; None before the first."""
        with self._lock:
            return min(self._lone) if self._lone else None
