"""Concurrency, queueing and the latency model of a serving engine.

Typical use in a front-end, per request (generation decided first, see `generation`)::

    async with scheduler.admit(prompt_tokens):          # may wait; QueueFull if full
        async for token in scheduler.pace(gen.tokens, prompt_tokens):
            ...                                          # send one chunk

A slot passes straight from a finishing request to the oldest waiter, so the queue is
strictly FIFO; cancelling a waiter or a runner always gives its place back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from switchyard.enginesim.faults import Faults

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """How long a simulated engine takes; all zero means as fast as the event loop goes."""

    load_delay_s: float = 0.0  # from start() until the model is "loaded"
    ttft_s: float = 0.0  # time to first token
    #: Added to the first token's time per prompt token to prefill: those not found in the
    #: engine's prefix cache (`prefix_cache`); front-ends pass that count.
    prefill_s_per_token: float = 0.0
    itl_s: float = 0.0  # inter-token latency

    def __post_init__(self) -> None:
        for name in ("load_delay_s", "ttft_s", "prefill_s_per_token", "itl_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")

    def first_token_s(self, prompt_tokens: int) -> float:
        """Seconds from admission to the first token, `prompt_tokens` to prefill."""
        return self.ttft_s + self.prefill_s_per_token * prompt_tokens


class AdmissionRejected(Exception):
    """The engine refuses the request right away (its overload answer)."""


class QueueFull(AdmissionRejected):
    """vLLM/SGLang with queue limits: the wait queue is full (they answer 503)."""


class Overloaded(AdmissionRejected):
    """TGI: running plus waiting requests reached the concurrency limit (it answers 429)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A granted slot."""

    queued_s: float  # time spent waiting for it


@dataclass(eq=False, slots=True)
class _Waiter:
    future: asyncio.Future[None]
    tokens: int
    since: float = field(default_factory=time.monotonic)


class Scheduler:
    """At most `max_running` requests generate at once; the rest wait in a FIFO queue.

    `max_queued` (None: unbounded, the vLLM/SGLang default) and `max_queued_tokens` bound
    the queue; past them `admit` raises QueueFull immediately.
    """

    def __init__(
        self,
        max_running: int,
        max_queued: int | None = None,
        latency: LatencyModel | None = None,
        *,
        max_queued_tokens: int | None = None,
    ) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be at least 1, got {max_running}")
        if max_queued is not None and max_queued < 0:
            raise ValueError(f"max_queued must be at least 0, got {max_queued}")
        self.latency = latency or LatencyModel()
        self._max_running = max_running
        self._max_queued = max_queued
        self._max_queued_tokens = max_queued_tokens
        self._running = 0
        self._waiters: deque[_Waiter] = deque()
        self._queued_tokens = 0
        self._started_at: float | None = None
        #: Injected faults (`/sim/faults`): requests that stall.
        self.faults = Faults()
        #: Time to first token modelled so far, summed over requests (what tests check
        #: instead of measuring it): `latency.first_token_s` of each request's prefill.
        self.first_token_s_total = 0.0

    @property
    def running(self) -> int:
        """Requests holding a slot."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiters)

    @property
    def queued_tokens(self) -> int:
        """Prompt tokens of the queued requests."""
        return self._queued_tokens

    def start(self) -> None:
        """Start the simulated model load (call once, when the process starts)."""
        self._started_at = time.monotonic()

    def is_loaded(self) -> bool:
        """Whether `latency.load_delay_s` has passed since `start()`."""
        return self.load_remaining_s() == 0

    def load_remaining_s(self) -> float:
        """Seconds until the model is loaded (infinite before `start()`)."""
        if self._started_at is None:
            return float("inf")
        elapsed = time.monotonic() - self._started_at
        return max(0.0, self.latency.load_delay_s - elapsed)

    async def wait_loaded(self) -> None:
        """Return once the model is loaded; `start()` must have been called."""
        if self._started_at is None:
            raise RuntimeError("Scheduler.start() was not called")
        await asyncio.sleep(self.load_remaining_s())

    @asynccontextmanager
    async def admit(self, prompt_tokens: int = 0) -> AsyncIterator[Admission]:
        """Hold a generation slot for the block, waiting in the queue if none is free."""
        queued_s = await self._acquire(prompt_tokens)
        try:
            yield Admission(queued_s)
        finally:
            self._release()

    @asynccontextmanager
    async def try_admit(self, limit: int, prompt_tokens: int = 0) -> AsyncIterator[Admission]:
        """Like `admit`, but raise Overloaded at once if `running + waiting >= limit` (TGI)."""
        if self._running + len(self._waiters) >= limit:
            raise Overloaded(f"{self._running + len(self._waiters)} requests in flight")
        async with self.admit(prompt_tokens) as admission:
            yield admission

    async def pace(self, items: Sequence[T], prompt_tokens: int = 0) -> AsyncIterator[T]:
        """Yield `items` at the model's pace: the first after TTFT (+ prefill), then one per ITL.

        Deadlines are absolute, so slow wake-ups do not add up over a long stream. A stall
        (`faults`) holds the items from its point on until it is cleared.
        """
        loop = asyncio.get_running_loop()
        stall_at = self.faults.claim(len(items))
        first = self.latency.first_token_s(prompt_tokens)
        if items:
            self.first_token_s_total += first
        deadline = loop.time() + first
        for i, item in enumerate(items):
            if i == stall_at:
                await self.faults.stall()
                deadline = max(deadline, loop.time())
            await _sleep_until(loop, deadline)
            yield item
            deadline += self.latency.itl_s

    async def sleep_generation(self, n_tokens: int, prompt_tokens: int = 0) -> None:
        """Sleep as long as generating `n_tokens` takes (for non-streaming requests)."""
        seconds = self.latency.first_token_s(prompt_tokens)
        self.first_token_s_total += seconds
        seconds += self.latency.itl_s * max(0, n_tokens - 1)
        stall_at = self.faults.claim(n_tokens)
        if stall_at is not None:
            before = 0.0
            if stall_at:
                before = self.latency.first_token_s(prompt_tokens)
                before += self.latency.itl_s * (stall_at - 1)
            await asyncio.sleep(before)
            await self.faults.stall()
            seconds -= before
        await asyncio.sleep(seconds)

    async def _acquire(self, prompt_tokens: int) -> float:
        if self._running < self._max_running and not self._waiters:
            self._running += 1
            return 0.0
        if self._max_queued is not None and len(self._waiters) >= self._max_queued:
            raise QueueFull("The request queue is full.")
        limit = self._max_queued_tokens
        if limit is not None and self._queued_tokens + prompt_tokens > limit:
            raise QueueFull(f"The queue holds too many prompt tokens (limit {limit}).")
        waiter = _Waiter(asyncio.get_running_loop().create_future(), prompt_tokens)
        self._waiters.append(waiter)
        self._queued_tokens += prompt_tokens
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter in self._waiters:  # still queued: just leave
                self._waiters.remove(waiter)
                self._queued_tokens -= waiter.tokens
            elif not waiter.future.cancelled():  # handed a slot, too late: pass it on
                self._release()
            raise
        return time.monotonic() - waiter.since

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            self._queued_tokens -= waiter.tokens
            if not waiter.future.done():
                waiter.future.set_result(None)  # the slot moves on; `running` is unchanged
                return
        self._running -= 1


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    # sleep(0) when due: still yield, so zero-latency streams do not starve the loop.
    await asyncio.sleep(max(0.0, deadline - loop.time()))
