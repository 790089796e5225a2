"""The edge in front of the three engines (simulators and adapters), as real processes.

Adapters and the edge export their traces to an OTLP collector in the test process.
`features` is a second edge, with small limits, in front of simulators run as `make run`'s
demo models are: tool-call parser, images, and reasoning where the engine has a parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.edge import Edge, KeySpec, start_edge
from tests.support.otlp import OtlpCollector
from tests.support.polling import NotYet, eventually
from tests.support.stacks import ENGINES, Stack, options, start_stack

FAST = options(itl_s=0.002)
#: The simulators as the demo models run: tools, images, reasoning where the engine has it.
FEATURES = options(max_model_len=4096, itl_s=0.001, tools=True, images=True, reasoning=True)
#: What the features edge allows: small, so that each limit can be passed.
LIMITS = {
    "EDGE_MAX_N": "4",
    "EDGE_MAX_IMAGES": "2",
    "EDGE_MAX_IMAGE_BYTES": "4096",
    # Listed, yet refused: each is an address inside (the allow-list cannot open them).
    "EDGE_IMAGE_URL_HOSTS": "images.example.com,169.254.169.254,127.0.0.1,10.0.0.1,fe80::1",
}
KEYS = (
    KeySpec("full"),
    KeySpec("vllm-only", ("demo-vllm",)),
    KeySpec("tight", rpm=3),
    KeySpec("metered", tpm=6000),
    KeySpec("one-rpm", rpm=1),
    KeySpec("tpm-2500", tpm=2500),
)


@pytest.fixture(scope="session")
async def collector() -> AsyncIterator[OtlpCollector]:
    async with OtlpCollector() as c:
        yield c


@pytest.fixture(scope="session")
async def engines(
    tmp_path_factory: pytest.TempPathFactory, collector: OtlpCollector
) -> AsyncIterator[dict[str, Stack]]:
    # Processes start and stop in threads: the collector shares this event loop, and a
    # process that exits flushes its spans to it.
    log_dir = tmp_path_factory.mktemp("edge-engines")
    stacks: dict[str, Stack] = {}
    try:
        for engine in ENGINES:
            stacks[engine] = await asyncio.to_thread(
                start_stack, engine, log_dir, FAST, adapter_env=collector.env
            )
        yield stacks
    finally:
        await asyncio.gather(*(asyncio.to_thread(stack.stop) for stack in stacks.values()))


@pytest.fixture(scope="session")
async def edge(
    engines: dict[str, Stack], collector: OtlpCollector, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    log_dir = tmp_path_factory.mktemp("edge")
    endpoints = {e: [s.address] for e, s in engines.items()}
    running = await asyncio.to_thread(start_edge, log_dir, endpoints, keys=KEYS, env=collector.env)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture(scope="session")
async def feature_stacks(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Stack]]:
    log_dir = tmp_path_factory.mktemp("feature-engines")
    stacks: dict[str, Stack] = {}
    try:
        for engine in ENGINES:
            stacks[engine] = await asyncio.to_thread(
                start_stack, engine, log_dir, FEATURES, "-features"
            )
        yield stacks
    finally:
        await asyncio.gather(*(asyncio.to_thread(stack.stop) for stack in stacks.values()))


@pytest.fixture(scope="session")
async def features(
    feature_stacks: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Edge]:
    log_dir = tmp_path_factory.mktemp("features-edge")
    endpoints = {e: [s.address] for e, s in feature_stacks.items()}
    running = await asyncio.to_thread(
        start_edge, log_dir, endpoints, keys=KEYS, env=LIMITS, name="edge-features"
    )
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
async def eager_keepalive_edge(engines: dict[str, Stack], tmp_path: Path) -> AsyncIterator[Edge]:
    """An edge whose streams get a keep-alive after a millisecond of silence."""
    endpoints = {"vllm": [engines["vllm"].address]}
    env = {"EDGE_STREAM_KEEPALIVE_S": "0.001"}
    running = await asyncio.to_thread(start_edge, tmp_path, endpoints, env=env)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def sim_stats(stack: Stack) -> dict[str, Any]:
    """The simulator's own counters (requests, in flight, aborted, ...)."""
    async with httpx.AsyncClient(timeout=30) as client:
        stats: dict[str, Any] = (await client.get(f"{stack.sim_url}/sim/stats")).json()
        return stats


async def settled(edge: Edge, engines: dict[str, Stack]) -> None:
    """Wait until nothing is in flight anywhere: the edge's gauge and every engine's streams."""
    last = ""

    async def idle() -> bool:
        nonlocal last
        stats = [await sim_stats(s) for s in engines.values()]
        in_flight = await edge.in_flight()
        last = f"edge {in_flight}, engines {stats}"
        return bool(in_flight + sum(s["in_flight"] + s["open_streams"] for s in stats) == 0)

    try:
        await eventually(idle, what="nothing in flight at the edge or the engines")
    except NotYet as exc:
        raise NotYet(f"{exc}: {last}") from None


@pytest.fixture
async def quiet_after(edge: Edge, engines: dict[str, Stack]) -> AsyncIterator[None]:
    """After the test: nothing left in flight (no leaked requests, streams or slots)."""
    yield
    await settled(edge, engines)


@pytest.fixture
async def features_quiet_after(
    features: Edge, feature_stacks: dict[str, Stack]
) -> AsyncIterator[None]:
    """`quiet_after` for the features edge."""
    yield
    await settled(features, feature_stacks)
