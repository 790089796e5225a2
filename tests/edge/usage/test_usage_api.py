"""The usage API against a real edge (usage in Redis) and simulators, driven by the
official `openai` SDK: after a mixed run (unary and streamed chat, completions, embeddings,
a stream the client abandons, requests refused), `GET /admin/v1/usage` says what the
edge's per-request log lines say, per key and per tenant; and only an admin key reads it."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.redis import RedisServer
from tests.support.stacks import Stack, options, start_stack

CHAT, EMBED = "demo-vllm", "demo-sglang"
#: Two tenants with a key each, and an admin key (of a third tenant).
USERS = {"alpha-dev": "alpha", "beta-dev": "beta"}
ADMIN = "ops"
USAGE = "/admin/v1/usage"


@pytest.fixture(scope="module")
async def edge(
    engines: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Edge, Stack]]:
    log_dir = tmp_path_factory.mktemp("usage")
    redis = RedisServer(log_dir)
    await asyncio.to_thread(redis.start)
    plain = {name: generate_key() for name in (*USERS, ADMIN)}
    entries = [
        KeyEntry(name=name, tenant=tenant, sha256=hash_key(plain[name]), models=["*"])
        for name, tenant in USERS.items()
    ] + [KeyEntry(name=ADMIN, tenant="platform", sha256=hash_key(plain[ADMIN]), role="admin")]
    keys_file = log_dir / "keys.yaml"
    keys_file.write_text(render_keys(entries))
    embed: Stack | None = None
    running: Edge | None = None
    try:
        embed = await asyncio.to_thread(
            start_stack, "sglang", log_dir, options(embedding=True), "-usage-embed"
        )
        endpoints = {"vllm": [engines["vllm"].address], "sglang": [embed.address]}
        running = await asyncio.to_thread(
            start_edge,
            log_dir,
            endpoints,
            redis_url=redis.url,  # the limiter's backend, so the usage store's too
            keyring=(plain, keys_file),
            # About counting, not latency: a busy machine must not make Redis time out.
            env={"EDGE_REDIS_TIMEOUT_S": "2"},
        )
        yield running, engines["vllm"]
    finally:
        if running is not None:
            await asyncio.to_thread(running.stop)
        if embed is not None:
            await asyncio.to_thread(embed.stop)
        await asyncio.to_thread(redis.close)


async def _usage(edge: Edge, key: str | None = ADMIN, **params: str) -> httpx.Response:
    headers = {} if key is None else edge.auth(key)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(f"{edge.url}{USAGE}", params=params, headers=headers)


async def _mixed_run(edge: Edge, vllm: Stack, key: str) -> None:
    """One of each kind of request, as `key`."""
    client = edge.client(key)
    chat: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"hello {key}"}]
    await client.chat.completions.create(model=CHAT, messages=chat, max_tokens=5)
    stream = await client.chat.completions.create(
        model=CHAT,
        messages=chat,
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for _ in stream:
        pass
    await client.completions.create(model=CHAT, prompt="count to three", max_tokens=3)
    await client.embeddings.create(model=EMBED, input=["one", "two words"])
    # A stream the client leaves midway: the engine holds it after its second token.
    async with vllm.stalled(count=1, after=2):
        abandoned = await client.chat.completions.create(
            model=CHAT,
            messages=chat,
            max_tokens=50,
            stream=True,
        )
        async for chunk in abandoned:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await abandoned.close()
        # Its record is written once the edge has seen the client go (the stall holds till then).
        await eventually(
            lambda: any(r["key"] == key and r["status"] == 499 for r in _requests(edge)),
            what=f"the abandoned stream of {key} recorded",
        )
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="no-such-model", messages=chat)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=CHAT, messages=chat, n=1000)
    await client.close()


def _requests(edge: Edge) -> list[dict[str, Any]]:
    """The edge's per-request log lines."""
    return [r for r in edge.records() if r.get("event") == "request"]


def _sums(lines: Iterable[dict[str, Any]], by: str) -> dict[str, dict[str, int]]:
    sums: dict[str, Counter[str]] = {}
    for line in lines:
        s = sums.setdefault(line[by], Counter())
        s["requests"] += 1
        s["input_tokens"] += line["prompt_tokens"]
        s["output_tokens"] += line["completion_tokens"]
        s["errors"] += line["status"] >= 400 and line["status"] != 499
        s["cancelled"] += line["status"] == 499
    return {name: dict(s) for name, s in sums.items()}


def _measured(data: list[dict[str, Any]], by: str) -> dict[str, dict[str, int]]:
    names = ("requests", "input_tokens", "output_tokens", "errors", "cancelled")
    return {entry[by]: {n: entry[n] for n in names} for entry in data}


async def test_the_usage_totals_equal_the_sums_of_the_log_lines(
    edge: tuple[Edge, Stack],
) -> None:
    running, vllm = edge
    for key in USERS:
        await _mixed_run(running, vllm, key)
    with pytest.raises(openai.NotFoundError):  # an admin key calls no model: counted too
        await running.client(ADMIN).models.retrieve(CHAT)
    with pytest.raises(openai.NotFoundError):
        await running.client(ADMIN).chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "hi"}],
        )

    # The edge logs a request as it ends, just after its answer went out.
    def logged() -> list[dict[str, Any]] | None:
        found = [r for r in _requests(running) if r["key"] is not None]
        return found if len(found) >= 2 * 7 + 1 else None

    lines = await eventually(logged, what="every request logged")
    assert len(lines) == 2 * 7 + 1  # /v1/models is not a request through the pipeline
    assert {r["status"] for r in lines} >= {200, 400, 404, 499}
    assert {r["api"] for r in lines} == {"chat", "completions", "embeddings"}

    # The usage write follows the log line: wait until every request is counted.
    async def counted() -> dict[str, Any] | None:
        answer = (await _usage(running)).json()
        return answer if answer["totals"]["requests"] == len(lines) else None

    by_key = await eventually(counted, what="every request counted")
    assert by_key["group_by"] == ["tenant", "key"]
    assert _measured(by_key["data"], "key") == _sums(lines, "key")
    assert {(d["tenant"], d["key"]) for d in by_key["data"]} == {
        ("alpha", "alpha-dev"),
        ("beta", "beta-dev"),
        ("platform", ADMIN),
    }
    by_tenant = (await _usage(running, group_by="tenant")).json()
    assert _measured(by_tenant["data"], "tenant") == _sums(lines, "tenant")
    totals = _sums(lines, "api")
    assert {a: t["input_tokens"] for a, t in totals.items()} == {
        d["api"]: d["input_tokens"] for d in (await _usage(running, group_by="api")).json()["data"]
    }
    assert totals["embeddings"]["input_tokens"] > 0
    assert totals["chat"]["output_tokens"] > 0

    # Filters, and the same numbers as CSV.
    alpha = (await _usage(running, tenant="alpha", group_by="model,status")).json()
    assert alpha["totals"]["requests"] == sum(r["tenant"] == "alpha" for r in lines)
    assert {d["model"] for d in alpha["data"]} == {CHAT, EMBED, "(none)"}
    answer = await _usage(running, group_by="key", format="csv")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {r["key"]: int(r["output_tokens"]) for r in rows} == {
        k: s["output_tokens"] for k, s in _sums(lines, "key").items()
    }

    # Prometheus: per tenant and served model, never per key.
    samples = await running.metrics()
    for tenant in (*USERS.values(), "platform"):
        mine = [r for r in lines if r["tenant"] == tenant]
        for name, field in (("input", "prompt_tokens"), ("output", "completion_tokens")):
            metric = f"switchyard_edge_tenant_{name}_tokens_total"
            value = sum(
                v
                for (n, labels), v in samples.items()
                if n == metric and ("tenant", tenant) in labels
            )
            assert value == sum(r[field] for r in mine), (tenant, name)
        requests = sum(
            v
            for (n, labels), v in samples.items()
            if n == "switchyard_edge_tenant_requests_total" and ("tenant", tenant) in labels
        )
        assert requests == len(mine)
    assert not any("key" in dict(labels) for (n, labels), _ in samples.items() if "tenant" in n)


@pytest.mark.parametrize(
    ("key", "status", "code"), [("alpha-dev", 403, "admin_only"), (None, 401, "invalid_api_key")]
)
async def test_only_an_admin_key_reads_usage(
    edge: tuple[Edge, Stack], key: str | None, status: int, code: str
) -> None:
    # Bad parameters too: a normal key learns nothing about the query.
    answer = await _usage(edge[0], key, group_by="colour")
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "tenant,colour"}, "group_by"),
        ({"start": "2026-12-03T10:00", "end": "2026-12-03T09:00"}, "start"),
        ({"start": "2000-01-01"}, "start"),  # beyond the retention (90 days)
        ({"end": "not-a-date"}, "end"),
    ],
)
async def test_bad_parameters_are_400_in_openais_format(
    edge: tuple[Edge, Stack], params: dict[str, str], param: str
) -> None:
    answer = await _usage(edge[0], ADMIN, **params)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
