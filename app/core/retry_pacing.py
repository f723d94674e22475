"""The Retry-After a refused request is given, so that a crowd of refused clients comes back at the
pace the model frees places, not all at once.

The soonest a refused request could get in (the queue ahead shrinking by one place, or a request
with its budget fitting) is right for one client, but a crowd told the same instant comes back
together, is refused again but for a few, and its retries take the CPU the model needs. So the
advice also counts the clients already told to wait: by Little's law, the refusals of the recent
past times the waits they were given is how many clients are away now. Spread over the places
the model frees, about ``ARRIVALS_PER_PLACE`` of them should come back for each place; a client
is told to wait that long, never less than the soonest it could get in and never more than its
own budget (once a deadline's time has passed, everything queued now has been answered).
"""

from __future__ import annotations

import math
import threading

# Clients coming back for each place the model frees: more than one, so that a place never waits
# for a client; few, so that the refusals cost little.
ARRIVALS_PER_PLACE = 2.0


class RetryPacing:
    """The advice of one queue. ``window_s``: how long a refusal counts toward the clients away
    (an exponential decay with this time constant; about the longest wait it advises)."""

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive; got {window_s}")
        self.window_s = window_s
        self._advised_s = 0.0  # the waits advised so far, each decayed by its age
        self._at: float | None = None  # time.monotonic() of the last advice
        self._lock = threading.Lock()

    def clients_away(self, now: float) -> float:
        """About how many refused clients are waiting to come back at ``now``: the recent waits
        advised, summed, over the window (the refusal rate times the mean wait)."""
        with self._lock:
            return self._decayed(now) / self.window_s

    def advise(self, soonest_s: float, latest_s: float, places_per_s: float | None, now: float) -> float:
        """Seconds a request refused at ``now`` should wait before it tries again, and count it as
        away for that long.

        Args:
            soonest_s: the soonest it could get in.
            latest_s: the most to advise (its own budget).
            places_per_s: the places the model frees per second (None: not measured yet; then
                the soonest).
        """
        with self._lock:
            advised_so_far = self._decayed(now)
            advice = soonest_s
            if places_per_s is not None and places_per_s > 0:
                paced = advised_so_far / self.window_s / (ARRIVALS_PER_PLACE * places_per_s)
                advice = max(soonest_s, min(latest_s, paced))
            self._advised_s = advised_so_far + advice
            self._at = now
            return advice

    def _decayed(self, now: float) -> float:
        if self._at is None:
            return 0.0
        return self._advised_s * math.exp(-max(0.0, now - self._at) / self.window_s)
