"""Shutdown: ending the requests still running when the grace period is over.

On SIGTERM uvicorn stops accepting connections and waits for the running requests; past
its own deadline it cancels their tasks, which cuts a stream between two chunks (the
client reads an incomplete chunked body, the request is logged as a 200, and uvicorn
prints a traceback per task). The edge ends them itself first: `grace_s` after the
shutdown began, every request still running is ended with an error in OpenAI's shape
(a stream gets one SSE error event, then its end) and recorded as such. uvicorn's own
deadline comes `HARD_STOP_AFTER_S` later, as a last resort.

uvicorn tells the application nothing when a shutdown begins; the edge's connection
protocol (`switchyard.edge.connections`) hears it and calls `Drain.begin`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

#: How long after the grace period uvicorn may cancel what is left (the edge's own
#: error events and records go out well within it).
HARD_STOP_AFTER_S = 5


class Endable(Protocol):
    def end_for_shutdown(self) -> None: ...


class Drain:
    """The requests running now, and the timer that ends them once a shutdown began."""

    __slots__ = ("_timer", "grace_s", "over", "running")

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.running: set[Endable] = set()
        self.over = False  # the grace period has ended
        self._timer: asyncio.TimerHandle | None = None

    def begin(self) -> None:
        """A shutdown began: end what still runs in `grace_s` (idempotent)."""
        if self._timer is None and not self.over:
            self._timer = asyncio.get_running_loop().call_later(self.grace_s, self._end_all)

    def _end_all(self) -> None:
        self.over = True
        for request in list(self.running):
            request.end_for_shutdown()

    def add(self, request: Endable) -> None:
        if self.over:
            request.end_for_shutdown()
        else:
            self.running.add(request)

    def discard(self, request: Endable) -> None:
        self.running.discard(request)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
