"""Fixtures of the contract suite: one simulator + adapter pair per engine, as real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.stacks import ENGINES, Stack, options, running_stack

if TYPE_CHECKING:
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub

    Stub = InferenceServiceAsyncStub

#: Slow enough that a request is still running while a test looks at it (at least 8 tokens at 0.2 s each).
SLOW = options(max_running=2, max_queued=1, ttft_s=0.05, itl_s=0.2)


@pytest.fixture(scope="session", params=ENGINES)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    engine: str = request.param
    with running_stack(engine, tmp_path_factory.mktemp(f"contract-{engine}")) as s:
        yield s


@pytest.fixture(scope="session", params=ENGINES)
def slow_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    engine: str = request.param
    with running_stack(
        engine, tmp_path_factory.mktemp(f"contract-slow-{engine}"), SLOW, "-slow"
    ) as s:
        yield s


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


async def _stub(stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[Stub]:
    async for s in _stub(stack):
        yield s


@pytest.fixture
async def slow_stub(slow_stack: Stack) -> AsyncIterator[Stub]:
    async for s in _stub(slow_stack):
        yield s


async def sim_stats(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{stack.sim_url}/sim/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats
