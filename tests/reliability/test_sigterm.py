"""SIGTERM to the edge while streams are in flight: they finish normally within the grace
period, new connections are refused at once (the listening socket closes), and the
process exits 0 after the last stream, without waiting out the grace period.

The scenario runs once (`shutdown`); the tests below check what it saw. The engine holds
the streams (its stall fault) until the edge has stopped listening, so they are in flight
at the signal and after it, however slow the machine.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.reliability.helpers import StreamOutcome, chat, read_stream
from tests.support.edge import Edge, start_edge
from tests.support.polling import TIMEOUT_S, NotYet, eventually
from tests.support.stacks import Stack, options, start_stack

#: EDGE_SHUTDOWN_GRACE_S: an hour, so an edge that exits during the test did not wait it out.
GRACE_S = 3600.0
STREAMS = 5
TOKENS = 400
#: Tokens each stream gets before the engine holds it.
HELD_AFTER = 5


@dataclass
class Shutdown:
    in_flight_at_signal: float
    answered_before_close: list[int]  # requests on new connections until one was refused
    refused: bool
    streams: list[StreamOutcome]
    exit_code: int | None  # None: still running TIMEOUT_S after the last stream
    engine_stats: dict[str, Any]
    log: str


async def _until_refused(edge: Edge) -> tuple[list[int], bool]:
    """Send requests on fresh connections until one is refused: (statuses before, refused)."""
    answered: list[int] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def refused() -> bool:
            try:
                response = await client.post(
                    f"{edge.url}/v1/chat/completions", json=chat(2), headers=edge.auth()
                )
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # Refused: no listener any more, or a connection accepted just as the
                # listener closed and then dropped without an answer (nothing was processed).
                return True
            answered.append(response.status_code)
            return False

        try:
            await eventually(refused, what="a new connection refused")
        except NotYet:
            return answered, False
    return answered, True


def _wait_exit(edge: Edge, timeout: float) -> int | None:
    try:
        return edge.service.process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


async def _all_held(client: httpx.AsyncClient, engine: Stack) -> bool:
    return bool((await client.get(f"{engine.sim_url}/sim/faults")).json()["stalled"] == STREAMS)


async def _sigterm_during_streams(engine: Stack, edge: Edge) -> Shutdown:
    async with httpx.AsyncClient(timeout=60) as client:
        async with engine.stalled(after=HELD_AFTER):
            streams = [
                asyncio.create_task(read_stream(client, edge, chat(TOKENS, logprobs=True)))
                for _ in range(STREAMS)
            ]
            await eventually(lambda: _all_held(client, engine), what="every stream held")
            in_flight = await edge.in_flight()
            edge.service.signal(signal.SIGTERM)
            answered, refused = await _until_refused(edge)
        # The fault is cleared: the streams go on to their end.
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*streams), 60)
        except TimeoutError:
            raise edge.service.fail("the streams never ended after SIGTERM") from None
        code = await asyncio.to_thread(_wait_exit, edge, TIMEOUT_S)
        stats = (await client.get(f"{engine.sim_url}/sim/stats")).json()
    return Shutdown(in_flight, answered, refused, outcomes, code, stats, edge.service.log_tail())


@pytest.fixture(scope="module")
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One engine for both scenarios: each runs whole in its fixture's set-up, one after
    the other, and leaves nothing in flight there (what each checks)."""
    stack = await asyncio.to_thread(
        start_stack, "vllm", tmp_path_factory.mktemp("sigterm-engine"), options(itl_s=0.005)
    )
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


@pytest.fixture(scope="module")
async def shutdown(
    engine: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Shutdown]:
    log_dir = tmp_path_factory.mktemp("sigterm")
    edge: Edge | None = None
    try:
        env = {"EDGE_SHUTDOWN_GRACE_S": str(GRACE_S)}
        edge = await asyncio.to_thread(start_edge, log_dir, {"vllm": [engine.address]}, env=env)
        yield await _sigterm_during_streams(engine, edge)
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)


def test_streams_in_flight_finish_normally(shutdown: Shutdown) -> None:
    assert shutdown.in_flight_at_signal == STREAMS
    for outcome in shutdown.streams:
        assert (outcome.status, outcome.error, outcome.done) == (200, None, True)
        assert outcome.finish_reason == "length"
        assert outcome.text
        assert outcome.tokens == TOKENS  # every token reached the client
    # Nothing left behind at the engine either.
    assert (shutdown.engine_stats["in_flight"], shutdown.engine_stats["open_streams"]) == (0, 0)


def test_new_connections_are_refused(shutdown: Shutdown) -> None:
    assert shutdown.refused, f"still accepting after SIGTERM: {shutdown.answered_before_close}"
    # A request racing the close may still be served, never failed.
    assert set(shutdown.answered_before_close) <= {200}


def test_the_edge_exits_after_its_last_stream_without_waiting_out_the_grace_period(
    shutdown: Shutdown,
) -> None:
    assert shutdown.exit_code is not None, (
        f"still running {TIMEOUT_S:g}s after its last stream\n{shutdown.log}"
    )
    assert '"event":"edge_stopped"' in shutdown.log  # the lifespan shutdown ran to its end


def test_the_exit_code_is_0(shutdown: Shutdown) -> None:
    assert shutdown.exit_code == 0


# --- Past the grace period ---------------------------------------------------------------

SHORT_GRACE_S = 2.0


@dataclass
class CutShort:
    outcomes: list[StreamOutcome | BaseException]
    request_ids: list[str]
    exit_code: int | None
    log: str
    engine_stats: dict[str, Any]


@pytest.fixture(scope="module")
async def cut_short(
    engine: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CutShort]:
    log_dir = tmp_path_factory.mktemp("sigterm-cut")
    edge: Edge | None = None
    try:
        env = {"EDGE_SHUTDOWN_GRACE_S": str(SHORT_GRACE_S)}
        edge = await asyncio.to_thread(start_edge, log_dir, {"vllm": [engine.address]}, env=env)
        # The engine holds every stream after a few tokens: all still open at the deadline.
        async with httpx.AsyncClient(timeout=60) as client, engine.stalled(after=HELD_AFTER):
            streams = [
                asyncio.create_task(read_stream(client, edge, chat(TOKENS))) for _ in range(STREAMS)
            ]
            await eventually(lambda: _all_held(client, engine), what="every stream held")
            edge.service.signal(signal.SIGTERM)
            outcomes = await asyncio.wait_for(
                asyncio.gather(*streams, return_exceptions=True), SHORT_GRACE_S + 30
            )
            code = await asyncio.to_thread(_wait_exit, edge, TIMEOUT_S)
            stats = await eventually(
                lambda: _idle_stats(client, engine), what="the engine's streams aborted"
            )
        ids = [o.headers["x-request-id"] for o in outcomes if isinstance(o, StreamOutcome)]
        yield CutShort(outcomes, ids, code, edge.service.log_path.read_text(), stats)
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)


async def _idle_stats(client: httpx.AsyncClient, engine: Stack) -> dict[str, Any] | None:
    stats: dict[str, Any] = (await client.get(f"{engine.sim_url}/sim/stats")).json()
    return stats if (stats["in_flight"], stats["open_streams"]) == (0, 0) else None


def test_streams_open_at_the_deadline_end_with_one_error_event(cut_short: CutShort) -> None:
    for outcome in cut_short.outcomes:
        # Not "incomplete chunked read": the stream ended cleanly, after its error event.
        assert isinstance(outcome, StreamOutcome), repr(outcome)
        assert outcome.status == 200
        assert outcome.chunks, "the stream had started"
        assert not outcome.done
        assert outcome.error is not None
        assert set(outcome.error) == {"message", "type", "param", "code"}
        assert (outcome.error["type"], outcome.error["code"]) == (
            "service_unavailable",
            "service_unavailable",
        )
    # The engine's generations were aborted, not left running.
    assert (cut_short.engine_stats["in_flight"], cut_short.engine_stats["open_streams"]) == (0, 0)


def test_each_cut_stream_is_recorded_as_an_error_without_tracebacks(cut_short: CutShort) -> None:
    records = [orjson.loads(line) for line in cut_short.log.splitlines() if line.startswith("{")]
    cut = [r for r in records if r.get("request_id") in cut_short.request_ids]
    assert len(cut_short.request_ids) == STREAMS
    assert sorted(r["request_id"] for r in cut) == sorted(cut_short.request_ids)  # once each
    assert {(r["status"], r["error"]) for r in cut} == {(503, "shutdown")}
    assert "Traceback" not in cut_short.log
    assert not [r for r in records if r.get("level") in ("error", "critical")]
    assert '"event":"edge_stopped"' in cut_short.log


def test_the_exit_code_is_0_after_cutting_streams(cut_short: CutShort) -> None:
    assert cut_short.exit_code == 0
