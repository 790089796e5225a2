"""The hold on wake's lines, on their own: a fake routing state stands for the edge's, and
`changed` is the event a new route table or an endpoint turning SERVING sends."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from switchyard.edge.holding import HoldRefused, Holds, Readiness
from switchyard.edge.routing.table import Route
from tests.support.polling import eventually

FOREVER = 1e12  # a request deadline that never comes (event-loop time)


class Routing:
    """What the edge routes to: each model's readiness, and how often it was asked."""

    def __init__(self) -> None:
        self.state: dict[str, Readiness] = {}
        self.lookups = 0

    def __call__(self, model: str) -> Readiness:
        self.lookups += 1
        return self.state.get(model, "gone")


def _route(model: str) -> Route:
    return Route(model, "vllm", ("127.0.0.1:1",))


def _held_gauge(model: str) -> float:
    return REGISTRY.get_sample_value("switchyard_edge_held_requests", {"model": model}) or 0.0


def _hold_count(model: str, outcome: str) -> float:
    labels = {"model": model, "outcome": outcome}
    return REGISTRY.get_sample_value("switchyard_edge_hold_seconds_count", labels) or 0.0


async def _until_held(holds: Holds, model: str, count: int) -> None:
    await eventually(lambda: holds.held(model) == count, what=f"{count} held for {model}")


async def test_a_ready_model_is_not_held() -> None:
    routing = Routing()
    route = _route("ready")
    routing.state["ready"] = route
    holds = Holds(routing, max_per_model=1, timeout_s=60)
    assert await holds.hold("ready", FOREVER) is route
    assert holds.held("ready") == 0


async def test_held_requests_go_in_arrival_order_once_the_model_serves() -> None:
    routing = Routing()
    routing.state["m-order"] = "waiting"
    holds = Holds(routing, max_per_model=10, timeout_s=60)
    served: list[int] = []

    async def request(n: int) -> None:
        await holds.hold("m-order", FOREVER)
        served.append(n)

    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(request(n)))
        await _until_held(holds, "m-order", n + 1)
    assert _held_gauge("m-order") == 5

    holds.changed()  # something else changed: the model still waits
    await asyncio.sleep(0)
    assert served == []
    assert holds.held("m-order") == 5

    routing.state["m-order"] = _route("m-order")
    holds.changed()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert served == [0, 1, 2, 3, 4]
    assert holds.held("m-order") == 0
    assert _held_gauge("m-order") == 0
    assert _hold_count("m-order", "served") == 5


async def test_the_line_is_bounded_per_model() -> None:
    routing = Routing()
    routing.state["m-full"] = routing.state["m-other"] = "waiting"
    holds = Holds(routing, max_per_model=2, timeout_s=60)
    first = asyncio.create_task(holds.hold("m-full", FOREVER))
    second = asyncio.create_task(holds.hold("m-full", FOREVER))
    await _until_held(holds, "m-full", 2)

    with pytest.raises(HoldRefused) as refused:
        await holds.hold("m-full", FOREVER)
    assert refused.value.reason == "full"
    assert _hold_count("m-full", "full") == 1
    # Another model's line is its own.
    other = asyncio.create_task(holds.hold("m-other", FOREVER))
    await _until_held(holds, "m-other", 1)

    routing.state["m-full"] = _route("m-full")
    routing.state["m-other"] = _route("m-other")
    holds.changed()
    async with asyncio.timeout(5):
        await asyncio.gather(first, second, other)


async def test_a_hold_times_out_and_leaves_the_line() -> None:
    routing = Routing()
    routing.state["m-timeout"] = "waiting"
    holds = Holds(routing, max_per_model=4, timeout_s=0.05)
    with pytest.raises(HoldRefused) as refused:
        await holds.hold("m-timeout", FOREVER)
    assert refused.value.reason == "timeout"
    assert holds.held("m-timeout") == 0
    assert _held_gauge("m-timeout") == 0
    assert _hold_count("m-timeout", "timeout") == 1


async def test_the_request_deadline_bounds_the_hold_too() -> None:
    routing = Routing()
    routing.state["m-deadline"] = "waiting"
    holds = Holds(routing, max_per_model=4, timeout_s=3600)
    deadline = asyncio.get_running_loop().time() + 0.05
    with pytest.raises(HoldRefused) as refused:
        await holds.hold("m-deadline", deadline)
    assert refused.value.reason == "timeout"


async def test_a_cancelled_request_frees_its_place_at_once() -> None:
    routing = Routing()
    routing.state["m-left"] = "waiting"
    holds = Holds(routing, max_per_model=2, timeout_s=60)
    leaving = asyncio.create_task(holds.hold("m-left", FOREVER))
    staying = asyncio.create_task(holds.hold("m-left", FOREVER))
    await _until_held(holds, "m-left", 2)

    leaving.cancel()  # what the client watch does when the client leaves
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert holds.held("m-left") == 1
    assert _held_gauge("m-left") == 1
    assert _hold_count("m-left", "left") == 1
    # Its place is free: one more fits in the bound of two.
    third = asyncio.create_task(holds.hold("m-left", FOREVER))
    await _until_held(holds, "m-left", 2)

    route = _route("m-left")
    routing.state["m-left"] = route
    holds.changed()
    async with asyncio.timeout(5):
        assert list(await asyncio.gather(staying, third)) == [route, route]
    assert _held_gauge("m-left") == 0


async def test_a_model_removed_while_held_ends_its_line() -> None:
    routing = Routing()
    routing.state["m-gone"] = "waiting"
    holds = Holds(routing, max_per_model=2, timeout_s=60)
    held = asyncio.create_task(holds.hold("m-gone", FOREVER))
    await _until_held(holds, "m-gone", 1)
    del routing.state["m-gone"]
    holds.changed()
    with pytest.raises(HoldRefused) as refused:
        async with asyncio.timeout(5):
            await held
    assert refused.value.reason == "gone"
    assert holds.held("m-gone") == 0


async def test_changes_cost_nothing_while_nobody_is_held() -> None:
    routing = Routing()
    routing.state["m-idle"] = "waiting"
    holds = Holds(routing, max_per_model=2, timeout_s=60)
    for _ in range(100):
        holds.changed()
    assert routing.lookups == 0  # no line, nothing looked at


async def test_a_long_hold_runs_meanwhile_once_and_still_waits() -> None:
    routing = Routing()
    routing.state["m-patience"] = "waiting"
    holds = Holds(routing, max_per_model=2, timeout_s=60)
    committed = asyncio.Event()
    calls = 0

    async def meanwhile() -> None:
        nonlocal calls
        calls += 1
        committed.set()

    held = asyncio.create_task(
        holds.hold("m-patience", FOREVER, patience_s=0.01, meanwhile=meanwhile)
    )
    async with asyncio.timeout(5):
        await committed.wait()
    assert not held.done()  # the patience running out is not the end of the hold
    route = _route("m-patience")
    routing.state["m-patience"] = route
    holds.changed()
    async with asyncio.timeout(5):
        assert await held is route
    assert calls == 1


async def test_a_short_hold_never_runs_meanwhile() -> None:
    routing = Routing()
    routing.state["m-short"] = "waiting"
    holds = Holds(routing, max_per_model=2, timeout_s=60)
    calls = 0

    async def meanwhile() -> None:
        nonlocal calls
        calls += 1

    held = asyncio.create_task(holds.hold("m-short", FOREVER, patience_s=3600, meanwhile=meanwhile))
    await _until_held(holds, "m-short", 1)
    route = _route("m-short")
    routing.state["m-short"] = route
    holds.changed()
    async with asyncio.timeout(5):
        assert await held is route
    assert calls == 0
