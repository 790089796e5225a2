"""Hold on wake: a request for a model with no ready replica waits for one, bounded.

A model scaled to zero (or with every replica still loading) holds its requests instead
of refusing them: each waits in its model's line, in arrival order, until a replica of
the model serves; then the whole line goes, first come first. At most `max_per_model`
wait per model in this process, each at most `timeout_s` (and never past its own
deadline); past either, `HoldRefused` says which, and the caller answers 503 with
Retry-After as it did before holding existed.

Nothing polls: whoever changes what the edge routes to (a new route table, an endpoint
that starts or stops serving) calls `changed`, which looks only at the models that have
someone waiting (no work at all when nobody is held). A waiter cancelled while held (its
client left, the shutdown's grace ended) leaves the line at once, in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

from switchyard.edge import metrics
from switchyard.edge.routing.table import Route

#: What a model's line waits for: its route once a replica serves, "waiting" until then,
#: "gone" when the model is no longer routed at all.
Readiness = Route | Literal["waiting", "gone"]
Lookup = Callable[[str], Readiness]
Reason = Literal["full", "timeout", "gone"]


class HoldRefused(Exception):
    """The request is not (or no longer) held: its model's line is full, the hold timed
    out, or the model is gone."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


class Holds:
    """Every model's line of held requests in this process."""

    __slots__ = ("_lines", "_lookup", "max_per_model", "timeout_s")

    def __init__(self, lookup: Lookup, max_per_model: int, timeout_s: float) -> None:
        self._lookup = lookup
        self.max_per_model = max_per_model
        self.timeout_s = timeout_s
        #: Only models with someone waiting (emptied lines are removed).
        self._lines: dict[str, deque[asyncio.Future[Readiness]]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_per_model > 0

    def held(self, model: str) -> int:
        line = self._lines.get(model)
        return len(line) if line is not None else 0

    def changed(self) -> None:
        """What the edge routes to changed: let the lines of models now served (or gone) go,
        each in arrival order."""
        for model in list(self._lines):
            readiness = self._lookup(model)
            if readiness == "waiting":
                continue
            for waiter in self._lines.pop(model):
                if not waiter.done():
                    waiter.set_result(readiness)

    async def hold(
        self,
        model: str,
        deadline: float,
        *,
        patience_s: float | None = None,
        meanwhile: Callable[[], Awaitable[None]] | None = None,
    ) -> Route:
        """Wait until `model` has a serving replica and return its route (at once if it has
        one). `deadline` is the request's own (event-loop time). `meanwhile` runs once
        when the hold has lasted `patience_s` (a stream commits to its answer then)."""
        readiness = self._lookup(model)
        if isinstance(readiness, Route):
            return readiness
        if readiness == "gone":
            raise HoldRefused("gone")
        loop = asyncio.get_running_loop()
        started = loop.time()
        line = self._lines.setdefault(model, deque())
        if len(line) >= self.max_per_model:
            if not line:
                del self._lines[model]
            metrics.HOLD_TIME.labels(model, "full").observe(0.0)
            raise HoldRefused("full")
        waiter: asyncio.Future[Readiness] = loop.create_future()
        line.append(waiter)
        held = metrics.HELD.labels(model)
        held.inc()
        outcome = "left"  # cancelled while held: the client left, or the shutdown
        try:
            async with asyncio.timeout_at(min(deadline, started + self.timeout_s)):
                readiness = await self._wait(waiter, patience_s, meanwhile)
            outcome = "served" if isinstance(readiness, Route) else "gone"
        except TimeoutError:
            outcome = "timeout"
            raise HoldRefused("timeout") from None
        finally:
            held.dec()
            self._leave(model, waiter)
            metrics.HOLD_TIME.labels(model, outcome).observe(loop.time() - started)
        if not isinstance(readiness, Route):
            raise HoldRefused("gone")
        return readiness

    @staticmethod
    async def _wait(
        waiter: asyncio.Future[Readiness],
        patience_s: float | None,
        meanwhile: Callable[[], Awaitable[None]] | None,
    ) -> Readiness:
        if meanwhile is not None and patience_s is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience_s):
                    # Shielded: the patience running out must not cancel the wait itself.
                    return await asyncio.shield(waiter)
            await meanwhile()
        return await waiter

    def _leave(self, model: str, waiter: asyncio.Future[Readiness]) -> None:
        """Out of the line (still in it unless `changed` let it go), and the line with it
        when it is empty."""
        if not waiter.done():
            waiter.cancel()
        line = self._lines.get(model)
        if line is None:
            return
        with contextlib.suppress(ValueError):
            line.remove(waiter)
        if not line:
            del self._lines[model]
