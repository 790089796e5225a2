"""Affinity routing: the ring and its bounded loads (pure), the keys of requests, and the
pool's choice with a key against real gRPC health servers (grpc's own, in this process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from switchyard.edge.routing.affinity import (
    Ring,
    Rings,
    choose,
    embed_key,
    load_bound,
    point,
    request_key,
    session_of,
)
from switchyard.edge.routing.endpoints import SERVICE_NAME, EndpointPolicy, EndpointPool
from switchyard.edge.routing.table import Route, RouteTable
from switchyard.edge.settings import EdgeSettings
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.polling import eventually
from tests.support.processes import free_port

ADDRESSES = [f"10.0.0.{i}:50051" for i in range(1, 5)]
KEYS = [point(f"key {i}".encode()) for i in range(4000)]
PREFIX_CHARS = 2048
SYSTEM = "You are a helpful assistant. Answer briefly and cite your sources. " * 3


def owners(ring: Ring, keys: list[int] = KEYS) -> list[str | None]:
    return [ring.owner(k) for k in keys]


# -- the ring ---------------------------------------------------------------------------------


def test_rings_built_apart_agree_and_the_order_of_addresses_does_not_matter() -> None:
    assert owners(Ring(ADDRESSES)) == owners(Ring(reversed(ADDRESSES)))


def test_another_process_with_another_hash_seed_picks_the_same_endpoints() -> None:
    """Every edge replica must agree: nothing may depend on Python's salted `hash()`."""
    script = (
        "import json, sys\n"
        "from switchyard.edge.routing.affinity import Ring, point\n"
        "addresses, n = json.loads(sys.argv[1]), int(sys.argv[2])\n"
        "ring = Ring(addresses)\n"
        "print(json.dumps([ring.owner(point(f'key {i}'.encode())) for i in range(n)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(ADDRESSES), "500"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == owners(Ring(ADDRESSES), KEYS[:500])


def test_keys_spread_evenly_over_the_endpoints() -> None:
    shares = Counter(owners(Ring(ADDRESSES)))
    assert set(shares) == set(ADDRESSES)
    for address in ADDRESSES:
        assert 0.15 < shares[address] / len(KEYS) < 0.35, shares


def test_adding_an_endpoint_moves_only_the_keys_it_takes() -> None:
    before = owners(Ring(ADDRESSES))
    added = "10.0.0.9:50051"
    after = owners(Ring([*ADDRESSES, added]))
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert all(a == added for _, a in moved)  # nothing moves between the old endpoints
    assert 0.12 < len(moved) / len(KEYS) < 0.28  # about 1/(n+1) = 0.2


def test_removing_an_endpoint_moves_only_its_own_keys_to_their_next_endpoint() -> None:
    full = Ring(ADDRESSES)
    gone = ADDRESSES[1]
    after = owners(Ring([a for a in ADDRESSES if a != gone]))
    for key, before, now in zip(KEYS, owners(full), after, strict=True):
        if before == gone:
            assert now == list(full.walk(key))[1]  # the next one clockwise
        else:
            assert now == before


def test_the_walk_meets_every_endpoint_once_the_owner_first() -> None:
    ring = Ring(ADDRESSES)
    for key in KEYS[:100]:
        walk = list(ring.walk(key))
        assert sorted(walk) == sorted(ADDRESSES)
        assert walk[0] == ring.owner(key)
    assert list(Ring([]).walk(KEYS[0])) == []


def test_rings_are_built_once_per_address_set_and_bounded() -> None:
    rings = Rings(size=2)
    first = rings.get(frozenset(ADDRESSES))
    assert rings.get(frozenset(reversed(ADDRESSES))) is first
    rings.get(frozenset(ADDRESSES[:2]))
    rings.get(frozenset(ADDRESSES[:3]))
    assert len(rings) == 2
    assert rings.get(frozenset(ADDRESSES)) is not first  # dropped as the oldest: rebuilt


# -- bounded loads ------------------------------------------------------------------------------


def test_the_bound_is_c_times_the_mean_after_this_request() -> None:
    assert load_bound(1.25, 0, 4) == 1
    assert load_bound(1.25, 15, 4) == 5  # ceil(1.25 * 16 / 4)
    assert load_bound(1.0, 7, 4) == 2


def test_a_busy_owner_passes_the_key_on_to_the_next_endpoint_clockwise() -> None:
    ring = Ring(ADDRESSES)
    key = KEYS[0]
    first, second, third, _ = ring.walk(key)
    idle = dict.fromkeys(ADDRESSES, 0)
    assert choose(ring, key, idle, 1.25) == first
    # 4 in flight in all: bound ceil(1.25 * 5 / 4) = 2.
    assert choose(ring, key, {**idle, first: 2, second: 2}, 1.25) == third
    assert choose(ring, key, {**idle, first: 1, second: 3}, 1.25) == first
    # The tried (not candidates) are skipped too.
    assert choose(ring, key, {a: 0 for a in ADDRESSES if a != first}, 1.25) == second


def test_the_least_loaded_is_the_guard_when_no_candidate_is_on_the_ring() -> None:
    ring = Ring(ADDRESSES[:2])
    assert choose(ring, KEYS[0], {"10.0.0.7:1": 3, "10.0.0.8:1": 1}, 1.25) == "10.0.0.8:1"
    assert choose(ring, KEYS[0], {}, 1.25) is None


def test_one_hot_key_never_pushes_an_endpoint_past_the_bound() -> None:
    """Every request with the same key, none finishing: the load spreads within the bound."""
    ring = Ring(ADDRESSES)
    loads = dict.fromkeys(ADDRESSES, 0)
    for _ in range(200):
        bound = load_bound(1.25, sum(loads.values()), len(loads))
        chosen = choose(ring, KEYS[0], loads, 1.25)
        assert chosen is not None
        assert loads[chosen] < bound
        loads[chosen] += 1
    assert max(loads.values()) <= 1.25 * 200 / 4 + 1


# -- keys -----------------------------------------------------------------------------------------


def chat(*turns: tuple[str, str], request_id: str = "r") -> pb.GenerateRequest:
    messages = [pb.ChatMessage(role=role, content=text) for role, text in turns]
    return pb.GenerateRequest(
        request_id=request_id, model="m", chat=pb.ChatInput(messages=messages)
    )


def conversation(first: str, turns: int, system: str = SYSTEM) -> list[pb.GenerateRequest]:
    """The requests of one conversation: each resends the history and adds a turn."""
    history = [("system", system), ("user", first)]
    requests = []
    for turn in range(turns):
        requests.append(chat(*history, request_id=f"r{turn}"))
        history += [("assistant", f"answer {turn} " * 40), ("user", f"follow-up {turn}")]
    return requests


def prefix_key(request: pb.GenerateRequest, session: str | None = None) -> int | None:
    return request_key("prefix", request, session, PREFIX_CHARS)


def test_a_growing_conversation_keeps_its_key() -> None:
    keys = {prefix_key(r) for r in conversation("Tell me about Lisbon.", 6)}
    assert len(keys) == 1


def test_conversations_that_share_only_a_system_prompt_spread() -> None:
    keys = [prefix_key(conversation(f"Question number {i}?", 1)[0]) for i in range(400)]
    assert len(set(keys)) == 400
    ring = Ring(ADDRESSES)
    shares = Counter(ring.owner(k) for k in keys if k is not None)
    for address in ADDRESSES:
        assert 0.15 < shares[address] / 400 < 0.35, shares


def test_a_long_system_prompt_does_not_crowd_out_the_first_user_turn() -> None:
    long_system = "Rules of the house. " * 1000  # far past PREFIX_CHARS
    a = prefix_key(conversation("About cats", 1, long_system)[0])
    b = prefix_key(conversation("About dogs", 1, long_system)[0])
    assert a != b
    changed_system = prefix_key(conversation("About cats", 1, "Other rules. " * 1000)[0])
    assert changed_system != a


def test_text_in_parts_hashes_like_the_same_text_in_content() -> None:
    parts = pb.ChatMessage(
        role="user", parts=[pb.ContentPart(text="Hel"), pb.ContentPart(text="lo")]
    )
    as_parts = pb.GenerateRequest(model="m", chat=pb.ChatInput(messages=[parts]))
    assert prefix_key(as_parts) == prefix_key(chat(("user", "Hello")))
    image = pb.ContentPart(image=pb.Image(url="data:image/png;base64,AAAA"))
    with_image = pb.GenerateRequest(
        model="m",
        chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", parts=[image])]),
    )
    assert prefix_key(with_image) != prefix_key(as_parts)


def test_a_raw_prompt_that_grows_keeps_its_key_past_the_prefix() -> None:
    opening = "Once upon a time " * 200  # longer than PREFIX_CHARS
    first = pb.GenerateRequest(model="m", prompt=opening + "there was a king.")
    later = pb.GenerateRequest(model="m", prompt=opening + "there was a king. And then")
    other = pb.GenerateRequest(model="m", prompt="A different story " * 200)
    assert prefix_key(first) == prefix_key(later) != prefix_key(other)


def test_sessions_key_by_the_session_and_fall_back_to_the_prefix() -> None:
    one, two = conversation("Hi", 1)[0], conversation("Bye", 1)[0]
    assert request_key("session", one, "alice", PREFIX_CHARS) == request_key(
        "session", two, "alice", PREFIX_CHARS
    )
    assert request_key("session", one, "alice", PREFIX_CHARS) != request_key(
        "session", one, "bob", PREFIX_CHARS
    )
    assert request_key("session", one, None, PREFIX_CHARS) == prefix_key(one)
    # The prefix policy ignores the session; the load policy has no key.
    assert prefix_key(one, "alice") == prefix_key(one)
    assert request_key("load", one, "alice", PREFIX_CHARS) is None


def test_the_session_comes_from_a_header_before_the_user_field() -> None:
    assert session_of({"x-session-id": "s1", "x-switchyard-session": "s2"}, "u") == "s1"
    assert session_of({"x-switchyard-session": "s2"}, "u") == "s2"
    assert session_of({}, "u") == "u"
    assert session_of({"x-session-id": ""}, None) is None


def test_embedding_keys() -> None:
    def embed(*texts: str) -> pb.EmbedRequest:
        return pb.EmbedRequest(model="m", inputs=[pb.EmbedInput(text=t) for t in texts])

    a = embed_key("prefix", embed("alpha", "beta"), None, PREFIX_CHARS)
    assert a == embed_key("prefix", embed("alpha", "gamma"), None, PREFIX_CHARS)
    assert a != embed_key("prefix", embed("delta"), None, PREFIX_CHARS)
    tokens = pb.EmbedRequest(model="m", inputs=[pb.EmbedInput(tokens=pb.TokenIds(ids=[1, 2]))])
    assert embed_key("prefix", tokens, None, PREFIX_CHARS) not in (a, None)
    assert embed_key("session", embed("x"), "s", PREFIX_CHARS) == embed_key(
        "session", embed("y"), "s", PREFIX_CHARS
    )
    assert embed_key("load", embed("x"), "s", PREFIX_CHARS) is None
    assert embed_key("prefix", pb.EmbedRequest(model="m"), None, PREFIX_CHARS) is None


def test_the_load_factor_follows_the_settings() -> None:
    settings = EdgeSettings(routes_file="routes.yaml", affinity_load_factor=2.0)  # type: ignore[arg-type]
    assert EndpointPolicy.from_settings(settings).load_factor == 2.0
    with pytest.raises(ValueError, match=r"affinity_load_factor"):
        EdgeSettings(routes_file="routes.yaml", affinity_load_factor=0.9)  # type: ignore[arg-type]


# -- the pool, against real health servers -------------------------------------------------------

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLICY = EndpointPolicy(failure_threshold=2)


class Health:
    """A gRPC server with grpc's own health service: an adapter as the edge sees it."""

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_insecure_port(self.address)

    async def set(self, status: int) -> None:
        await self.health.set(SERVICE_NAME, status)


@pytest.fixture
async def servers() -> AsyncIterator[list[Health]]:
    started: list[Health] = []
    try:
        for _ in range(4):
            server = Health()
            await server.set(SERVING)
            await server.server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            await server.server.stop(0)


@pytest.fixture
async def pool(servers: list[Health]) -> AsyncIterator[tuple[EndpointPool, Route]]:
    pool = EndpointPool(POLICY)
    route = Route("m", "vllm", tuple(s.address for s in servers), policy="prefix")
    pool.sync(RouteTable([route]))
    try:
        await eventually(lambda: len(pool.healthy(route)) == 4, what="4 serving")
        yield pool, route
    finally:
        await pool.aclose()


def _picked(
    pool: EndpointPool, route: Route, key: int, exclude: frozenset[str] = frozenset()
) -> str:
    endpoint = pool.pick(route, exclude, key)
    assert endpoint is not None
    return endpoint.address


async def test_the_pool_picks_the_keys_endpoint_and_steps_around_unfit_ones(
    pool: tuple[EndpointPool, Route], servers: list[Health]
) -> None:
    pool_, route = pool
    ring = Ring(route.endpoints)
    for key in KEYS[:200]:
        assert _picked(pool_, route, key) == ring.owner(key)

    key = KEYS[0]
    first, second, *_ = ring.walk(key)
    # A retry (the first endpoint tried) goes to the next one clockwise, as on every edge.
    assert _picked(pool_, route, key, frozenset({first})) == second
    # Saturated: past ceil(1.25 * (in flight + 1) / 4).
    owner = pool_.get(first)
    assert owner is not None
    owner.in_flight = 3
    assert _picked(pool_, route, key) == second
    owner.in_flight = 0
    # Ejected: skipped while out.
    for _ in range(POLICY.failure_threshold):
        owner.call_failed()
    assert _picked(pool_, route, key) == second
    owner.call_succeeded()
    assert _picked(pool_, route, key) == first

    # Not serving: the ring of the other three, where only its own keys moved.
    server = next(s for s in servers if s.address == first)
    await server.set(NOT_SERVING)
    await eventually(lambda: len(pool_.healthy(route)) == 3, what="3 serving")
    assert _picked(pool_, route, key) == second
    for other in KEYS[:200]:
        if ring.owner(other) != first:
            assert _picked(pool_, route, other) == ring.owner(other)
    assert {_picked(pool_, route, k) for k in KEYS[:200]} == set(route.endpoints) - {first}
    # Without a key: load routing, as before.
    unkeyed = {(e.address if (e := pool_.pick(route)) else None) for _ in range(100)}
    assert unkeyed == set(route.endpoints) - {first}
