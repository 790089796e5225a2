"""How the limiter reports trouble: a Prometheus counter, and warnings rate-limited
themselves so an outage of the store gives one log line per window, not one per request."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter

STORE_ERRORS = Counter(
    "switchyard_edge_ratelimit_store_errors",
    "Rate-limit store calls that failed (unreachable, timed out, refused), by operation.",
    ("operation",),
)
ACQUIRE_ERRORS = STORE_ERRORS.labels(operation="acquire")
SETTLE_ERRORS = STORE_ERRORS.labels(operation="settle")


class LogThrottle:
    """Lets one event through per `interval_s` and counts the ones it held back."""

    __slots__ = ("_clock", "_interval", "_next", "_suppressed")

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def take(self) -> int | None:
        """None when this event should stay quiet; else how many were held back since
        the last one that went through."""
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return None
        self._next = now + self._interval
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
