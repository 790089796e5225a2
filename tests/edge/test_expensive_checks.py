"""A response_format schema is an expensive check: bounded in size, run after rate
limiting, never on the event loop (the canary keeps making progress meanwhile)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support.edge import Edge

pytestmark = pytest.mark.usefixtures("quiet_after")

CHAT = "/v1/chat/completions"
PARAM = "response_format.json_schema.schema"


def _body(schema: dict[str, Any], model: str = "demo-vllm") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def heavy_schema(*, valid: bool = True) -> dict[str, Any]:
    """As costly to check as the default limits allow (~2,000 subschemas), and new each
    time (a schema seen valid lately is not checked again). An invalid one has its error
    in its last subschema, so it is found only at the end of the check."""
    tag = uuid.uuid4().hex[:8]
    properties: dict[str, Any] = {f"p{i}_{tag}": {"type": "string"} for i in range(990)}
    if not valid:
        properties[f"p989_{tag}"] = {"type": "nope"}
    return {
        "type": "object",
        "$defs": {f"d{i}_{tag}": {"type": "integer"} for i in range(990)},
        "properties": properties,
    }


async def _schema_checks(edge: Edge) -> float:
    samples = await edge.metrics()
    return sum(
        v for (name, _), v in samples.items() if name == "switchyard_edge_request_checks_total"
    )


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"type": "object", "properties": {f"p{i}": {} for i in range(1001)}}, "1000 properties"),
        ({"anyOf": [{"type": "string"} for _ in range(2001)]}, "2000 objects and arrays"),
        ({"type": "string", "description": "x" * (129 * 1024)}, "131072 bytes"),
        (_nested(40), "32 levels"),
    ],
    ids=["properties", "nodes", "bytes", "depth"],
)
async def test_oversize_schemas_are_400_naming_the_limit(
    edge: Edge, schema: dict[str, Any], limit: str
) -> None:
    checks_before = await _schema_checks(edge)
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        response = await client.post(CHAT, json=_body(schema), headers=edge.auth())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        PARAM,
        "schema_too_large",
    )
    assert limit in error["message"]
    assert await _schema_checks(edge) == checks_before  # refused before any expensive check


async def test_an_invalid_schema_is_400_after_its_check(edge: Edge) -> None:
    checks_before = await _schema_checks(edge)
    schema = {"type": "object", "properties": {"a": {"type": "nope"}}, "title": uuid.uuid4().hex}
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        response = await client.post(CHAT, json=_body(schema), headers=edge.auth())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == PARAM
    assert "not a valid JSON Schema" in response.json()["error"]["message"]
    assert await _schema_checks(edge) == checks_before + 1


async def test_a_key_out_of_quota_is_refused_without_checking_its_schema(edge: Edge) -> None:
    # "one-rpm" may send one request a minute: spend it, then send a heavy schema.
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        first = await client.post(
            CHAT,
            json={"model": "demo-vllm", "messages": [{"role": "user", "content": "hi"}]},
            headers=edge.auth("one-rpm"),
        )
        assert first.status_code == 200, first.text
        checks_before = await _schema_checks(edge)
        refused = await client.post(CHAT, json=_body(heavy_schema()), headers=edge.auth("one-rpm"))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert await _schema_checks(edge) == checks_before


async def test_the_edge_keeps_serving_while_a_heavy_schema_is_checked(edge: Edge) -> None:
    """While one heavy schema is being checked, health probes and a stream on another model
    make progress (counted, never timed). The schema is invalid, so the request is pending
    only while the edge checks it (no backend is called)."""
    async with httpx.AsyncClient(base_url=edge.url, timeout=60) as client:
        stream_chunks = 0
        stream_open = asyncio.Event()

        async def stream() -> None:  # one stream after another, until cancelled
            nonlocal stream_chunks
            body = {
                "model": "demo-sglang",
                "messages": [{"role": "user", "content": "go"}],
                "max_tokens": 900,
                "ignore_eos": True,
                "stream": True,
            }
            while True:
                async with client.stream("POST", CHAT, json=body, headers=edge.auth()) as response:
                    assert response.status_code == 200, await response.aread()
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            stream_chunks += 1
                            stream_open.set()

        streaming = asyncio.create_task(stream())
        await asyncio.wait_for(stream_open.wait(), 30)

        heavy = asyncio.create_task(
            client.post(CHAT, json=_body(heavy_schema(valid=False)), headers=edge.auth())
        )
        probes = 0
        chunks_at_start = stream_chunks
        # For the failure message only: whether few probes mean a short check or a stall.
        started, slowest = time.monotonic(), 0.0
        while not heavy.done():
            sent = time.monotonic()
            response = await client.get("/healthz")
            slowest = max(slowest, time.monotonic() - sent)
            assert response.status_code == 200
            if not heavy.done():
                probes += 1
        window = time.monotonic() - started
        chunks_while_pending = stream_chunks - chunks_at_start
        answer = await heavy
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == PARAM
    assert probes >= 10, (
        f"only {probes} health probes answered while the schema was checked "
        f"({window:.2f} s; the slowest probe {slowest:.2f} s; {chunks_while_pending} chunks); "
        f"the edge's log:\n{edge.service.log_tail()}"
    )
    assert chunks_while_pending >= 10, f"only {chunks_while_pending} stream chunks meanwhile"


@pytest.mark.usefixtures("features_quiet_after")
async def test_tool_schemas_are_checked_once_then_remembered(features: Edge) -> None:
    """An agent sends the same tools with every turn: their schemas are checked the first
    time only (an image's base64 is checked every time: it is new every time)."""
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "title": uuid.uuid4().hex},
        },
    }
    body = {
        "model": "demo-vllm",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "tools": [tool],
        "tool_choice": "none",
    }
    async with httpx.AsyncClient(base_url=features.url, timeout=30) as client:
        checks = [await _schema_checks(features)]
        for _ in range(2):
            response = await client.post(CHAT, json=body, headers=features.auth())
            assert response.status_code == 200, response.text
            checks.append(await _schema_checks(features))
    assert checks == [checks[0], checks[0] + 1, checks[0] + 1]


@pytest.mark.usefixtures("features_quiet_after")
async def test_a_key_out_of_quota_gets_no_tool_or_image_check(features: Edge) -> None:
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"\0" * 64).decode()
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "title": uuid.uuid4().hex}},
    }
    heavy = {
        "model": "demo-vllm",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}
        ],
        "tools": [tool],
    }
    async with httpx.AsyncClient(base_url=features.url, timeout=30) as client:
        first = await client.post(
            CHAT,
            json={"model": "demo-vllm", "messages": [{"role": "user", "content": "hi"}]},
            headers=features.auth("one-rpm"),
        )
        assert first.status_code == 200, first.text
        checks_before = await _schema_checks(features)
        refused = await client.post(CHAT, json=heavy, headers=features.auth("one-rpm"))
    assert refused.status_code == 429, refused.text
    assert await _schema_checks(features) == checks_before
