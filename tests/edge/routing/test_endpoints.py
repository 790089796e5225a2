"""Endpoints: outlier ejection on an injected clock, and the choice of endpoints against real
gRPC health servers (grpc's own HealthServicer, in this process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from switchyard.edge.routing.endpoints import (
    SERVICE_NAME,
    Ejection,
    Endpoint,
    EndpointPolicy,
    EndpointPool,
)
from switchyard.edge.routing.table import Route, RouteTable
from switchyard.edge.settings import EdgeSettings
from tests.support.polling import eventually
from tests.support.processes import free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLICY = EndpointPolicy(failure_threshold=3, ejection_s=10.0, max_ejection_s=25.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _eject(ejection: Ejection) -> float:
    """Fail calls until the endpoint is ejected; the ejection's length."""
    for _ in range(POLICY.failure_threshold - 1):
        assert ejection.failed() is None
    length = ejection.failed()
    assert length is not None
    return length


# -- ejection (pure, on a fake clock) ----------------------------------------------------------


def test_only_consecutive_failures_eject(clock: FakeClock) -> None:
    ejection = Ejection(POLICY, clock)
    for _ in range(5):
        assert ejection.failed() is None
        assert ejection.failed() is None
        assert not ejection.succeeded()  # a success ends the run
    assert not ejection.active()
    assert _eject(ejection) == 10.0
    assert ejection.active()


def test_an_ejection_expires(clock: FakeClock) -> None:
    ejection = Ejection(POLICY, clock)
    _eject(ejection)
    clock.now += 9.999
    assert ejection.active()
    assert ejection.failed() is None  # failures while out change nothing
    clock.now += 0.001
    assert not ejection.active()


def test_repeated_ejections_grow_up_to_the_maximum_and_shrink_in_service(
    clock: FakeClock,
) -> None:
    ejection = Ejection(POLICY, clock)
    lengths = []
    for _ in range(4):
        lengths.append(_eject(ejection))
        clock.now += lengths[-1]  # expired: back in service, and failing again at once
    assert lengths == [10.0, 20.0, 25.0, 25.0]

    clock.now += 2 * POLICY.ejection_s  # two ejection lengths in service: two steps back
    assert _eject(ejection) == 25.0  # multiplier 4 - 2 + 1 = 3: 30 s, capped
    clock.now += 25.0 + 10 * POLICY.ejection_s
    assert _eject(ejection) == 10.0  # forgiven entirely


def test_evidence_brings_an_ejected_endpoint_back(clock: FakeClock) -> None:
    ejection = Ejection(POLICY, clock)
    _eject(ejection)
    assert ejection.succeeded()  # a call worked (or the adapter said SERVING)
    assert not ejection.active()
    assert not ejection.succeeded()  # nothing to bring back any more
    # Back early, but the next ejection is still a repeat.
    assert _eject(ejection) == 20.0


def test_the_policy_follows_the_settings() -> None:
    settings = EdgeSettings(
        routes_file="routes.yaml",  # type: ignore[arg-type]
        adapter_keepalive_s=0.5,
        endpoint_failure_threshold=7,
        endpoint_ejection_s=2,
        endpoint_max_ejection_s=4,
    )
    policy = EndpointPolicy.from_settings(settings)
    assert (policy.failure_threshold, policy.ejection_s, policy.max_ejection_s) == (7, 2, 4)
    assert ("grpc.keepalive_time_ms", 500) in policy.channel_options()
    with pytest.raises(ValueError, match="EDGE_ENDPOINT_MAX_EJECTION_S"):
        EdgeSettings(
            routes_file="routes.yaml",  # type: ignore[arg-type]
            endpoint_ejection_s=10,
            endpoint_max_ejection_s=5,
        )


# -- the pool, against real health servers -------------------------------------------------------


class Adapter:
    """A gRPC server with grpc's own health service: an adapter as the edge sees it."""

    def __init__(self, port: int = 0, options: tuple[tuple[str, Any], ...] = ()) -> None:
        self.port = port or free_port()
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server(options=options)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, status: int = SERVING) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_insecure_port(self.address)
        await self.health.set(SERVICE_NAME, status)
        await self.server.start()

    async def set(self, status: int) -> None:
        await self.health.set(SERVICE_NAME, status)


@pytest.fixture
async def adapters() -> AsyncIterator[list[Adapter]]:
    started = [Adapter(), Adapter()]
    for adapter in started:
        await adapter.start()
    yield started
    for adapter in started:
        await adapter.server.stop(0)


@pytest.fixture
async def pool(clock: FakeClock) -> AsyncIterator[EndpointPool]:
    pool = EndpointPool(POLICY, clock)
    yield pool
    await pool.aclose()


def _route(adapters: list[Adapter]) -> Route:
    return Route("m", "vllm", tuple(a.address for a in adapters))


async def _until_serving(pool: EndpointPool, route: Route, count: int) -> None:
    await eventually(lambda: len(pool.healthy(route)) == count, what=f"{count} serving")


def _endpoint(pool: EndpointPool, adapter: Adapter) -> Endpoint:
    endpoint = pool.get(adapter.address)
    assert endpoint is not None
    return endpoint


def _picks(pool: EndpointPool, route: Route, n: int = 50) -> set[str | None]:
    return {(e.address if (e := pool.pick(route)) else None) for _ in range(n)}


async def test_not_serving_is_never_picked_and_serving_again_is(
    pool: EndpointPool, adapters: list[Adapter]
) -> None:
    route = _route(adapters)
    pool.sync(RouteTable([route]))
    await _until_serving(pool, route, 2)
    assert _picks(pool, route) == {a.address for a in adapters}

    await adapters[0].set(NOT_SERVING)  # e.g. its engine is loading, or it drains
    await _until_serving(pool, route, 1)
    assert _picks(pool, route) == {adapters[1].address}
    await adapters[1].set(NOT_SERVING)
    await _until_serving(pool, route, 0)
    assert _picks(pool, route) == {None}  # NOT_SERVING is authoritative: no panic mode

    await adapters[0].set(SERVING)
    await _until_serving(pool, route, 1)
    assert _picks(pool, route) == {adapters[0].address}


async def test_an_ejected_endpoint_is_skipped_until_every_other_is_ejected_too(
    pool: EndpointPool, adapters: list[Adapter], clock: FakeClock
) -> None:
    route = _route(adapters)
    pool.sync(RouteTable([route]))
    await _until_serving(pool, route, 2)
    first, second = (_endpoint(pool, a) for a in adapters)
    before = REGISTRY.get_sample_value("switchyard_edge_endpoint_ejections_total") or 0.0

    for _ in range(POLICY.failure_threshold):
        first.call_failed()
    assert first.ejected
    assert REGISTRY.get_sample_value("switchyard_edge_endpoint_ejections_total") == before + 1
    assert len(pool.healthy(route)) == 2  # still SERVING: the model is ready
    assert _picks(pool, route) == {second.address}
    assert pool.pick(route, exclude={second.address}) is first  # a retry may still use it

    for _ in range(POLICY.failure_threshold):
        second.call_failed()
    # Panic mode: every endpoint is ejected, so all of them are tried again.
    assert _picks(pool, route) == {first.address, second.address}

    second.call_succeeded()  # a panic-mode call worked: it is back
    assert _picks(pool, route) == {second.address}
    clock.now += POLICY.ejection_s
    assert _picks(pool, route) == {first.address, second.address}


async def test_saying_serving_again_brings_an_ejected_endpoint_back(
    pool: EndpointPool, adapters: list[Adapter]
) -> None:
    route = _route(adapters[:1])
    pool.sync(RouteTable([route]))
    await _until_serving(pool, route, 1)
    endpoint = _endpoint(pool, adapters[0])
    for _ in range(POLICY.failure_threshold):
        endpoint.call_failed()
    assert endpoint.ejected

    await adapters[0].set(NOT_SERVING)
    await _until_serving(pool, route, 0)
    await adapters[0].set(SERVING)
    await _until_serving(pool, route, 1)
    assert not endpoint.ejected


async def test_a_lost_connection_is_watched_again_without_a_gap_in_service(
    pool: EndpointPool,
) -> None:
    # The server ends every connection after a moment (GOAWAY, then the streams on it
    # are cut): each time the health watch breaks, and is opened again at once.
    options = (("grpc.max_connection_age_ms", 200), ("grpc.max_connection_age_grace_ms", 50))
    adapter = Adapter(options=options)
    await adapter.start()
    try:
        route = _route([adapter])
        losses = "switchyard_edge_endpoint_watch_losses_total"
        before = REGISTRY.get_sample_value(losses) or 0.0
        with capture_logs() as logs:
            pool.sync(RouteTable([route]))
            await _until_serving(pool, route, 1)
            await eventually(
                lambda: (REGISTRY.get_sample_value(losses) or 0.0) >= before + 3,
                what="three lost watches",
            )
            assert len(pool.healthy(route)) == 1
        events = [entry["event"] for entry in logs]
        assert events.count("endpoint_watch_lost") >= 3
        assert "endpoint_not_serving" not in events, "a lost watch took the endpoint out"
    finally:
        await adapter.server.stop(0)


async def test_an_adapter_that_is_gone_is_not_serving_and_found_again_when_back(
    pool: EndpointPool,
) -> None:
    adapter = Adapter()
    await adapter.start()
    route = _route([adapter])
    pool.sync(RouteTable([route]))
    await _until_serving(pool, route, 1)

    await adapter.server.stop(0)
    await _until_serving(pool, route, 0)
    assert pool.pick(route) is None

    again = Adapter(adapter.port)
    await again.start()
    try:
        _endpoint(pool, again).call_failed()  # a call finding it unreachable: look again now
        await _until_serving(pool, route, 1)
    finally:
        await again.server.stop(0)
