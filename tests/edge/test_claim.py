"""Claim: whatever ends a request, everything it held is given back once and it is recorded once.

Each test runs one request through a `Claim` with fakes at its seams — the rate limiter,
the client's ASGI channel, the endpoint pool — and real admission, drain and metrics, then
checks: the slot is free, the gauges are 0, the endpoints have nothing in flight, the drain
holds nothing, the limiter was settled exactly once with the tokens really used, and
exactly one record was written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.requests import ClientDisconnect
from structlog.testing import capture_logs

from switchyard.edge.admission import Admission
from switchyard.edge.auth import KeyStore
from switchyard.edge.checks import Checks
from switchyard.edge.claim import Claim
from switchyard.edge.draining import Drain
from switchyard.edge.errors import OpenAIError
from switchyard.edge.exchange import Exchange
from switchyard.edge.ratelimit import Decision, Limits, RateLimiter
from switchyard.edge.responses import DONE, KEEPALIVE
from switchyard.edge.routing.endpoints import Endpoint, EndpointPolicy, EndpointPool
from switchyard.edge.routing.table import Route
from switchyard.edge.settings import EdgeSettings
from switchyard.edge.state import EdgeState
from tests.support.polling import eventually

MODEL = "claim-tests"  # a metrics label of these tests only
ROUTE = Route(MODEL, "vllm", ("127.0.0.1:1", "127.0.0.1:2"))
SUBJECT = "key-a"
LIMITS = Limits(rpm=100, tpm=100_000)
RESERVED = 1000
PROMPT_ESTIMATE = 7
SSE = [(b"content-type", b"text/event-stream")]
JSON = [(b"content-type", b"application/json")]

Settled = tuple[str, Limits, int, int]
Body = Callable[[Claim], Awaitable[None]]


class Limiter(RateLimiter):
    """Allows (or refuses) every request and remembers each settlement."""

    def __init__(self) -> None:
        self.allowed = True
        self.settled: list[Settled] = []

    async def acquire(self, subject: str, limits: Limits, tokens: int) -> Decision:
        return Decision(
            self.allowed, 0.0 if self.allowed else 3.0, limits.rpm, 99, 0.6, limits.tpm, 999, 0.6
        )

    async def settle(self, subject: str, limits: Limits, reserved: int, used: int) -> None:
        self.settled.append((subject, limits, reserved, used))

    async def aclose(self) -> None:
        pass


class Client:
    """The client's side of the ASGI channel: what it was sent, and a way to leave."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[MutableMapping[str, Any]] = []
        self.listening = asyncio.Event()  # the watch waits on receive()

    async def receive(self) -> dict[str, Any]:
        self.listening.set()
        return await self.messages.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})

    def statuses(self) -> list[int]:
        return [m["status"] for m in self.sent if m["type"] == "http.response.start"]

    def headers(self) -> list[tuple[str, str]]:
        (start,) = [m for m in self.sent if m["type"] == "http.response.start"]
        return [(k.decode(), v.decode()) for k, v in start["headers"]]

    def bodies(self) -> list[tuple[bytes, bool]]:
        return [
            (m["body"], m["more_body"]) for m in self.sent if m["type"] != "http.response.start"
        ]


class Pool(EndpointPool):
    """Picks the given endpoints in order, skipping those tried."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        super().__init__()
        self.endpoints = endpoints

    def pick(
        self,
        route: Route,
        exclude: frozenset[str] | set[str] = frozenset(),
        key: int | None = None,
    ) -> Endpoint | None:
        return next((e for e in self.endpoints if e.address not in exclude), None)


@dataclass
class World:
    edge: EdgeState
    limiter: Limiter
    client: Client
    endpoints: list[Endpoint]
    logs: list[MutableMapping[str, Any]]

    def record(self) -> MutableMapping[str, Any]:
        """The request's one record (it fails unless there is exactly one)."""
        (record,) = [entry for entry in self.logs if entry["event"] == "request"]
        return record


@pytest.fixture
async def world() -> AsyncIterator[World]:
    # One failure ejects: the endpoint feedback is visible as `ejected`.
    endpoints = [Endpoint(a, EndpointPolicy(failure_threshold=1)) for a in ROUTE.endpoints]
    limiter = Limiter()
    edge = EdgeState(
        settings=EdgeSettings(routes_file=Path("unused.yaml"), max_attempts=2),
        keys=KeyStore.empty(),
        pool=Pool(endpoints),
        limiter=limiter,
        admission=Admission(1, 1, 4, 30.0),
        checks=Checks(1, 0),
        drain=Drain(grace_s=0),
    )
    try:
        with capture_logs() as logs:
            yield World(edge, limiter, Client(), endpoints, logs)
    finally:
        edge.drain.close()
        for endpoint in endpoints:
            await endpoint.close(0)


def _gauge(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _in_flight() -> float:
    return _gauge("switchyard_edge_in_flight_requests", model=MODEL)


def _queued() -> float:
    return _gauge("switchyard_edge_queued_requests", model=MODEL)


def _rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "from the test")


async def _request(world: World, body: Body, *, stream: bool = True) -> None:
    """One request that takes all a request can hold (reservation, watch, slot), then `body`."""
    exchange = Exchange(
        request_id="req-1", api="chat", started=time.perf_counter(), model=MODEL, stream=stream
    )
    async with Claim(world.edge, exchange, world.client.receive, world.client.send) as claim:
        await claim.reserve(SUBJECT, LIMITS, RESERVED, PROMPT_ESTIMATE)
        await claim.watch_client()
        await claim.admit(ROUTE)
        await body(claim)


def _assert_given_back(world: World, used: int | None) -> None:
    """Nothing held any more; settled once with `used` tokens (None: nothing to settle)."""
    admission = world.edge.admission
    assert (admission.in_flight, admission.waiting) == (0, 0)
    assert (_in_flight(), _queued()) == (0, 0)
    assert [e.in_flight for e in world.endpoints] == [0, 0]
    assert not world.edge.drain.running
    assert world.limiter.settled == ([] if used is None else [(SUBJECT, LIMITS, RESERVED, used)])


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_a_stream_that_ends_gives_back_everything_and_settles_its_usage(
    world: World,
) -> None:
    async def body(claim: Claim) -> None:
        assert (world.edge.admission.in_flight, _in_flight()) == (1, 1)
        endpoint = claim.next_endpoint()
        assert endpoint is world.endpoints[0]
        assert endpoint.in_flight == 1
        claim.endpoint_answered()
        await claim.start_stream(SSE)
        await claim.send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
        claim.exchange.completion_tokens = 3
        claim.exchange.used(11, 3)
        await world.client.listening.wait()
        await claim.end_stream(DONE)
        # The server reports a disconnect once the response is complete: not the client's.
        world.client.leave()
        await eventually(world.client.messages.empty, what="the disconnect read")

    await _request(world, body)

    _assert_given_back(world, used=14)
    record = world.record()
    assert (record["status"], record["error"], record["client_disconnected"]) == (200, None, None)
    assert (record["prompt_tokens"], record["completion_tokens"], record["attempts"]) == (11, 3, 1)
    assert world.client.statuses() == [200]
    headers = world.client.headers()
    assert headers[0] == ("content-type", "text/event-stream")
    assert ("x-request-id", "req-1") in headers
    assert ("x-ratelimit-remaining-tokens", "999") in headers
    assert world.client.bodies()[-1] == (DONE, False)


async def test_a_whole_response_gives_back_everything_and_settles_its_usage(
    world: World,
) -> None:
    async def body(claim: Claim) -> None:
        assert claim.next_endpoint() is world.endpoints[0]
        claim.exchange.used(11, 3)
        await claim.respond(JSON, b"{}")

    await _request(world, body, stream=False)

    _assert_given_back(world, used=14)
    assert world.record()["status"] == 200
    assert world.client.statuses() == [200]
    assert world.client.bodies() == [(b"{}", False)]


async def test_an_error_before_the_first_byte_is_one_json_answer(world: World) -> None:
    async def body(claim: Claim) -> None:
        first = claim.next_endpoint()
        assert first is world.endpoints[0]
        claim.endpoint_failed(_rpc_error(grpc.StatusCode.UNAVAILABLE))
        second = claim.next_endpoint()  # a retry gives the first endpoint back
        assert (second, first.in_flight) == (world.endpoints[1], 0)
        assert claim.next_endpoint() is None  # max_attempts
        raise OpenAIError.unavailable("No backend could serve it.", 1)

    await _request(world, body)

    _assert_given_back(world, used=0)
    record = world.record()
    assert (record["status"], record["error"], record["attempts"]) == (
        503,
        "backend_unavailable",
        2,
    )
    assert world.endpoints[0].ejected  # the UNAVAILABLE attempt counted against it
    assert world.client.statuses() == [503]
    headers = world.client.headers()
    for name in ("x-request-id", "retry-after", "x-ratelimit-limit-tokens", "content-length"):
        assert [k for k, _ in headers].count(name) == 1, (name, headers)
    ((error, more),) = world.client.bodies()
    assert not more
    assert orjson.loads(error)["error"]["code"] == "service_unavailable"


async def test_an_answered_attempt_brings_an_ejected_endpoint_back(world: World) -> None:
    async def body(claim: Claim) -> None:
        claim.next_endpoint()
        claim.endpoint_failed(_rpc_error(grpc.StatusCode.UNAVAILABLE))
        assert world.endpoints[0].ejected
        claim.endpoint_answered()
        assert not world.endpoints[0].ejected
        claim.endpoint_failed(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT))
        assert not world.endpoints[0].ejected  # the request's fault, not the endpoint's
        raise OpenAIError.invalid("Bad request.")

    await _request(world, body)

    _assert_given_back(world, used=0)
    assert world.record()["status"] == 400


async def test_an_error_mid_stream_is_its_last_event_and_pays_for_what_was_generated(
    world: World,
) -> None:
    async def body(claim: Claim) -> None:
        claim.next_endpoint()
        await claim.start_stream(SSE)
        claim.exchange.completion_tokens = 2  # no usage: the backend failed first
        raise OpenAIError(502, "The backend failed.", type="server_error", code="backend_error")

    await _request(world, body)

    _assert_given_back(world, used=PROMPT_ESTIMATE + 2)
    record = world.record()
    assert (record["status"], record["error"], record["prompt_tokens"]) == (
        502,
        "backend_error",
        PROMPT_ESTIMATE,
    )
    assert world.client.statuses() == [200]
    last, more = world.client.bodies()[-1]
    assert not more
    assert last.startswith(b"data: ")
    assert orjson.loads(last[len(b"data: ") :])["error"]["code"] == "backend_error"


async def test_a_client_gone_mid_stream_is_one_499_that_pays_for_what_was_generated(
    world: World,
) -> None:
    async def body(claim: Claim) -> None:
        claim.next_endpoint()
        await claim.start_stream(SSE)
        claim.exchange.completion_tokens = 2
        world.client.leave()
        await _forever()  # the relay, cancelled by the watch

    await _request(world, body)

    _assert_given_back(world, used=PROMPT_ESTIMATE + 2)
    record = world.record()
    assert (record["status"], record["client_disconnected"]) == (499, True)
    assert world.client.statuses() == [200]
    assert world.client.bodies() == []  # nothing more was written to a client that left


async def test_a_client_gone_while_queued_gives_back_its_place_and_reservation(
    world: World,
) -> None:
    admission = world.edge.admission
    await admission.acquire(MODEL)  # another request holds the only slot
    request = asyncio.create_task(_request(world, lambda claim: _forever()))
    await eventually(lambda: admission.waiting == 1, what="the request queued")
    assert _queued() == 1

    world.client.leave()
    await request

    assert (admission.in_flight, admission.waiting, _queued()) == (1, 0, 0)
    admission.release(MODEL)
    _assert_given_back(world, used=0)
    record = world.record()
    assert (record["status"], record["client_disconnected"]) == (499, True)
    assert world.client.statuses() == [499]  # for the trace: the server drops it


async def test_the_end_of_a_shutdown_s_grace_ends_a_stream_with_an_error_event(
    world: World,
) -> None:
    async def body(claim: Claim) -> None:
        claim.next_endpoint()
        await claim.start_stream(SSE)
        claim.exchange.completion_tokens = 1
        world.edge.drain.begin()
        await _forever()  # the relay, cancelled at the end of the grace period

    await _request(world, body)

    _assert_given_back(world, used=PROMPT_ESTIMATE + 1)
    record = world.record()
    assert (record["status"], record["error"]) == (503, "shutdown")
    last, more = world.client.bodies()[-1]
    assert not more
    assert b"shutting down" in last


async def test_the_end_of_a_shutdown_s_grace_before_the_first_byte_is_a_503(
    world: World,
) -> None:
    async def body(claim: Claim) -> None:
        claim.next_endpoint()
        world.edge.drain.begin()
        await _forever()  # waiting for the backend's first message

    await _request(world, body)

    _assert_given_back(world, used=0)
    assert (world.record()["status"], world.record()["error"]) == (503, "shutdown")
    assert world.client.statuses() == [503]
    assert ("x-ratelimit-limit-requests", "100") in world.client.headers()


async def test_a_client_gone_while_sending_its_body_is_a_499_that_held_nothing(
    world: World,
) -> None:
    exchange = Exchange(request_id="req-1", api="chat", started=time.perf_counter())
    async with Claim(world.edge, exchange, world.client.receive, world.client.send):
        raise ClientDisconnect

    _assert_given_back(world, used=None)
    record = world.record()
    assert (record["status"], record["client_disconnected"]) == (499, True)


async def test_a_refused_request_holds_nothing_and_says_its_limits_once(world: World) -> None:
    world.limiter.allowed = False
    exchange = Exchange(request_id="req-1", api="chat", started=time.perf_counter(), model=MODEL)
    async with Claim(world.edge, exchange, world.client.receive, world.client.send) as claim:
        decision = await claim.reserve(SUBJECT, LIMITS, RESERVED, PROMPT_ESTIMATE)
        assert not decision.allowed
        raise OpenAIError(429, "Slow down.", headers={"retry-after": "3"}, kind="rate_limited")

    _assert_given_back(world, used=None)  # a refusal charged nothing: nothing to settle
    assert world.record()["status"] == 429
    names = [k for k, _ in world.client.headers()]
    assert names.count("x-ratelimit-remaining-requests") == names.count("retry-after") == 1


async def test_a_bug_propagates_after_everything_is_given_back(world: World) -> None:
    async def body(claim: Claim) -> None:
        claim.next_endpoint()
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await _request(world, body)

    _assert_given_back(world, used=0)
    assert (world.record()["status"], world.record()["error"]) == (500, "internal")
    assert world.client.sent == []  # the framework answers it, as for any bug


async def test_keep_alives_begin_once_the_stream_has_started(world: World) -> None:
    world.edge.settings = EdgeSettings(
        routes_file=Path("unused.yaml"), max_attempts=2, stream_keepalive_s=0.01
    )

    async def body(claim: Claim) -> None:
        claim.next_endpoint()
        await world.client.listening.wait()  # the watch waits for the client, with no deadline
        await claim.start_stream(SSE)
        await eventually(lambda: world.client.bodies(), what="a keep-alive during the silence")
        await claim.end_stream(DONE)

    await _request(world, body)

    _assert_given_back(world, used=0)
    assert world.client.sent[0]["type"] == "http.response.start"
    assert world.client.bodies()[0] == (KEEPALIVE, True)
