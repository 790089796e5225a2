"""SIGTERM to the edge while streams are in flight: they finish normally within the grace
period, new connections are refused at once (the listening socket closes), and the
process exits 0 after the last stream, well before the grace period ends.

The scenario runs once (`shutdown`); the tests below check what it saw.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.reliability.helpers import StreamOutcome, chat, read_stream
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.stacks import Stack, options, start_stack

GRACE_S = 20.0  # EDGE_SHUTDOWN_GRACE_S: ten times what the streams need
STREAMS = 5
TOKENS = 400  # at 5 ms: two seconds of stream, most of it after the SIGTERM


@dataclass
class Shutdown:
    in_flight_at_signal: float
    answered_before_close: list[int]  # requests on new connections until one was refused
    refused: bool
    streams: list[StreamOutcome]
    exit_code: int | None  # None: still running after the grace period
    exited_within_s: float
    engine_stats: dict[str, Any]
    log: str


async def _until_refused(edge: Edge, within_s: float) -> tuple[list[int], bool]:
    """Send requests on fresh connections until one is refused: (statuses before, refused)."""
    answered: list[int] = []
    deadline = time.monotonic() + within_s
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=5, limits=limits) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.post(
                    f"{edge.url}/v1/chat/completions", json=chat(2), headers=edge.auth()
                )
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                # Refused: no listener any more, or a connection accepted just as the
                # listener closed and then dropped without an answer (nothing was processed).
                return answered, True
            answered.append(response.status_code)
            await asyncio.sleep(0.02)
    return answered, False


def _wait_exit(edge: Edge, timeout: float) -> int | None:
    try:
        return edge.service.process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


async def _sigterm_during_streams(engine: Stack, edge: Edge) -> Shutdown:
    async with httpx.AsyncClient(timeout=60) as client:
        started = [asyncio.Event() for _ in range(STREAMS)]
        streams = [
            asyncio.create_task(read_stream(client, edge, chat(TOKENS), first_chunk=event))
            for event in started
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
        except TimeoutError:
            raise edge.service.fail("the streams did not start") from None
        in_flight = await edge.in_flight()

        signalled = time.monotonic()
        edge.service.signal(signal.SIGTERM)
        answered, refused = await _until_refused(edge, within_s=5)
        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*streams), GRACE_S + 10)
        except TimeoutError:
            raise edge.service.fail("the streams never ended after SIGTERM") from None
        code = await asyncio.to_thread(_wait_exit, edge, GRACE_S)
        exited_within = time.monotonic() - signalled
        stats = (await client.get(f"{engine.sim_url}/sim/stats")).json()
    return Shutdown(
        in_flight, answered, refused, outcomes, code, exited_within, stats, edge.service.log_tail()
    )


@pytest.fixture(scope="module")
async def shutdown(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shutdown]:
    log_dir = tmp_path_factory.mktemp("sigterm")
    engine = await asyncio.to_thread(start_stack, "vllm", log_dir, options(itl_s=0.005))
    edge: Edge | None = None
    try:
        env = {"EDGE_SHUTDOWN_GRACE_S": str(GRACE_S)}
        edge = await asyncio.to_thread(start_edge, log_dir, {"vllm": [engine.address]}, env=env)
        yield await _sigterm_during_streams(engine, edge)
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(engine.stop)


def test_streams_in_flight_finish_normally(shutdown: Shutdown) -> None:
    assert shutdown.in_flight_at_signal == STREAMS
    for outcome in shutdown.streams:
        assert (outcome.status, outcome.error, outcome.done) == (200, None, True)
        assert outcome.finish_reason == "length"
        texts = [
            c for c in outcome.chunks if c["choices"] and c["choices"][0]["delta"].get("content")
        ]
        assert len(texts) == TOKENS
    # Nothing left behind at the engine either.
    assert (shutdown.engine_stats["in_flight"], shutdown.engine_stats["open_streams"]) == (0, 0)


def test_new_connections_are_refused(shutdown: Shutdown) -> None:
    assert shutdown.refused, f"still accepting after SIGTERM: {shutdown.answered_before_close}"
    # A request racing the close may still be served, never failed.
    assert set(shutdown.answered_before_close) <= {200}


def test_the_edge_exits_after_its_last_stream_within_the_grace_period(shutdown: Shutdown) -> None:
    assert shutdown.exit_code is not None, f"still running after {GRACE_S}s\n{shutdown.log}"
    assert shutdown.exited_within_s < GRACE_S
    assert '"event":"edge_stopped"' in shutdown.log  # the lifespan shutdown ran to its end


def test_the_exit_code_is_0(shutdown: Shutdown) -> None:
    assert shutdown.exit_code == 0


# --- Past the grace period ---------------------------------------------------------------

SHORT_GRACE_S = 2.0
LONG_TOKENS = 1000  # at 20 ms: twenty seconds of stream, far past the grace period


@dataclass
class CutShort:
    outcomes: list[StreamOutcome | BaseException]
    request_ids: list[str]
    exit_code: int | None
    log: str
    engine_stats: dict[str, Any]


@pytest.fixture(scope="module")
async def cut_short(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CutShort]:
    log_dir = tmp_path_factory.mktemp("sigterm-cut")
    engine = await asyncio.to_thread(start_stack, "vllm", log_dir, options(itl_s=0.02))
    edge: Edge | None = None
    try:
        env = {"EDGE_SHUTDOWN_GRACE_S": str(SHORT_GRACE_S)}
        edge = await asyncio.to_thread(start_edge, log_dir, {"vllm": [engine.address]}, env=env)
        async with httpx.AsyncClient(timeout=60) as client:
            started = [asyncio.Event() for _ in range(STREAMS)]
            streams = [
                asyncio.create_task(read_stream(client, edge, chat(LONG_TOKENS), first_chunk=event))
                for event in started
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
            edge.service.signal(signal.SIGTERM)
            outcomes = await asyncio.wait_for(
                asyncio.gather(*streams, return_exceptions=True), SHORT_GRACE_S + 30
            )
            code = await asyncio.to_thread(_wait_exit, edge, 30)
            stats = await eventually(
                lambda: _idle_stats(client, engine), what="the engine's streams aborted"
            )
        ids = [o.headers["x-request-id"] for o in outcomes if isinstance(o, StreamOutcome)]
        yield CutShort(outcomes, ids, code, edge.service.log_path.read_text(), stats)
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(engine.stop)


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
