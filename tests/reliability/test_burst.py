"""A burst of streams far past the admission limit: 429s with Retry-After, never a 5xx, no
crash, and memory that does not grow from one burst to the next."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.reliability.helpers import Baseline, StreamOutcome, chat, edge_process, read_stream
from tests.support.edge import Edge, start_edge
from tests.support.stacks import Stack, options, start_stack

IN_FLIGHT, QUEUE = 8, 8
BURST = 300
BURSTS = 3
#: A burst may leave the allocator a little bigger; growing by more than this from the first
#: burst to the last would be memory kept per request.
GROWTH_MIB = 16


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Edge]]:
    log_dir = tmp_path_factory.mktemp("burst")
    engine = await asyncio.to_thread(start_stack, "vllm", log_dir, options(itl_s=0.005))
    env = {
        "EDGE_MAX_IN_FLIGHT": str(IN_FLIGHT),
        "EDGE_MAX_IN_FLIGHT_PER_MODEL": str(IN_FLIGHT),
        "EDGE_MAX_QUEUE": str(QUEUE),
        # One line per request: if a request ever goes unanswered, the log says where.
        "EDGE_LOG_LEVEL": "INFO",
    }
    try:
        edge = await asyncio.to_thread(start_edge, log_dir, {"vllm": [engine.address]}, env=env)
    except BaseException:
        await asyncio.to_thread(engine.stop)
        raise
    try:
        yield engine, edge
    finally:
        await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(engine.stop)


async def _burst(stack: Stack, edge: Edge) -> list[StreamOutcome]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)

    async def one(client: httpx.AsyncClient) -> StreamOutcome | tuple[str, str]:
        request_id = uuid.uuid4().hex
        try:
            return await read_stream(client, edge, chat(100), request_id=request_id)
        except httpx.TimeoutException as exc:
            return type(exc).__name__, request_id

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        outcomes = await asyncio.gather(*(one(client) for _ in range(BURST)))
    lost = [o for o in outcomes if isinstance(o, tuple)]
    unanswered = Counter(name for name, _ in lost)
    if unanswered:
        # Every request must be answered (a 200 stream or a 429) long before the client's
        # timeout: say where the edge stood, to find out why one was not.
        samples = await edge.metrics()
        gauges = {
            name: value
            for (name, _), value in samples.items()
            if name.startswith(("switchyard_edge_in_flight", "switchyard_edge_queued"))
        }
        logged = [r for r in edge.records() if "status" in r]
        records = Counter(r["status"] for r in logged)
        # Did the edge answer the lost ones (the answer then lost on its way) or not?
        ids = {request_id for _, request_id in lost}
        theirs = Counter(
            (r["status"], r.get("error"), r.get("client_disconnected"))
            for r in logged
            if r.get("request_id") in ids
        )
        pytest.fail(
            f"unanswered within 60 s: {dict(unanswered)}; edge gauges {gauges}; edge "
            f"records by status {dict(records)}; the unanswered ones' records (status, "
            f"error, client gone): {dict(theirs)} of {len(ids)}"
            f"\nedge log:\n{edge.service.log_tail(60)}"
            f"\nadapter log:\n{stack.adapter.log_tail(30)}\nsim log:\n{stack.sim.log_tail(30)}"
        )
    return [o for o in outcomes if isinstance(o, StreamOutcome)]


def _rss_mib(edge: Edge) -> float:
    return edge_process(edge).memory_info().rss / 2**20


async def test_a_burst_past_admission_is_refused_with_429_and_memory_stays_bounded(
    stack: tuple[Stack, Edge],
) -> None:
    engine, edge = stack
    baseline = await Baseline.take(edge)
    rss: list[float] = []
    for _ in range(BURSTS):
        outcomes = await _burst(engine, edge)
        assert edge.service.alive(), edge.service.log_tail()
        statuses = Counter(o.status for o in outcomes)
        assert set(statuses) <= {200, 429}, statuses
        # At most IN_FLIGHT + QUEUE are held at once; the rest of a burst that arrives
        # together is refused at once (a few may be let in as the first streams end).
        assert statuses[429] >= BURST - 4 * (IN_FLIGHT + QUEUE), statuses
        for o in outcomes:
            if o.status == 200:
                assert o.done, "an admitted stream did not end with [DONE]"
                assert o.error is None
                assert o.finish_reason == "length"
            else:
                assert int(o.headers["retry-after"]) >= 1
                assert b"server_busy" in o.body
        await baseline.settled()
        rss.append(await asyncio.to_thread(_rss_mib, edge))
    assert rss[-1] - rss[0] < GROWTH_MIB, f"edge RSS after each burst (MiB): {rss}"
