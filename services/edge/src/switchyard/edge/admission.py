"""Admission control: a bounded number of requests in flight, then a bounded queue, then refusal.

Limits hold per edge process: in all (`max_in_flight`) and per model (`max_in_flight_per_model`).
Past them a request waits in one FIFO queue of at most `max_queue` waiters for at most
`queue_timeout_s`; a full queue or a wait past the timeout is refused (the edge answers 429 with
Retry-After). A freed slot goes to the oldest waiter that fits, so one saturated model does not
block the others. Memory is bounded by `max_queue` whatever the burst.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field


class Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "queue_full" | "queue_timeout"
        self.message = message


@dataclass(slots=True, eq=False)
class _Waiter:
    model: str
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Admission:
    def __init__(
        self, max_in_flight: int, max_per_model: int, max_queue: int, queue_timeout_s: float
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_per_model = max_per_model
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self._per_model: dict[str, int] = {}
        self._waiters: deque[_Waiter] = deque()
        self._queued: dict[str, int] = {}  # waiters per model

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def in_flight_for(self, model: str) -> int:
        return self._per_model.get(model, 0)

    def _fits(self, model: str) -> bool:
        return (
            self.in_flight < self.max_in_flight
            and self._per_model.get(model, 0) < self.max_per_model
        )

    def _enqueue(self, waiter: _Waiter) -> None:
        self._waiters.append(waiter)
        self._queued[waiter.model] = self._queued.get(waiter.model, 0) + 1

    def _dequeue(self, waiter: _Waiter) -> None:
        self._waiters.remove(waiter)
        left = self._queued[waiter.model] - 1
        if left:
            self._queued[waiter.model] = left
        else:
            del self._queued[waiter.model]

    def _take(self, model: str) -> None:
        self.in_flight += 1
        self._per_model[model] = self._per_model.get(model, 0) + 1

    async def acquire(self, model: str) -> float:
        """Take a slot for `model`; returns the seconds spent waiting. Raises Refused."""
        # Capacity is handed to waiters on every release, so if there is room now, the
        # queued requests are all held by their own model's limit: only those of this
        # model have a prior claim.
        if self._fits(model) and not self._queued.get(model):
            self._take(model)
            return 0.0
        if len(self._waiters) >= self.max_queue:
            raise Refused("queue_full", "Too many requests are waiting; retry after a moment.")
        waiter = _Waiter(model)
        self._enqueue(waiter)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter.future
        except BaseException as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted in the same instant we gave up: hand the slot on.
                self.release(model)
            else:
                self._dequeue(waiter)
            if isinstance(exc, TimeoutError):
                raise Refused(
                    "queue_timeout",
                    f"The request waited {self.queue_timeout_s:g}s for capacity; retry after a moment.",
                ) from None
            raise
        return time.monotonic() - started

    def release(self, model: str) -> None:
        self.in_flight -= 1
        left = self._per_model[model] - 1
        if left:
            self._per_model[model] = left
        else:
            del self._per_model[model]
        self._grant()

    def _grant(self) -> None:
        if not self._waiters or self.in_flight >= self.max_in_flight:
            return
        for waiter in list(self._waiters):
            if self.in_flight >= self.max_in_flight:
                break
            if self._fits(waiter.model):
                self._dequeue(waiter)
                self._take(waiter.model)
                waiter.future.set_result(None)
