"""Driving one request through the engine: unary, best-of, or token by token.

Shared by the native, chat and completions front-ends, which only format the results.
Every run is counted in `SimStats` (with the caller's `traceparent`) and, if the client
goes away, as a dropped request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from switchyard.enginesim.scheduler import Overloaded
from switchyard.enginesim.tgi.engine import Outcome, TgiEngine
from switchyard.enginesim.tgi.errors import InferError
from switchyard.enginesim.tgi.params import Parameters
from switchyard.enginesim.tgi.stopping import OutToken

T = TypeVar("T")
log = logging.getLogger("switchyard.enginesim.tgi")


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a route knows about a request before it runs."""

    request_id: str  # TGI has none in the body: `x-request-id`, else a fresh one
    traceparent: str | None
    received_at: float

    @classmethod
    def of(cls, request: Request) -> Incoming:
        headers = request.headers
        return cls(
            headers.get("x-request-id") or uuid.uuid4().hex,
            headers.get("traceparent"),
            time.perf_counter(),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """One streamed token; `outcome` is set on the last one."""

    index: int
    token: OutToken
    top_tokens: Sequence[OutToken]
    outcome: Outcome | None


async def run_unary(
    engine: TgiEngine,
    incoming: Incoming,
    inputs: str,
    parameters: Parameters,
    *,
    add_special_tokens: bool = True,
) -> Outcome:
    """A whole generation (raises InferError or Overloaded)."""
    valid = await engine.validate(inputs, parameters, add_special_tokens=add_special_tokens)
    async with engine.admitted(valid, incoming.received_at) as outcome:
        await engine.sleep(outcome)
    engine.succeeded(outcome, incoming.received_at)
    return outcome


async def run_best_of(
    engine: TgiEngine, incoming: Incoming, inputs: str, parameters: Parameters
) -> list[Outcome]:
    """`best_of` generations at once, each with its own permit (as TGI runs them), best first."""
    best_of = parameters.best_of or 1
    if best_of <= 1:
        return [await run_unary(engine, incoming, inputs, parameters)]
    engine.validator.validate_best_of(best_of)
    outcomes = await all_or_none(
        [run_unary(engine, incoming, inputs, parameters) for _ in range(best_of)]
    )
    return sorted(outcomes, key=_mean_logprob, reverse=True)


def _mean_logprob(outcome: Outcome) -> float:
    tokens = outcome.decoded.tokens
    return sum(t.logprob for t in tokens) / max(len(tokens), 1)


async def all_or_none(work: Sequence[Awaitable[T]]) -> list[T]:
    """All results, or the first error with the rest cancelled."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def steps(
    engine: TgiEngine,
    incoming: Incoming,
    inputs: str,
    parameters: Parameters,
    *,
    add_special_tokens: bool = True,
) -> AsyncIterator[Step]:
    """The tokens as the model produces them (raises InferError or Overloaded)."""
    valid = await engine.validate(inputs, parameters, add_special_tokens=add_special_tokens)
    async with engine.admitted(valid, incoming.received_at) as outcome:
        last = outcome.decoded.generated_tokens
        index = 0
        async for token in engine.pace(outcome):
            index += 1
            top = outcome.top_tokens[index - 1] if outcome.top_tokens else ()
            if index == last:
                engine.succeeded(outcome, incoming.received_at)
                yield Step(index, token, top, outcome)
            else:
                yield Step(index, token, top, None)


async def tracked(
    engine: TgiEngine,
    incoming: Incoming,
    events: AsyncGenerator[bytes, None],
    on_error: Callable[[InferError], bytes],
    tail: bytes = b"",
) -> AsyncIterator[bytes]:
    """A stream's events, counted; an error becomes `on_error`'s event; then `tail`."""
    try:
        with (
            engine.stats.track(incoming.request_id, incoming.traceparent, stream=True),
            engine.counting_drops(),
        ):
            async with contextlib.aclosing(events):
                async for chunk in events:
                    yield chunk
    except Overloaded:
        yield on_error(InferError("overloaded"))
    except InferError as error:
        yield on_error(error)
    except Exception as exc:  # never cut a stream off: report it as TGI reports a failed shard
        log.exception("stream failed")
        yield on_error(engine.fail(InferError("generation", f"{type(exc).__name__}: {exc}")))
    if tail:
        yield tail
