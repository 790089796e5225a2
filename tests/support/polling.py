"""Waiting in tests: poll a condition until it holds, within a generous bound.

CI is a loaded 2-core machine, so no test may assume how long anything takes: never
`sleep(x)` and then assert, never assert a duration. Wait for the state instead:

    await eventually(lambda: scheduler.waiting == 1, what="one request queued")
    stats = await eventually(settled, what="the stream aborted")   # an async condition
    eventually_sync(lambda: sim.log_tail().count("listening"), what="listening")

The condition's first truthy result is returned. Exceptions of the types in `ignore` count
as "not yet" (a server that does not listen yet); any other exception ends the wait at
once. When the bound passes, `NotYet` (an AssertionError) says what was awaited and the
last result or exception seen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

#: The bound for anything a test waits for: long enough for a loaded machine, short
#: enough that a real hang fails the test well before pytest's own timeout.
TIMEOUT_S = 30.0
#: Between two polls: cheap conditions can afford a short one.
INTERVAL_S = 0.02


class NotYet(AssertionError):
    """The condition did not hold within the bound."""


def _failure(what: str, within_s: float, last: object) -> NotYet:
    return NotYet(f"not within {within_s:g} s: {what or 'the condition'} (last: {last!r})")


def eventually_sync(
    condition: Callable[[], T | None],
    *,
    within_s: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
    what: str = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `condition` until it returns a truthy value, and return that value."""
    deadline = time.monotonic() + within_s
    last: object = None
    while True:
        try:
            result = condition()
        except ignore as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise _failure(what, within_s, last)
        time.sleep(interval)


@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]],
    *,
    within_s: float = ...,
    interval: float = ...,
    what: str = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T | None],
    *,
    within_s: float = ...,
    interval: float = ...,
    what: str = ...,
    ignore: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], object],
    *,
    within_s: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
    what: str = "",
    ignore: tuple[type[BaseException], ...] = (),
) -> object:
    """`eventually_sync` for the event loop: `condition` may be sync or async, and the
    loop keeps running between polls."""
    deadline = time.monotonic() + within_s
    last: object = None
    while True:
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
        except ignore as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise _failure(what, within_s, last)
        await asyncio.sleep(interval)
