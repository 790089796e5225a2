"""Fault injection: a simulated engine that stalls, so deadlines and timeouts can be tested.

`POST /sim/faults` with `{"stall_after": N, "count": K}` makes the next K requests that
would produce more than N tokens (every one while the fault is set, when K is null or
left out) produce N tokens and then stop: a stream stays open and sends nothing more, a non-streaming request never answers,
like an engine that hangs. With N = 0 nothing at all is produced (not even the first
token). Stalled requests wait until the client gives up (their generation is then
aborted as usual) or until `DELETE /sim/faults` clears the fault and lets them go on.
`GET /sim/faults` shows the fault and the requests stalled now. A simulator-only route,
hence the `/sim/` prefix.

The scheduler applies the fault (`Scheduler.faults`), so every front-end has it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.routing import Route

from switchyard.enginesim.serving import OrjsonResponse


class StallFault(BaseModel):
    """The body of `POST /sim/faults`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: Tokens a request produces before it stalls.
    stall_after: Annotated[int, Field(ge=0)]
    #: Requests to stall, then the fault is used up; None: every request until cleared.
    count: Annotated[int, Field(ge=1)] | None = None


class Faults:
    """The injected fault of one simulator (none at start)."""

    __slots__ = ("_released", "_remaining", "_stall_after", "stalled", "stalls")

    def __init__(self) -> None:
        self._stall_after: int | None = None
        self._remaining: int | None = None
        self._released = asyncio.Event()
        #: Requests stalled now.
        self.stalled = 0
        #: Requests stalled since start.
        self.stalls = 0

    def set_stall(self, after: int, count: int | None = None) -> None:
        """Stall the next `count` requests (None: all) after `after` tokens."""
        if after < 0 or (count is not None and count < 1):
            raise ValueError(f"invalid stall: after={after}, count={count}")
        self._stall_after = after
        self._remaining = count

    def clear(self) -> None:
        """No fault any more; the stalled requests go on."""
        self._stall_after = None
        self._remaining = None
        self._released.set()
        self._released = asyncio.Event()

    def claim(self, tokens: int) -> int | None:
        """For a request about to produce `tokens` tokens: after how many it stalls (None:
        it does not). Only a request that would go past the stall point stalls, and uses
        up the count."""
        after = self._stall_after
        if after is None or after >= tokens:
            return None
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining == 0:
                self._stall_after = self._remaining = None
        return after

    async def stall(self) -> None:
        """Wait until the fault is cleared (or the caller is cancelled)."""
        released = self._released
        self.stalled += 1
        self.stalls += 1
        try:
            await released.wait()
        finally:
            self.stalled -= 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "stall_after": self._stall_after,
            "count": self._remaining,
            "stalled": self.stalled,
            "stalls": self.stalls,
        }


def faults_route(faults: Faults, path: str = "/sim/faults") -> Route:
    """`GET` the fault, `POST` a `StallFault` to set it, `DELETE` to clear it."""

    async def endpoint(request: Request) -> OrjsonResponse:
        if request.method == "POST":
            try:
                fault = StallFault.model_validate_json(await request.body())
            except ValidationError as exc:
                errors = orjson.loads(exc.json(include_url=False, include_input=False))
                return OrjsonResponse({"error": errors}, status_code=400)
            faults.set_stall(fault.stall_after, fault.count)
        elif request.method == "DELETE":
            faults.clear()
        return OrjsonResponse(faults.snapshot())

    return Route(path, endpoint, methods=["GET", "POST", "DELETE"], name="sim_faults")
