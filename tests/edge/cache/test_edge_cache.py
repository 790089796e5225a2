"""The response cache at work: real edges (two sharing a real Redis), a real engine stack,
the official SDK as the client.

Every test asks something no other test asks (a uuid in the prompt), so the entries of
one never answer another's requests.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, Omit, omit
from openai.types.chat import ChatCompletionMessageParam

from switchyard.devstack.components import (
    SIM_LISTENING,
    SIM_MODEL,
    served_name,
    sim_args,
    write_routes,
)
from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.processes import listening_port, start, started_together, wait_serving
from tests.support.redis import RedisServer, running_redis
from tests.support.stacks import Stack, options, start_adapter

HEADER = "x-switchyard-cache"
MODEL = served_name("vllm")
FAST = options(itl_s=0.001)
#: Small enough for a handful of answers: a flood of distinct requests must evict.
SMALL_CACHE_BYTES = 4096
#: The metered key's tokens per minute: far more than one small answer uses.
TPM = 100_000


def keyring(directory: Path) -> tuple[dict[str, str], Path]:
    """Two tenants, a key opted out of the cache, and keys with tight limits."""
    specs: list[dict[str, Any]] = [
        {"name": "full", "tenant": "team-a"},
        {"name": "other", "tenant": "team-b"},
        {"name": "no-cache", "tenant": "team-a", "cache": False},
        {"name": "two-rpm", "tenant": "team-c", "rpm": 2},
        {"name": "metered", "tenant": "team-d", "tpm": TPM},
    ]
    plain = {s["name"]: generate_key() for s in specs}
    entries = [KeyEntry(sha256=hash_key(plain[s["name"]]), models=["*"], **s) for s in specs]
    path = directory / "keys.yaml"
    path.write_text(render_keys(entries))
    return plain, path


@dataclass
class Answer:
    header: str | None
    text: str
    id: str
    usage: tuple[int, int]


Messages = list[ChatCompletionMessageParam]


def prompt() -> Messages:
    return [{"role": "user", "content": f"Say something about {uuid.uuid4().hex}"}]


async def chat(
    client: AsyncOpenAI,
    messages: Messages,
    *,
    temperature: float | Omit = 0,
    seed: int | Omit = omit,
    n: int | Omit = omit,
    max_tokens: int = 12,
    headers: dict[str, str] | None = None,
) -> Answer:
    """A chat completion, deterministic unless asked otherwise, with its cache header."""
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=messages,
        temperature=temperature,
        seed=seed,
        n=n,
        max_tokens=max_tokens,
        extra_headers=headers,
    )
    completion = raw.parse()
    usage = completion.usage
    assert usage is not None
    return Answer(
        raw.headers.get(HEADER),
        completion.choices[0].message.content or "",
        completion.id,
        (usage.prompt_tokens, usage.completion_tokens),
    )


@dataclass
class Streamed:
    header: str | None
    chunks: list[Any]

    @property
    def text(self) -> str:
        return "".join(c.choices[0].delta.content or "" for c in self.chunks if c.choices)


async def stream(client: AsyncOpenAI, messages: Messages) -> Streamed:
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=messages,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in raw.parse()]
    return Streamed(raw.headers.get(HEADER), chunks)


async def engine_requests(stack: Stack) -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        stats = (await client.get(f"{stack.sim_url}/sim/stats")).json()
    return int(stats["requests"])


async def serving(edge: Edge) -> None:
    """Wait until the edge has a ready backend (a sampled request, never cached, works)."""

    async def answered() -> bool:
        try:
            await edge.client().completions.create(model=MODEL, prompt="ping", max_tokens=1)
        except openai.APIStatusError as exc:
            if exc.status_code != 503:
                raise
            return False
        return True

    await eventually(answered, what="the edge serving the model")


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge-cache")


@pytest.fixture(scope="module")
def keys(log_dir: Path) -> tuple[dict[str, str], Path]:
    return keyring(log_dir)


@pytest.fixture(scope="module")
def shared_redis(log_dir: Path) -> Iterator[RedisServer]:
    with running_redis(_dir(log_dir, "shared")) as server:
        yield server


def _dir(parent: Path, name: str) -> Path:
    path = parent / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def vllm(engines: dict[str, Stack]) -> Stack:
    """The session's vLLM stack (the edge tests' own, already running on this worker): the
    tests count its requests between two points of their own."""
    return engines["vllm"]


def _start_edge(
    log_dir: Path,
    stack: Stack,
    keys: tuple[dict[str, str], Path],
    name: str,
    env: dict[str, str],
    redis_url: str | None = None,
) -> Edge:
    return start_edge(
        log_dir,
        {"vllm": [stack.address]},
        env={"EDGE_REDIS_MAX_CONNECTIONS": "4", **env},
        redis_url=redis_url,
        name=name,
        keyring=keys,
    )


async def _edge(
    log_dir: Path,
    stack: Stack,
    keys: tuple[dict[str, str], Path],
    name: str,
    env: dict[str, str],
    redis_url: str | None = None,
) -> Edge:
    edge = await asyncio.to_thread(_start_edge, log_dir, stack, keys, name, env, redis_url)
    await serving(edge)
    return edge


@pytest.fixture(scope="module")
async def edges(
    log_dir: Path, vllm: Stack, keys: tuple[dict[str, str], Path], shared_redis: RedisServer
) -> AsyncIterator[tuple[Edge, Edge]]:
    """Two edges sharing one Redis (limits and cache), as two replicas."""
    starts = (
        functools.partial(
            _start_edge, log_dir, vllm, keys, name, {"EDGE_CACHE": "redis"}, shared_redis.url
        )
        for name in ("edge-a", "edge-b")
    )
    async with started_together(*starts) as (a, b):
        await asyncio.gather(serving(a), serving(b))
        yield a, b


async def test_a_repeated_deterministic_request_is_a_hit_on_another_edge(
    edges: tuple[Edge, Edge], vllm: Stack
) -> None:
    a, b = edges
    messages = prompt()
    before = await engine_requests(vllm)
    metrics_before = await b.metrics()

    first = await chat(a.client(), messages)
    rid = uuid.uuid4().hex
    second = await chat(b.client(), messages, headers={"x-request-id": rid})

    assert (first.header, second.header) == ("miss", "hit")
    assert await engine_requests(vllm) == before + 1  # the hit called no engine
    assert second.text == first.text
    assert second.usage == first.usage
    assert second.id != first.id  # ids are fresh
    record = await b.record(rid)
    assert record["cache"] == "hit"
    assert record["status"] == 200
    assert (record["prompt_tokens"], record["completion_tokens"]) == first.usage
    after = await b.metrics()
    lookups = "switchyard_edge_cache_lookups_total"
    saved = "switchyard_edge_cache_saved_tokens_total"
    labels = {"model": MODEL, "route": "chat"}
    assert metric(after, lookups, **labels, result="hit") == (
        metric(metrics_before, lookups, **labels, result="hit") + 1
    )
    assert metric(after, saved, model=MODEL, kind="completion") == (
        metric(metrics_before, saved, model=MODEL, kind="completion") + first.usage[1]
    )
    # ... and no engine processed them: they are not counted as tokens through the edge.
    tokens = "switchyard_edge_tokens_total"
    for kind in ("prompt", "completion"):
        assert metric(after, tokens, model=MODEL, kind=kind) == metric(
            metrics_before, tokens, model=MODEL, kind=kind
        )


async def test_completions_are_cached_too(edges: tuple[Edge, Edge]) -> None:
    a, b = edges
    text = f"Once upon a time {uuid.uuid4().hex}"
    answers = []
    for edge in (a, b):
        raw = await edge.client().completions.with_raw_response.create(
            model=MODEL, prompt=text, max_tokens=8, seed=7
        )
        answers.append((raw.headers.get(HEADER), raw.parse()))
    (h1, c1), (h2, c2) = answers
    assert (h1, h2) == ("miss", "hit")
    assert c2.choices[0].text == c1.choices[0].text
    assert c2.id != c1.id


async def test_a_sampled_request_is_never_cached(edges: tuple[Edge, Edge], vllm: Stack) -> None:
    a, _ = edges
    before = await engine_requests(vllm)
    sampled: list[dict[str, Any]] = [
        {"temperature": omit},  # the engine's default temperature samples
        {"temperature": 0.8},  # sampled, and no seed
        {"temperature": 0.8, "seed": 1, "n": 2},  # seeded, but several choices
    ]
    for params in sampled:
        messages = prompt()
        answers = [await chat(a.client(), messages, **params) for _ in range(2)]
        assert [x.header for x in answers] == [None, None], params  # not cacheable: no word
    assert await engine_requests(vllm) == before + 2 * len(sampled)


async def test_a_seeded_request_is_cached_whatever_its_temperature(
    edges: tuple[Edge, Edge],
) -> None:
    a, _ = edges
    messages = prompt()
    answers = [await chat(a.client(), messages, temperature=0.9, seed=42) for _ in range(2)]
    assert [x.header for x in answers] == ["miss", "hit"]
    assert answers[1].text == answers[0].text


async def test_two_tenants_never_share_an_entry(edges: tuple[Edge, Edge]) -> None:
    a, b = edges
    messages = prompt()
    assert (await chat(a.client("full"), messages)).header == "miss"
    assert (await chat(b.client("full"), messages)).header == "hit"
    assert (await chat(b.client("other"), messages)).header == "miss"  # another tenant
    assert (await chat(a.client("other"), messages)).header == "hit"


async def test_a_key_opted_out_in_the_keys_file_never_uses_the_cache(
    edges: tuple[Edge, Edge], vllm: Stack
) -> None:
    a, _ = edges
    messages = prompt()
    before = await engine_requests(vllm)
    answers = [await chat(a.client("no-cache"), messages) for _ in range(2)]
    assert [x.header for x in answers] == [None, None]
    assert await engine_requests(vllm) == before + 2
    # Nor did it fill the cache for its tenant's other keys.
    assert (await chat(a.client("full"), messages)).header == "miss"


async def test_cache_control_no_store_neither_reads_nor_writes(
    edges: tuple[Edge, Edge], vllm: Stack
) -> None:
    a, _ = edges
    messages = prompt()
    no_store = {"cache-control": "no-store"}
    assert (await chat(a.client(), messages, headers=no_store)).header is None
    assert (await chat(a.client(), messages)).header == "miss"  # the first was not kept
    before = await engine_requests(vllm)
    no_cache = {"Cache-Control": "max-age=0, no-cache"}
    assert (await chat(a.client(), messages, headers=no_cache)).header is None
    assert await engine_requests(vllm) == before + 1  # an entry exists, yet the engine ran


async def test_a_hit_counts_one_request_for_rpm_and_no_tokens(
    edges: tuple[Edge, Edge],
) -> None:
    a, b = edges
    messages = prompt()
    assert (await chat(a.client("two-rpm"), messages)).header == "miss"
    assert (await chat(b.client("two-rpm"), messages)).header == "hit"
    with pytest.raises(openai.RateLimitError, match="requests per minute") as refused:
        await chat(a.client("two-rpm"), messages)  # the hit was one of the two
    assert HEADER not in refused.value.response.headers  # the refusal is not the cache's


async def test_a_hit_is_charged_no_tokens(edges: tuple[Edge, Edge]) -> None:
    a, b = edges
    messages = prompt()
    miss = await chat(a.client("metered"), messages, max_tokens=900)
    raw = await b.client("metered").chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=900
    )
    assert raw.headers.get(HEADER) == "hit"
    # The miss reserved its prompt and 900 tokens, then was charged what it used; the
    # hit reserves nothing, so all but that use is left (the limit only refills since).
    used = sum(miss.usage)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) >= TPM - used


# -- streams ----------------------------------------------------------------------------------


async def test_a_streamed_hit_is_the_same_stream_with_fresh_ids(
    edges: tuple[Edge, Edge], vllm: Stack
) -> None:
    a, b = edges
    messages = prompt()
    first = await stream(a.client(), messages)
    before = await engine_requests(vllm)
    second = await stream(b.client(), messages)

    assert (first.header, second.header) == ("miss", "hit")
    assert await engine_requests(vllm) == before
    assert second.text == first.text
    assert second.text
    # The same chunks, ids aside: role, text, finish, usage.
    assert len(second.chunks) == len(first.chunks)
    ids = {c.id for c in first.chunks} | {c.id for c in second.chunks}
    assert len(ids) == 2
    for x, y in zip(first.chunks, second.chunks, strict=True):
        assert x.model_dump(exclude={"id", "created"}) == y.model_dump(exclude={"id", "created"})
    assert second.chunks[-1].usage is not None
    # A stream's entry is not a whole answer's: asked whole, it is its own miss.
    assert (await chat(b.client(), messages)).header == "miss"


async def test_a_stream_the_client_left_is_not_kept(edges: tuple[Edge, Edge], vllm: Stack) -> None:
    a, _ = edges
    messages = prompt()
    async with vllm.stalled(count=1, after=2):
        raw = await a.client().chat.completions.with_raw_response.create(
            model=MODEL,
            messages=messages,
            temperature=0,
            max_tokens=12,
            stream=True,
        )
        assert raw.headers.get(HEADER) == "miss"
        chunks = raw.parse()
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                break  # a token came: the engine is now held mid-stream
        await chunks.close()  # the client leaves

        async def aborted() -> bool:
            async with httpx.AsyncClient(timeout=30) as client:
                stats = (await client.get(f"{vllm.sim_url}/sim/stats")).json()
            return bool(stats["in_flight"] == 0 and stats["open_streams"] == 0)

        await eventually(aborted, what="the engine's stream aborted")
    assert (await stream(a.client(), messages)).header == "miss"
    assert (await stream(a.client(), messages)).header == "hit"


async def test_an_error_is_not_kept(edges: tuple[Edge, Edge]) -> None:
    a, _ = edges
    too_long: Messages = [{"role": "user", "content": "word " * 3000 + uuid.uuid4().hex}]
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as caught:
            await chat(a.client(), too_long)
        assert caught.value.response.headers.get(HEADER) == "miss"


# -- the stores under pressure, and a new model version ---------------------------------------


async def test_the_memory_cache_keeps_its_bound_under_a_flood_of_distinct_requests(
    log_dir: Path, vllm: Stack, keys: tuple[dict[str, str], Path]
) -> None:
    edge = await _edge(
        log_dir,
        vllm,
        keys,
        "edge-memory",
        {"EDGE_CACHE": "memory", "EDGE_CACHE_MAX_BYTES": str(SMALL_CACHE_BYTES)},
    )
    try:
        flood = [prompt() for _ in range(40)]
        for messages in flood:
            assert (await chat(edge.client(), messages)).header == "miss"
        # The newest answers are kept; the oldest were evicted to stay within the bound.
        assert (await chat(edge.client(), flood[-1])).header == "hit"
        assert (await chat(edge.client(), flood[0])).header == "miss"
    finally:
        await asyncio.to_thread(edge.stop)


async def test_redis_killed_mid_run_is_misses_and_no_errors(
    log_dir: Path, vllm: Stack, keys: tuple[dict[str, str], Path]
) -> None:
    with running_redis(_dir(log_dir, "doomed")) as doomed:
        edge = await _edge(
            log_dir,
            vllm,
            keys,
            "edge-doomed",
            {"EDGE_CACHE": "redis", "EDGE_CACHE_REDIS_URL": doomed.url},
        )
        try:
            messages = prompt()
            assert (await chat(edge.client(), messages)).header == "miss"
            assert (await chat(edge.client(), messages)).header == "hit"

            doomed.stop()
            before = await engine_requests(vllm)
            answers = [await chat(edge.client(), messages) for _ in range(3)]
            streamed = await stream(edge.client(), messages)

            assert [x.header for x in answers] == ["miss"] * 3
            assert streamed.header == "miss"
            assert streamed.text == answers[0].text
            assert await engine_requests(vllm) == before + 4
            samples = await edge.metrics()
            errors = "switchyard_edge_cache_errors_total"
            assert metric(samples, errors, operation="get") >= 4
            assert metric(samples, errors, operation="put") >= 4

            doomed.start()  # back (empty): the same edge caches again
            await eventually(
                lambda: _header_after(edge, messages, "hit"), what="a hit once Redis is back"
            )
        finally:
            await asyncio.to_thread(edge.stop)


async def _header_after(edge: Edge, messages: Messages, wanted: str) -> bool:
    """Whether the answer says `wanted`; a 503 (the old endpoint gone, the new one not yet
    seen serving: a moment of the switch on a loaded machine) is "not yet"."""
    try:
        return (await chat(edge.client(), messages)).header == wanted
    except openai.InternalServerError as exc:
        if exc.status_code != 503:
            raise
        return False


async def test_a_new_model_identity_never_serves_the_old_one_s_entries(
    log_dir: Path, vllm: Stack, keys: tuple[dict[str, str], Path]
) -> None:
    starts = (
        functools.partial(
            _start_edge, log_dir, vllm, keys, "edge-identity", {"EDGE_CACHE": "memory"}
        ),
        functools.partial(_stack_serving, log_dir, "switchyard/sim-1b-instruct-v2"),
    )
    async with started_together(*starts) as (edge, upgraded):
        assert isinstance(edge, Edge)
        assert isinstance(upgraded, Stack)
        await serving(edge)
        messages = prompt()
        assert (await chat(edge.client(), messages)).header == "miss"
        assert (await chat(edge.client(), messages)).header == "hit"

        # The route moves to an adapter serving other weights under the same name.
        write_routes(edge.routes_file, {"vllm": [upgraded.address]})
        answered_by_new = await eventually(
            lambda: _header_after(edge, messages, "miss"), what="the new weights' miss"
        )
        assert answered_by_new
        assert await engine_requests(upgraded) >= 1
        assert (await chat(edge.client(), messages)).header == "hit"  # the new one's entry


def _stack_serving(log_dir: Path, model: str) -> Stack:
    """A vLLM stack whose engine serves other weights (`model`) as the same served name."""
    args = [model if a == SIM_MODEL else a for a in sim_args("vllm", "127.0.0.1", 0, MODEL, FAST)]
    assert model in args
    sim = start("sim-vllm-v2", args, log_dir, port=0)
    try:
        listening_port(sim, SIM_LISTENING)
        adapter = start_adapter("vllm", f"http://127.0.0.1:{sim.port}", log_dir, "-v2")
    except BaseException:
        sim.stop()
        raise
    stack = Stack("vllm", MODEL, sim, adapter, FAST)
    try:
        wait_serving(adapter, stack.address)
    except BaseException:
        stack.stop()
        raise
    return stack
