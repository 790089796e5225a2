"""Background responses end to end: edge processes on one Redis, the official `openai`
SDK as the client, a real engine simulator behind; an edge SIGKILLed mid-job."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import redis.asyncio

from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from switchyard.edge.openai_responses.redis_store import response_key
from tests.edge.conftest import sim_stats
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.processes import started_together
from tests.support.redis import RedisServer
from tests.support.stacks import Stack

MODEL = "demo-vllm"
#: Each key's tenant.
TENANTS = {"full": "tests", "doomed": "tests", "other-tenant": "others"}
#: Short leases: a dead edge's jobs are taken over within seconds.
ENV = {
    "EDGE_RESPONSES_STORE": "redis",
    "EDGE_JOBS_LEASE_S": "1",
    # About sharing and takeovers, not latency: a loaded machine must not turn slow Redis
    # answers into failures.
    "EDGE_REDIS_TIMEOUT_S": "2",
}
#: Bound for the chaos test's takeover: the machine may be very busy.
TAKEOVER_S = 120.0


def write_keyring(
    directory: Path, names: tuple[str, ...] = tuple(TENANTS), plain: dict[str, str] | None = None
) -> tuple[dict[str, str], Path]:
    plain = plain or {name: generate_key() for name in TENANTS}
    entries = [
        KeyEntry(name=n, tenant=TENANTS[n], sha256=hash_key(plain[n]), models=["*"]) for n in names
    ]
    path = directory / "keys.yaml"
    staged = directory / "keys.yaml.new"
    staged.write_text(render_keys(entries))
    os.replace(staged, path)  # one swap: the edge never reads half a file
    return plain, path


@dataclass
class Setup:
    stack: Stack
    redis: RedisServer
    log_dir: Path
    #: The keys every edge knows (each edge has its own file of them, to revoke one).
    keys: dict[str, str]

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/{db}"

    def start_edge(self, name: str, db: int, **env: str) -> Edge:
        directory = self.log_dir / name
        directory.mkdir()
        return start_edge(
            directory,
            {"vllm": [self.stack.address]},
            redis_url=self.url(db),
            name=name,
            keyring=write_keyring(directory, plain=self.keys),
            env={**ENV, **env},
        )

    async def edge(self, name: str, db: int, **env: str) -> Edge:
        return await asyncio.to_thread(self.start_edge, name, db, **env)


@pytest.fixture(scope="module")
async def setup(
    engines: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    """A Redis of the module's own (a database per test's edges, so that only they share a
    queue), and the session's vLLM stack (the edge tests' own, already running)."""
    log_dir = tmp_path_factory.mktemp("background")
    server = RedisServer(log_dir)
    await asyncio.to_thread(server.start)
    try:
        yield Setup(engines["vllm"], server, log_dir, {name: generate_key() for name in TENANTS})
    finally:
        await asyncio.to_thread(server.close)


@pytest.fixture(scope="module")
async def pair(setup: Setup) -> AsyncIterator[tuple[Edge, Edge]]:
    """Two edges on one Redis (database 0), started at once (each start is mostly waiting)."""
    starts = (functools.partial(setup.start_edge, name, 0) for name in ("edge-a", "edge-b"))
    async with started_together(*starts) as (a, b):
        yield a, b


def client(edge: Edge, key: str = "full", other: Edge | None = None) -> openai.AsyncOpenAI:
    keys = (other or edge).keys
    return openai.AsyncOpenAI(base_url=f"{edge.url}/v1", api_key=keys[key], max_retries=0)


async def until_status(
    sdk: openai.AsyncOpenAI, response_id: str, *statuses: str, within_s: float = 30.0
) -> Any:
    async def ended() -> Any:
        response = await sdk.responses.retrieve(response_id)
        return response if response.status in statuses else None

    return await eventually(ended, within_s=within_s, what=f"{response_id} {statuses}")


async def test_a_background_response_is_polled_to_completion_through_another_edge(
    pair: tuple[Edge, Edge],
) -> None:
    a, b = pair
    created = await client(a).responses.create(
        model=MODEL, input="Say something.", background=True, max_output_tokens=16
    )
    assert created.status == "queued"
    assert created.background is True
    done = await until_status(client(b, other=a), created.id, "completed", "incomplete")
    assert done.output_text
    assert done.usage is not None
    assert done.usage.output_tokens > 0
    with pytest.raises(openai.NotFoundError):
        await client(b, "other-tenant", other=a).responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client(a, "other-tenant").responses.cancel(created.id)


async def test_a_response_written_by_one_edge_is_continued_through_another(
    pair: tuple[Edge, Edge],
) -> None:
    a, b = pair
    first = await client(a).responses.create(model=MODEL, input="My name is Ada.")
    read = await client(b, other=a).responses.retrieve(first.id)
    assert read.id == first.id
    assert read.output_text == first.output_text
    second = await client(b, other=a).responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id
    )
    assert second.status == "completed"
    items = await client(b, other=a).responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    with pytest.raises(openai.BadRequestError):  # another tenant cannot continue it
        await client(b, "other-tenant", other=a).responses.create(
            model=MODEL, input="And now?", previous_response_id=first.id
        )


async def test_a_running_background_response_is_cancelled_from_another_edge(
    pair: tuple[Edge, Edge], setup: Setup
) -> None:
    a, b = pair
    before = await sim_stats(setup.stack)
    async with setup.stack.stalled(count=1):
        created = await client(a).responses.create(
            model=MODEL, input="Go on.", background=True, max_output_tokens=500
        )

        async def stalled_in_engine() -> bool:
            stats = await sim_stats(setup.stack)
            return bool(stats["requests"] > before["requests"] and stats["in_flight"] > 0)

        await eventually(stalled_in_engine, what="the job's generation stalled in the engine")
        cancelled = await client(b, other=a).responses.cancel(created.id)
        assert cancelled.status == "cancelled"

        async def aborted() -> bool:
            return bool((await sim_stats(setup.stack))["aborted"] > before["aborted"])

        await eventually(aborted, what="the engine's generation aborted")
    with pytest.raises(openai.BadRequestError, match="cancel"):
        await client(a).responses.cancel(created.id)
    assert (await client(a).responses.retrieve(created.id)).status == "cancelled"


async def test_a_background_stream_is_resumed_after_a_sequence_number(
    pair: tuple[Edge, Edge],
) -> None:
    a, b = pair
    stream = await client(a).responses.create(
        model=MODEL, input="Tell a story.", background=True, stream=True, max_output_tokens=24
    )
    events = [e async for e in stream]
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(numbers)))
    assert events[-1].type in ("response.completed", "response.incomplete")
    response_id = events[0].response.id  # type: ignore[union-attr]
    after = len(events) // 2
    resumed = await client(b, other=a).responses.retrieve(
        response_id, stream=True, starting_after=after
    )
    again = [e async for e in resumed]
    assert [e.model_dump() for e in again] == [e.model_dump() for e in events[after + 1 :]]


async def test_a_full_queue_answers_429_and_a_revoked_keys_job_fails(setup: Setup) -> None:
    edge = await setup.edge(
        "edge-bounded", 1, EDGE_JOBS_MAX_QUEUED="2", EDGE_JOBS_CONCURRENCY_PER_MODEL="1"
    )
    try:
        sdk, doomed = client(edge), client(edge, "doomed")
        async with setup.stack.stalled(count=1):
            running = await sdk.responses.create(
                model=MODEL, input="Hold on.", background=True, max_output_tokens=200
            )
            await until_status(sdk, running.id, "in_progress")  # held in the engine
            waiting = await doomed.responses.create(model=MODEL, input="Me next.", background=True)
            with pytest.raises(openai.RateLimitError):  # one running, one waiting: full
                await sdk.responses.create(model=MODEL, input="And me.", background=True)
            # The doomed key is revoked while its job waits.
            write_keyring(edge.keys_file.parent, ("full", "other-tenant"), edge.keys)

            async def revoked() -> bool:
                try:
                    await doomed.models.list()
                except openai.AuthenticationError:
                    return True
                return False

            await eventually(revoked, what="the key revoked")
        failed = await until_status(sdk, waiting.id, "failed")
        assert failed.error is not None
        assert "revoked" in failed.error.message
        await until_status(sdk, running.id, "completed", "incomplete")
    finally:
        await asyncio.to_thread(edge.stop)


async def test_the_jobs_of_an_edge_killed_mid_run_complete_once_on_another(setup: Setup) -> None:
    jobs = 20
    first = await setup.edge("edge-doomed", 2, EDGE_JOBS_CONCURRENCY_PER_MODEL=str(jobs))
    second: Edge | None = None
    before = await sim_stats(setup.stack)
    try:
        async with setup.stack.stalled(count=jobs):
            sdk = client(first)
            created = [
                await sdk.responses.create(
                    model=MODEL, input=f"Job {i}.", background=True, max_output_tokens=8
                )
                for i in range(jobs)
            ]

            async def all_in_engine() -> bool:
                stats = await sim_stats(setup.stack)
                return bool(stats["requests"] - before["requests"] == jobs)

            await eventually(all_in_engine, what="every job running on the first edge")
            second = await setup.edge("edge-survivor", 2)
            first.service.signal(signal.SIGKILL)
            survivor = client(second, other=first)
            for response in created:
                await until_status(
                    survivor, response.id, "completed", "incomplete", within_s=TAKEOVER_S
                )
        async with redis.asyncio.Redis.from_url(setup.url(2)) as store:
            for response in created:
                record = await store.hgetall(response_key("tests", response.id))
                assert record[b"completions"] == b"1", record.get(b"completions")
                assert record[b"attempt"] == b"2"  # one take on each edge
        after = await sim_stats(setup.stack)
        # Each job ran twice in the engine (the killed run, then the taken-over one) and
        # completed there once.
        assert after["requests"] - before["requests"] == 2 * jobs
        assert after["completed"] - before["completed"] == jobs
    finally:
        await asyncio.to_thread(first.stop)
        if second is not None:
            await asyncio.to_thread(second.stop)


async def test_an_edge_stopping_mid_job_gives_it_back_to_another(setup: Setup) -> None:
    stopping = await setup.edge("edge-stopping", 3)
    other: Edge | None = None
    before = await sim_stats(setup.stack)
    try:
        async with setup.stack.stalled(count=1):
            sdk = client(stopping)
            created = await sdk.responses.create(
                model=MODEL, input="Hold on.", background=True, max_output_tokens=8
            )

            async def in_engine() -> bool:
                return bool((await sim_stats(setup.stack))["in_flight"] > before["in_flight"])

            await eventually(in_engine, what="the job running on the first edge")
            other = await setup.edge("edge-taking", 3)
            await asyncio.to_thread(stopping.stop)  # SIGTERM: a clean shutdown
            # Given back (not failed): the other edge runs it, with no lease to wait out.
            done = await until_status(client(other), created.id, "completed", "incomplete")
        assert done.error is None
        async with redis.asyncio.Redis.from_url(setup.url(3)) as store:
            record = await store.hgetall(response_key("tests", created.id))
        assert record[b"attempt"] == b"2"
        assert record[b"completions"] == b"1"
    finally:
        await asyncio.to_thread(stopping.stop)
        if other is not None:
            await asyncio.to_thread(other.stop)
