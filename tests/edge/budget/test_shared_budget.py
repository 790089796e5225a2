"""Three edge processes share one Redis: a budget holds across them under a burst, every
API charges it with its real usage, and a spent budget answers in each API's dialect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import pytest
import redis.asyncio
from openai.types.chat import ChatCompletionMessageParam

from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import Budget, KeyEntry, TenantEntry, render_keys
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.redis import RedisServer
from tests.support.stacks import Stack

MODEL = "demo-vllm"
#: Words the simulator's tokenizer knows whole: the edge's estimate (a token per 3 bytes)
#: stays above what the engine counts, so a reservation covers the prompt (checked below).
PROMPT = "hello world hello world hello world"
MAX_TOKENS = 2
#: What a request of the burst reserves: the prompt's estimate and its max_tokens.
RESERVED = len(PROMPT.encode()) // 3 + 1 + MAX_TOKENS
BURST = 300
#: Admits about 100 of the burst (more when early ones settle below their reservation).
BUDGET = 100 * RESERVED


@dataclass
class World:
    edges: list[Edge]
    redis: RedisServer
    keys: dict[str, str]

    def openai(self, key: str, i: int = 0) -> openai.AsyncOpenAI:
        edge = self.edges[i % len(self.edges)]
        return openai.AsyncOpenAI(
            base_url=f"{edge.url}/v1", api_key=self.keys[key], max_retries=0, timeout=60
        )

    async def spent(self, key: str, tenant: str, period: str) -> int:
        """The key's budget's total, as Redis holds it (0 before any charge)."""
        client = redis.asyncio.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            total = await client.hget(f"switchyard:budget:{{{tenant}}}:key:{key}:{period}", "t")
        finally:
            await client.aclose()
        return int(total or 0)


def _keys_file(directory: Path) -> tuple[dict[str, str], Path]:
    specs = {
        # The burst's key; its tenant's budget is large, so the key's own binds.
        "capped": ("acme", Budget(tokens=BUDGET, period="month")),
        # Every API on one key: output costs twice input.
        "apis": ("beta", Budget(tokens=1_000_000, period="24h", output_weight=2.0)),
        # A key with no budget of its own, whose tenant's is nearly nothing.
        "starved": ("gamma", None),
        # One request a minute, and a budget for one small request.
        "guarded": ("delta", Budget(tokens=8, period="day")),
    }
    plain = {name: generate_key() for name in specs}
    entries = [
        KeyEntry(
            name=name,
            tenant=tenant,
            sha256=hash_key(plain[name]),
            models=["*"],
            budget=budget,
            rpm=1 if name == "guarded" else None,
        )
        for name, (tenant, budget) in specs.items()
    ]
    tenants = {
        "acme": TenantEntry(budget=Budget(tokens=10 * BUDGET, period="month")),
        "gamma": TenantEntry(budget=Budget(tokens=5, period="day")),
    }
    path = directory / "keys.yaml"
    path.write_text(render_keys(entries, tenants))
    return plain, path


@pytest.fixture(scope="module")
async def world(
    engines: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    log_dir = tmp_path_factory.mktemp("shared-budget")
    redis_server = RedisServer(log_dir)
    await asyncio.to_thread(redis_server.start)
    keyring = _keys_file(log_dir)
    edges: list[Edge] = []
    try:
        for i in range(3):
            edge = await asyncio.to_thread(
                start_edge,
                log_dir,
                {"vllm": [engines["vllm"].address]},
                redis_url=redis_server.url,
                name=f"edge-{i}",
                keyring=keyring,
                # About sharing, not latency: a busy machine must not turn slow Redis
                # answers into fail-closed 503s.
                env={"EDGE_REDIS_TIMEOUT_S": "2"},
            )
            edges.append(edge)
        yield World(edges, redis_server, keyring[0])
    finally:
        for edge in edges:
            await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(redis_server.close)


async def test_a_burst_across_three_edges_never_spends_past_the_budget(
    world: World, record_property: Callable[[str, object], None]
) -> None:
    clients = [world.openai("capped", i) for i in range(3)]

    async def one(i: int) -> openai.types.Completion | openai.RateLimitError:
        try:
            return await clients[i % 3].completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS
            )
        except openai.RateLimitError as refused:
            return refused

    try:
        answers = await asyncio.gather(*(one(i) for i in range(BURST)))
    finally:
        for client in clients:
            await client.close()
    done = [a for a in answers if not isinstance(a, openai.RateLimitError)]
    refused = [a for a in answers if isinstance(a, openai.RateLimitError)]
    used = sum(a.usage.total_tokens for a in done if a.usage is not None)
    spent = await _settled(world, "capped", "acme", "month", used)
    record_property("budget", BUDGET)
    record_property("spent", spent)
    print(f"budget {BUDGET}, spent {spent}, admitted {len(done)} of {BURST}")
    assert spent <= BUDGET, (spent, BUDGET)  # every request had max_tokens: no over-spend
    # Each admitted request reserved at most RESERVED, so a refusal means at least
    # BUDGET / RESERVED were admitted; the rest of the burst was refused.
    assert BUDGET // RESERVED <= len(done) < BURST
    assert len(done) + len(refused) == BURST
    assert all(max(a.usage.prompt_tokens + MAX_TOKENS, 1) <= RESERVED for a in done if a.usage)
    error = refused[0]
    assert error.status_code == 429
    assert error.code == "insufficient_quota"
    assert error.type == "insufficient_quota"
    assert "This key's month token budget" in error.message
    assert "it resets at" in error.message
    assert error.response.headers["x-should-retry"] == "false"
    assert error.response.headers["x-budget-limit-tokens"] == str(BUDGET)
    assert error.response.headers["x-budget-scope"] == "key"


async def _settled(world: World, key: str, tenant: str, period: str, expected: int) -> int:
    """The key's spent tokens, once they equal `expected`: the settlements land just
    after their answers."""

    async def landed() -> int | None:
        spent = await world.spent(key, tenant, period)
        return spent if spent == expected else None

    return await eventually(landed, what=f"{key}'s budget settled at {expected} tokens")


async def test_every_api_charges_its_real_usage_with_weights(world: World) -> None:
    edge = world.edges[1]
    client = world.openai("apis", 1)
    charged = await world.spent("apis", "beta", "24h")
    try:
        chat = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        completion = await client.completions.create(model=MODEL, prompt="hi", max_tokens=3)
        response = await client.responses.create(model=MODEL, input="hi", max_output_tokens=3)
    finally:
        await client.close()
    messages = anthropic.AsyncAnthropic(
        base_url=edge.url, api_key=world.keys["apis"], max_retries=0
    )
    try:
        message = await messages.messages.create(
            model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await messages.close()
    body = chat.parse()
    assert body.usage is not None
    assert completion.usage is not None
    assert response.usage is not None
    usage = [
        (body.usage.prompt_tokens, body.usage.completion_tokens),
        (completion.usage.prompt_tokens, completion.usage.completion_tokens),
        (response.usage.input_tokens, response.usage.output_tokens),
        (message.usage.input_tokens, message.usage.output_tokens),
    ]
    expected = charged + sum(i + 2 * o for i, o in usage)
    assert await _settled(world, "apis", "beta", "24h", expected) == expected
    headers = chat.headers
    assert headers["x-budget-limit-tokens"] == "1000000"
    assert int(headers["x-budget-remaining-tokens"]) < 1_000_000
    assert headers["x-budget-reset-tokens"].endswith("s")
    # A rolling 24h window: its first tokens come back within a day.
    reset = float(headers["x-budget-reset-tokens"].removesuffix("s"))
    assert 0 < reset <= 24 * 3600


async def test_a_spent_tenant_budget_is_refused_in_each_dialect(world: World) -> None:
    client = world.openai("starved", 2)
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=50
            )
    finally:
        await client.close()
    assert refused.value.code == "insufficient_quota"
    assert "tenant 'gamma'" in refused.value.message
    assert refused.value.response.headers["x-budget-scope"] == "tenant"
    messages = anthropic.AsyncAnthropic(
        base_url=world.edges[2].url, api_key=world.keys["starved"], max_retries=0
    )
    try:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await messages.messages.create(
                model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        await messages.close()
    body = limited.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "rate_limit_error"
    assert "day token budget (5 tokens)" in body["error"]["message"]


async def test_a_stream_cut_short_is_charged_what_it_generated(world: World) -> None:
    edge = world.edges[0]
    charged = await world.spent("apis", "beta", "24h")
    request_id = uuid.uuid4().hex
    client = world.openai("apis", 0)
    try:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=1000,
            stream=True,
            extra_headers={"x-request-id": request_id},
        )
        async for _ in stream:
            break  # the client leaves after the first chunk
        await stream.close()
    finally:
        await client.close()
    record = await edge.record(request_id)  # logged once the budget has been settled
    assert record["status"] == 499
    used = record["prompt_tokens"] + 2 * record["completion_tokens"]
    assert 0 < used < 2 * 1000  # what it generated, not its reservation
    assert await _settled(world, "apis", "beta", "24h", charged + used) == charged + used
    # Counted per tenant, and whose budget it was (bounded labels: no key names).
    samples = await world.edges[2].metrics()
    refusals = samples.get(
        ("switchyard_edge_budget_refusals_total", (("scope", "tenant"), ("tenant", "gamma")))
    )
    assert refusals == 2


async def test_a_request_refused_by_its_budget_charges_no_rate_limit(world: World) -> None:
    client = world.openai("guarded", 0)
    chat: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model=MODEL, messages=chat, max_tokens=50)
        assert refused.value.code == "insufficient_quota"
        assert "is smaller than this request" in refused.value.message
        assert "x-ratelimit-limit-requests" not in refused.value.response.headers
        # The key's one request a minute is still there: the refusal did not take it.
        answer = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=chat, max_tokens=1
        )
    finally:
        await client.close()
    assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    # Its reservation (the prompt's estimate and max_tokens) is charged.
    assert 0 <= int(answer.headers["x-budget-remaining-tokens"]) < 8
