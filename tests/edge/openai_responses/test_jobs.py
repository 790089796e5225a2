"""Background jobs' queue, leases, cancels and event logs, in memory and on real Redis,
with a runner of the test's own in place of the engines. Every case in memory and on one
Redis server; on Sentinel and Cluster too (`@every_kit`), what goes through the topology
differently: the queue and event streams, a follower's blocking read, a cancel's pub/sub,
a lease's takeover, jobs spread over models' slots between two edges."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from switchyard.edge.openai_responses.jobs import BackgroundJobs, JobsFull, NotCancellable
from switchyard.edge.openai_responses.memory import MemoryResponseStore
from switchyard.edge.openai_responses.memory_jobs import MemoryJobs
from switchyard.edge.openai_responses.redis_jobs import RedisJobs
from switchyard.edge.openai_responses.redis_store import RedisResponseStore, response_key
from switchyard.edge.openai_responses.store import ResponseStore, StoredResponse
from switchyard.edge.openai_responses.workers import EventLog, Job, Renewal
from switchyard.edge.redis_pool import RedisConnections
from tests.support.polling import eventually
from tests.support.redis_topology import (
    RedisTopology,
    cluster_topology,
    sentinel_topology,
    single_topology,
)

TENANT = "acme"


def event(kind: str, sequence: int, **fields: Any) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": sequence, **fields})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def queued(model: str = "m") -> StoredResponse:
    response_id = f"resp_{uuid.uuid4().hex}"
    response = {"id": response_id, "object": "response", "status": "queued", "output": []}
    request = orjson.dumps({"model": model, "input": "hi", "background": True})
    return StoredResponse(response_id, TENANT, "full", response, request=request)


@dataclass
class FakeRunner:
    """Logs `response.created`, waits for its gate (when one is set), then completes."""

    runs: list[tuple[str, int]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    hold_all: bool = False

    def gate(self, response_id: str) -> asyncio.Event:
        return self.gates.setdefault(response_id, asyncio.Event())

    async def __call__(self, job: Job, log: EventLog) -> StoredResponse:
        self.runs.append((job.response_id, job.attempt))
        await log(0, event("response.created", 0), False)
        try:
            if self.hold_all or job.response_id in self.gates:
                await self.gate(job.response_id).wait()
        except asyncio.CancelledError:
            self.cancelled.append(job.response_id)
            raise
        await log(1, event("response.output_text.delta", 1, delta=f"run {job.attempt}"), False)
        response = {**job.stored.response, "status": "completed", "attempt": job.attempt}
        await log(2, event("response.completed", 2, response=response), True)
        return StoredResponse(job.response_id, job.tenant, job.stored.key_name, response)


@dataclass
class Kit:
    kind: str
    store: ResponseStore
    runner: FakeRunner
    #: A jobs instance on the kit's store (another edge process, for Redis); not started.
    make: Callable[..., BackgroundJobs]
    #: How many times the response was stored as finished (Redis: the record's count).
    completions: Callable[[str], Awaitable[int]]
    started: list[BackgroundJobs] = field(default_factory=list)

    async def jobs(self, **options: Any) -> BackgroundJobs:
        jobs = self.make(**options)
        await jobs.start()
        self.started.append(jobs)
        return jobs


def _redis_kit(kind: str, topology: RedisTopology) -> tuple[Kit, list[RedisConnections]]:
    opened: list[RedisConnections] = []

    def connections(timeout_s: float = 2.0) -> RedisConnections:
        c = RedisConnections(
            topology.url,
            max_connections=16,
            timeout_s=timeout_s,
            connect_timeout_s=2.0,
            pool_timeout_s=5.0,
        )
        opened.append(c)
        return c

    store = RedisResponseStore(connections(), ttl_s=600, max_bytes=64 * 1024)
    runner = FakeRunner()
    queue = f"test-jobs:{uuid.uuid4().hex}"

    def make(
        runner: FakeRunner = runner,
        lease_s: float = 30.0,
        max_queued: int = 100,
        jobs_type: type[RedisJobs] = RedisJobs,
    ) -> BackgroundJobs:
        own = RedisResponseStore(connections(), ttl_s=600, max_bytes=64 * 1024)
        return jobs_type(
            own,
            connections(timeout_s=3.0),
            connections(timeout_s=3.0),
            runner,
            concurrency_per_model=4,
            max_queued=max_queued,
            lease_s=lease_s,
            queue=queue,
        )

    async def completions(response_id: str) -> int:
        async with topology.client() as client:
            count = await client.hget(response_key(TENANT, response_id), "completions")
        return int(count or 0)

    return Kit(kind, store, runner, make, completions), opened


def _memory_kit() -> Kit:
    store = MemoryResponseStore(max_entries=1000, ttl_s=600, max_bytes=64 * 1024)
    runner = FakeRunner()

    def make(
        runner: FakeRunner = runner, lease_s: float = 30.0, max_queued: int = 100
    ) -> BackgroundJobs:
        return MemoryJobs(
            store,
            runner,
            concurrency_per_model=4,
            max_queued=max_queued,
            max_entries=1000,
            lease_s=lease_s,
        )

    async def completions(response_id: str) -> int:
        stored = await store.get(TENANT, response_id)
        return int(stored is not None and stored.response.get("status") == "completed")

    return Kit("memory", store, runner, make, completions)


#: Every case runs in memory and on one Redis server.
KITS = ("memory", "single")
#: Redis's other topologies too: for the cases that differ by topology (the stores' logic
#: is the same whichever server holds the keys; see `tests.support.redis_topology`).
every_kit = pytest.mark.parametrize("kit", [*KITS, "sentinel", "cluster"], indirect=True)


@pytest.fixture(params=KITS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    opened: list[RedisConnections] = []
    if request.param == "memory":
        built = _memory_kit()
    else:
        topology = {
            "single": lambda: single_topology(request.getfixturevalue("redis_single")),
            "sentinel": lambda: sentinel_topology(request.getfixturevalue("redis_sentinel_set")),
            "cluster": lambda: cluster_topology(request.getfixturevalue("redis_cluster_set")),
        }[request.param]()
        built, opened = _redis_kit(request.param, topology)
    try:
        yield built
    finally:
        for gate in built.runner.gates.values():
            gate.set()
        for jobs in built.started:
            await jobs.close()
        for connections in opened:
            await connections.close()


async def status(kit: Kit, response_id: str) -> str | None:
    stored = await kit.store.get(TENANT, response_id)
    return None if stored is None else stored.response.get("status")


async def collect(events: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    out = []
    async with asyncio.timeout(30):
        async for chunk in events:
            data = chunk.split(b"data: ", 1)[1]
            out.append(orjson.loads(data))
    return out


@every_kit
async def test_a_job_is_queued_then_runs_to_completion_with_its_events(kit: Kit) -> None:
    stored = queued()
    kit.runner.gate(stored.id)
    jobs = kit.make()
    await jobs.submit(stored)
    assert await status(kit, stored.id) == "queued"  # no worker yet
    await jobs.start()
    kit.started.append(jobs)
    await eventually(lambda: status(kit, stored.id), what="in progress")  # taken
    await eventually(lambda: _is(status(kit, stored.id), "in_progress"), what="the job in progress")
    kit.runner.gate(stored.id).set()
    await eventually(lambda: _is(status(kit, stored.id), "completed"), what="completed")
    assert kit.runner.runs == [(stored.id, 1)]
    assert await kit.completions(stored.id) == 1
    events = await collect(jobs.events(TENANT, stored.id, -1))
    assert [e["sequence_number"] for e in events] == [0, 1, 2]
    assert events[-1]["type"] == "response.completed"
    resumed = await collect(jobs.events(TENANT, stored.id, 0))
    assert [e["sequence_number"] for e in resumed] == [1, 2]
    assert await collect(jobs.events("other-tenant", stored.id, -1)) == []


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


@every_kit
async def test_a_follower_gets_each_event_as_it_is_produced(kit: Kit) -> None:
    stored = queued()
    gate = kit.runner.gate(stored.id)
    jobs = await kit.jobs()
    await jobs.submit(stored)
    follower = jobs.events(TENANT, stored.id, -1)
    first = await asyncio.wait_for(anext(follower), 30)
    assert b"response.created" in first
    gate.set()
    rest = await collect(follower)
    assert [e["type"] for e in rest] == ["response.output_text.delta", "response.completed"]


async def test_a_queued_job_cancelled_never_runs(kit: Kit) -> None:
    stored = queued()
    jobs = kit.make()
    await jobs.submit(stored)
    cancelled = await jobs.cancel(TENANT, stored.id)
    assert cancelled is not None
    assert cancelled.response["status"] == "cancelled"
    with pytest.raises(NotCancellable):
        await jobs.cancel(TENANT, stored.id)
    assert await jobs.cancel("other-tenant", stored.id) is None
    other = queued()
    await jobs.submit(other)  # runs after the cancelled one would have
    await jobs.start()
    kit.started.append(jobs)
    await eventually(lambda: _is(status(kit, other.id), "completed"), what="the next job done")
    assert [r for r, _ in kit.runner.runs] == [other.id]
    assert await status(kit, stored.id) == "cancelled"
    assert await collect(jobs.events(TENANT, stored.id, -1)) == []  # ends at once


@every_kit
async def test_a_running_job_cancelled_from_another_instance_stops_at_once(kit: Kit) -> None:
    stored = queued()
    kit.runner.gate(stored.id)  # never opened: only the cancel ends it
    # A lease far longer than the test: the cancel must not wait for a renewal.
    runner = await kit.jobs(lease_s=600)
    await runner.submit(stored)
    await eventually(lambda: kit.runner.runs, what="the job running")
    other = runner if kit.kind == "memory" else kit.make(lease_s=600)  # another edge
    cancelled = await other.cancel(TENANT, stored.id)
    assert cancelled is not None
    assert cancelled.response["status"] == "cancelled"
    await eventually(lambda: kit.runner.cancelled == [stored.id], what="the run cancelled")
    assert await status(kit, stored.id) == "cancelled"
    assert await kit.completions(stored.id) == 0
    with pytest.raises(NotCancellable, match="cancelled"):
        await other.cancel(TENANT, stored.id)


async def test_a_full_queue_refuses_and_keeps_nothing(kit: Kit) -> None:
    jobs = kit.make(max_queued=2)  # not started: nothing is taken off the queue
    first, second, third = queued(), queued(), queued()
    await jobs.submit(first)
    await jobs.submit(second)
    with pytest.raises(JobsFull):
        await jobs.submit(third)
    assert await kit.store.get(TENANT, third.id) is None
    assert await status(kit, first.id) == "queued"


async def test_a_finished_response_is_not_cancellable(kit: Kit) -> None:
    jobs = await kit.jobs()
    stored = queued()
    await jobs.submit(stored)
    await eventually(lambda: _is(status(kit, stored.id), "completed"), what="completed")
    with pytest.raises(NotCancellable, match="completed"):
        await jobs.cancel(TENANT, stored.id)
    plain = StoredResponse(f"resp_{uuid.uuid4().hex}", TENANT, "full", {"status": "completed"})
    await kit.store.put(plain)
    with pytest.raises(NotCancellable, match="background"):
        await jobs.cancel(TENANT, plain.id)


class _Frozen(RedisJobs):
    """An edge that stopped renewing its leases (paused, or cut off) but still runs."""

    async def renew(self, job: Job) -> Renewal:
        await asyncio.Future()  # never answers
        raise AssertionError("not reached")

    async def take(self, running: Container[str]) -> Job | None:
        if running:  # frozen once it holds a job: it reads the queue no more either
            await asyncio.Future()
        return await super().take(running)


# Redis only: with memory, one process holds the queue, and no other edge can take a job over.
@pytest.mark.parametrize("kit", ["single", "sentinel", "cluster"], indirect=True)
async def test_a_job_whose_lease_ran_out_is_taken_over_and_completes_once(kit: Kit) -> None:
    stored = queued()
    frozen_runner = FakeRunner()
    gate = frozen_runner.gate(stored.id)
    frozen = await kit.jobs(runner=frozen_runner, lease_s=1.0, jobs_type=_Frozen)
    await frozen.submit(stored)
    await eventually(lambda: frozen_runner.runs, what="the first edge running the job")
    taker = await kit.jobs(lease_s=1.0)  # the other edge: its runner completes at once
    await eventually(lambda: _is(status(kit, stored.id), "completed"), what="taken over")
    assert kit.runner.runs == [(stored.id, 2)]
    # The first edge wakes up and finishes its own run: refused, and its events too.
    gate.set()
    workers = frozen.workers  # type: ignore[attr-defined]
    await eventually(lambda: bool(frozen_runner.runs) and not workers.running, what="ended")
    assert await kit.completions(stored.id) == 1
    final = await kit.store.get(TENANT, stored.id)
    assert final is not None
    assert final.response["attempt"] == 2
    events = await collect(taker.events(TENANT, stored.id, -1))
    assert [e.get("delta") for e in events if "delta" in e] == ["run 2"]


async def test_a_stopping_edge_gives_its_jobs_back(kit: Kit) -> None:
    stored = queued()
    held = FakeRunner(hold_all=True)
    first = kit.make(runner=held, lease_s=600)  # a lease no test waits out
    await first.start()
    await first.submit(stored)
    await eventually(lambda: held.runs, what="the job running")
    await first.close()
    assert held.cancelled == [stored.id]
    if kit.kind == "memory":  # nothing else will run it
        assert await status(kit, stored.id) == "failed"
        return
    # Given back: another edge takes it without waiting for the lease.
    await kit.jobs(lease_s=600)
    await eventually(lambda: _is(status(kit, stored.id), "completed"), what="run elsewhere")
    assert kit.runner.runs == [(stored.id, 2)]
    assert await kit.completions(stored.id) == 1


@every_kit
async def test_many_jobs_each_complete_once_across_two_edges(kit: Kit) -> None:
    first, second = await kit.jobs(), await kit.jobs()
    submitted = [queued(model=f"m{i % 3}") for i in range(12)]
    for i, stored in enumerate(submitted):
        await (first if i % 2 else second).submit(stored)

    async def all_done() -> bool:
        return all([await _is(status(kit, s.id), "completed") for s in submitted])

    await eventually(all_done, what="every job completed")
    for stored in submitted:
        assert await kit.completions(stored.id) == 1
    assert {r for r, _ in kit.runner.runs} == {s.id for s in submitted}
