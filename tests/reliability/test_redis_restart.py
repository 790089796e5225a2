"""Redis restarted while requests flow: the documented failure modes, never a 500.

`EDGE_RATE_LIMIT_FAILURE_MODE=closed` (the default): while Redis is away, limited keys
get 503 with Retry-After; `open`: they go through. Once Redis is back (empty: no data,
no script cache), both serve again. Two edges share the Redis, one in each mode, and
load runs against both from before the stop until after the start.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
import pytest

from tests.reliability.helpers import Baseline
from tests.support.edge import Edge, KeySpec, start_edge, write_keys
from tests.support.polling import eventually
from tests.support.processes import started_together
from tests.support.redis import RedisServer
from tests.support.stacks import start_stack

#: Redis up, being stopped, down, being started, back.
Phase = Literal["up", "stopping", "down", "starting", "back"]
#: Limits high enough never to refuse, so that every request consults Redis.
KEYS = (KeySpec("limited", rpm=1_000_000, tpm=1_000_000_000),)
BODY = {"model": "demo-vllm", "prompt": "go", "max_tokens": 2}
#: Requests each edge answers within a phase before the test moves on.
ANSWERS_PER_PHASE = 5


@dataclass(frozen=True)
class Answer:
    sent: Phase
    received: Phase
    status: int
    retry_after: str | None
    code: str | None


@pytest.fixture(scope="module")
async def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[RedisServer, Edge, Edge]]:
    log_dir = tmp_path_factory.mktemp("redis-restart")
    redis = RedisServer(log_dir)
    await asyncio.to_thread(redis.start)
    try:
        async with started_together(functools.partial(start_stack, "vllm", log_dir)) as (engine,):
            keyring = write_keys(log_dir, KEYS)
            starts = (
                functools.partial(
                    start_edge,
                    log_dir,
                    {"vllm": [engine.address]},
                    env={"EDGE_RATE_LIMIT_FAILURE_MODE": mode},
                    redis_url=redis.url,
                    name=f"edge-{mode}",
                    keyring=keyring,
                )
                for mode in ("closed", "open")
            )
            async with started_together(*starts) as (closed, open_):
                yield redis, closed, open_
    finally:
        await asyncio.to_thread(redis.close)


class Load:
    """Requests to one edge, two at a time, each tagged with the phase at send and receipt."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.phase: Phase = "up"
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()

    async def _worker(self, client: httpx.AsyncClient) -> None:
        headers = self.edge.auth("limited")
        while not self._stop.is_set():
            sent = self.phase
            response = await client.post(
                f"{self.edge.url}/v1/completions", json=BODY, headers=headers
            )
            code = (
                response.json().get("error", {}).get("code")
                if response.status_code != 200
                else None
            )
            self.answers.append(
                Answer(
                    sent,
                    self.phase,
                    response.status_code,
                    response.headers.get("retry-after"),
                    code,
                )
            )
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(self._worker(client), self._worker(client))

    def stop(self) -> None:
        self._stop.set()

    def within(self, phase: Phase) -> list[Answer]:
        """The answers to requests sent and answered in `phase` (not across a change)."""
        return [a for a in self.answers if a.sent == a.received == phase]


async def _answered_within(loads: list[Load], phase: Phase) -> None:
    await eventually(
        lambda: all(len(load.within(phase)) >= ANSWERS_PER_PHASE for load in loads),
        what=f"{ANSWERS_PER_PHASE} answers from each edge while Redis is {phase}",
    )


async def test_redis_restarted_mid_run_gives_503_or_passes_by_mode_and_never_500(
    setup: tuple[RedisServer, Edge, Edge],
) -> None:
    redis, closed, opened = setup
    baselines = [await Baseline.take(e, key="limited") for e in (closed, opened)]
    loads = [Load(closed), Load(opened)]
    tasks = [asyncio.create_task(load.run()) for load in loads]
    try:
        # Each phase lasts until both edges have answered a few requests within it, however
        # long that takes.
        await _answered_within(loads, "up")
        changes: list[tuple[Phase, Callable[[], None], Phase]] = [
            ("stopping", redis.stop, "down"),
            ("starting", redis.start, "back"),  # start() returns once Redis answers PING
        ]
        for during, change, after in changes:
            for load in loads:
                load.phase = during
            await asyncio.to_thread(change)
            for load in loads:
                load.phase = after
            await _answered_within(loads, after)
    finally:
        for load in loads:
            load.stop()
        await asyncio.gather(*tasks)

    for load in loads:
        statuses = {a.status for a in load.answers}
        assert statuses <= {200, 503}, f"{load.edge.service.name}: {statuses}"
        for served in ("up", "back"):
            assert load.within(served), f"no request ran while Redis was {served}"
            assert {a.status for a in load.within(served)} == {200}, served
        assert load.within("down"), "no request ran while Redis was down"

    down = loads[0].within("down")
    assert {a.status for a in down} == {503}, "fail-closed must refuse while Redis is down"
    assert all(a.code == "service_unavailable" and a.retry_after for a in down)
    assert {a.status for a in loads[1].within("down")} == {200}, "fail-open lets requests through"

    for baseline in baselines:
        await baseline.settled()
