"""Fixtures: the emulated API server, a client for the test, and the operator against them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest
from lightkube import AsyncClient, KubeConfig

from tests.operator.apiserver import ApiServer
from tests.operator.harness import (
    NAMESPACE,
    FakeClock,
    FakeLoad,
    OperatorThread,
    kubeconfig,
    operator_settings,
)


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    # Two listeners: the operator uses the first, the tests the second, so the requests the
    # operator made can be told apart (see test_rbac).
    async with ApiServer() as server, kmock.Server(server), kmock.Server(server):
        server.register_crd()
        yield server


@pytest.fixture
async def client(api: ApiServer) -> AsyncIterator[AsyncClient]:
    config = KubeConfig.from_dict(kubeconfig(str(api.servers[1].url), NAMESPACE))
    async with AsyncClient(config=config, field_manager="test") as c:
        yield c


@pytest.fixture
def load() -> FakeLoad:
    return FakeLoad()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def operator(
    api: ApiServer, load: FakeLoad, clock: FakeClock
) -> AsyncIterator[OperatorThread]:
    running = OperatorThread(str(api.servers[0].url), operator_settings(NAMESPACE), load, clock)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
