"""The keys admin API across replicas: two edge processes share one keys file and one
Redis. A change made on one is applied by both before the call returns (their file polls
are 60 s apart here, so only the Redis notice can do it); a revoked key's next request is
refused everywhere while its stream already running finishes; no secret reaches a log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from redis.asyncio import Redis

from switchyard.edge.admin.keys import REPLICAS_HEADER
from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.changes import CHANNEL
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.redis import RedisServer
from tests.support.stacks import Stack

MODEL = "demo-vllm"
ADMIN_ROUTES = [
    ("POST", "/admin/v1/keys"),
    ("GET", "/admin/v1/keys"),
    ("GET", "/admin/v1/keys/ops"),
    ("PATCH", "/admin/v1/keys/ops"),
    ("DELETE", "/admin/v1/keys/ops"),
    ("PUT", "/admin/v1/tenants/platform/budget"),
    ("DELETE", "/admin/v1/tenants/platform/budget"),
]


def _keyring(directory: Path) -> tuple[dict[str, str], Path]:
    plain = {name: generate_key() for name in ("ops", "ops-models", "user")}
    entries = [
        KeyEntry(name="ops", tenant="platform", sha256=hash_key(plain["ops"]), role="admin"),
        KeyEntry(
            name="ops-models",
            tenant="platform",
            sha256=hash_key(plain["ops-models"]),
            role="admin",
            models=[MODEL],
        ),
        KeyEntry(name="user", tenant="team-a", sha256=hash_key(plain["user"]), models=["*"]),
    ]
    path = directory / "keys.yaml"
    path.write_text(render_keys(entries))
    return plain, path


async def _both_listening(redis: RedisServer) -> None:
    client = Redis.from_url(redis.url)
    try:

        async def listening() -> bool:
            ((_, subscribers),) = await client.pubsub_numsub(CHANNEL)
            return int(subscribers) == 2

        await eventually(listening, what="both edges subscribed to key changes")
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("keys-replicas-redis"))
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


@pytest.fixture(scope="module")
async def replicas(
    engines: dict[str, Stack], redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Edge, Edge]]:
    log_dir = tmp_path_factory.mktemp("keys-replicas")
    keyring = _keyring(log_dir)
    edges: list[Edge] = []
    try:
        for name in ("edge-a", "edge-b"):
            env = {"EDGE_RELOAD_INTERVAL_S": "60", "EDGE_REDIS_TIMEOUT_S": "2"}
            edges.append(
                await asyncio.to_thread(
                    start_edge,
                    log_dir,
                    {"vllm": [engines["vllm"].address]},
                    redis_url=redis.url,
                    name=name,
                    keyring=keyring,
                    env=env,
                )
            )
        await _both_listening(redis)
        yield edges[0], edges[1]
    finally:
        for edge in edges:
            await asyncio.to_thread(edge.stop)


def _admin(edge: Edge, key: str = "ops") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=edge.url, headers=edge.auth(key), timeout=30)


def _logs(*edges: Edge) -> str:
    return "".join(e.service.log_path.read_text(errors="replace") for e in edges)


async def _chat(edge: Edge, key: str) -> str | None:
    async with edge.client(key) as client:
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    return reply.choices[0].message.content


async def test_only_admin_keys_reach_the_admin_api_and_they_call_no_model_unlisted(
    replicas: tuple[Edge, Edge],
) -> None:
    edge, _ = replicas
    async with _admin(edge, "user") as user:
        for method, url in ADMIN_ROUTES:
            refused = await user.request(method, url, json={})
            assert refused.status_code == 403, (method, url, refused.text)
            assert refused.json()["error"]["code"] == "admin_only"
    with pytest.raises(openai.NotFoundError):
        await _chat(edge, "ops")  # an admin key with no models calls none
    assert await _chat(edge, "ops-models")  # one that lists the model may


async def test_a_change_reaches_every_replica_before_the_call_returns(
    replicas: tuple[Edge, Edge], engines: dict[str, Stack]
) -> None:
    a, b = replicas
    async with _admin(a) as admin_a, _admin(b) as admin_b:
        created = await admin_a.post(
            "/admin/v1/keys", json={"name": "victim", "tenant": "team-a", "models": [MODEL]}
        )
        assert created.status_code == 201, created.text
        assert created.headers[REPLICAS_HEADER] == "2/2"
        secret = created.json()["key"]
        assert await _chat(b, secret)  # created on A, used on B

        # A stream opened before the key is disabled stays open (the engine holds it
        # after 2 tokens) while the key is disabled, then finishes whole.
        async with b.client(secret) as sdk:
            async with engines["vllm"].stalled(count=1, after=2):
                stream = await sdk.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "a long answer"}],
                    max_tokens=12,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                chunks = [await anext(aiter(stream))]
                disabled = await admin_a.patch("/admin/v1/keys/victim", json={"disabled": True})
                assert disabled.status_code == 200, disabled.text
                assert disabled.headers[REPLICAS_HEADER] == "2/2"
                # The next request after the PATCH returned, on either replica: refused.
                for edge in (b, a):
                    with pytest.raises(openai.AuthenticationError):
                        await _chat(edge, secret)
            chunks += [chunk async for chunk in stream]  # the fault is cleared: it goes on
        assert any(c.choices and c.choices[0].finish_reason for c in chunks)
        usage = chunks[-1].usage
        assert usage is not None
        assert usage.completion_tokens == 12

        enabled = await admin_b.patch("/admin/v1/keys/victim", json={"disabled": False})
        assert enabled.headers[REPLICAS_HEADER] == "2/2"
        assert await _chat(a, secret)  # re-enabled on B, used on A
        deleted = await admin_b.delete("/admin/v1/keys/victim")
        assert deleted.status_code == 200
        for edge in (a, b):
            with pytest.raises(openai.AuthenticationError):
                await _chat(edge, secret)
        listed = await admin_a.get("/admin/v1/keys")
        assert [k["name"] for k in listed.json()["data"]] == ["ops", "ops-models", "user"]

    logs = await asyncio.to_thread(_logs, a, b)
    assert "admin_key_created" in logs  # the records are there...
    assert secret not in logs  # ...without the key or its hash
    assert hash_key(secret) not in logs


async def test_replicas_listen_again_after_redis_restarts(
    replicas: tuple[Edge, Edge], redis: RedisServer
) -> None:
    a, b = replicas
    await asyncio.to_thread(redis.stop)
    await asyncio.to_thread(redis.start)  # the same port, no subscribers: both come back
    await _both_listening(redis)
    async with _admin(a) as admin:
        created = await admin.post(
            "/admin/v1/keys", json={"name": "after-restart", "tenant": "team-a", "models": [MODEL]}
        )
        assert created.headers[REPLICAS_HEADER] == "2/2"
        assert await _chat(b, created.json()["key"])
        assert (await admin.delete("/admin/v1/keys/after-restart")).status_code == 200
