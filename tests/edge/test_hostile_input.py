"""Hostile input gets a 4xx in OpenAI's error format, never a 5xx; schemathesis agrees."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.edge import Edge, start_edge
from tests.support.stacks import Stack, options, start_stack

pytestmark = pytest.mark.usefixtures("quiet_after")

CHAT = "/v1/chat/completions"
GOOD = {"model": "demo-vllm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return dict(error)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"[1, 2]", "body"),
        (b'"a string"', "body"),
        (orjson.dumps({**GOOD, "messages": "hello"}), "messages"),
        (orjson.dumps({**GOOD, "max_tokens": "many"}), "max_tokens"),
        (orjson.dumps({**GOOD, "max_tokens": -5}), "max_tokens"),
        (orjson.dumps({**GOOD, "max_tokens": 2**40}), "max_tokens"),
        (
            b'{"model": "demo-vllm", "messages": [{"role": "user", "content": "hi"}], "seed": 1180591620717411303424}',
            "seed",
        ),
        (orjson.dumps({**GOOD, "temperature": "hot"}), "temperature"),
        (orjson.dumps({**GOOD, "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (orjson.dumps({**GOOD, "messages": []}), "messages"),
        (orjson.dumps({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}), "role"),
        (
            orjson.dumps(
                {
                    **GOOD,
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image_url", "image_url": {"url": "x"}}],
                        }
                    ],
                }
            ),
            "messages",
        ),
        (orjson.dumps({**GOOD, "surprise": True}), "surprise"),
        (orjson.dumps({**GOOD, "stream": 0}), "stream"),
        (orjson.dumps({**GOOD, "max_tokens": "4"}), "max_tokens"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "model"}), "model"),
        (
            b'{"model": "demo-vllm", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            "finite",
        ),
        (
            orjson.dumps(
                {
                    **GOOD,
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "x", "schema": {"type": "nope"}},
                    },
                }
            ),
            "JSON Schema",
        ),
        (orjson.dumps({**GOOD, "response_format": {"type": "xml"}}), "response_format"),
    ],
)
async def test_malformed_bodies_are_400(edge: Edge, body: bytes, fragment: str) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.post(
            CHAT, content=body, headers={**edge.auth(), "content-type": "application/json"}
        )
    error = _assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert fragment in str(error["message"]), error
    assert response.headers["x-request-id"]


async def test_oversized_body_is_413(edge: Edge) -> None:
    huge = orjson.dumps(
        {**GOOD, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    )
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.post(CHAT, content=huge, headers=edge.auth())
        _assert_openai_error(response, 413)
        # A lying Content-Length is not trusted either: the streamed size counts.
        chunks = [
            b'{"model": "demo-vllm", "messages": [{"role": "user", "content": "',
            b"x" * (5 * 1024 * 1024),
            b'"}]}',
        ]

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        response = await client.post(CHAT, content=body(), headers=edge.auth())
        _assert_openai_error(response, 413)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer sy-wrong",
        "Token abc",
        "bearer  x y",
        "Bearer " + "a" * 5000,
    ],
)
async def test_missing_or_malformed_auth_is_401(edge: Edge, authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.post(CHAT, json=GOOD, headers=headers)
    error = _assert_openai_error(response, 401)
    assert error["code"] == "invalid_api_key"


async def test_auth_is_checked_before_the_body(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.post(
            CHAT, content=b"{garbage", headers={"authorization": "Bearer nope"}
        )
    _assert_openai_error(response, 401)


async def test_absurd_but_well_typed_max_tokens_is_400(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.post(
            CHAT, json={**GOOD, "max_tokens": 2**31 - 1}, headers=edge.auth()
        )
    _assert_openai_error(response, 400)


async def test_unknown_routes_and_methods_answer_in_openai_format(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        _assert_openai_error(await client.get("/v1/nothing-here"), 404)
        _assert_openai_error(await client.get(CHAT), 405)


#: Schemathesis sends hundreds of schema-valid chats to demo-vllm, most without max_tokens
#: (so up to the whole context): at the session stacks' pace (2 ms a token) they took most
#: of its time. What it checks (no 5xx, every answer as the schema says) is pace-free.
INSTANT = options(ttft_s=0, itl_s=0)


@pytest.fixture
async def instant_edge(engines: dict[str, Stack], tmp_path: Path) -> AsyncIterator[Edge]:
    """An edge whose demo-vllm answers at once; the other engines, the session's."""
    stack = await asyncio.to_thread(start_stack, "vllm", tmp_path, INSTANT, "-instant")
    try:
        endpoints = {e: [s.address] for e, s in {**engines, "vllm": stack}.items()}
        edge = await asyncio.to_thread(start_edge, tmp_path, endpoints, name="edge-instant")
        try:
            yield edge
        finally:
            await asyncio.to_thread(edge.stop)
    finally:
        await asyncio.to_thread(stack.stop)


# Thousands of requests, CPU-bound: on a loaded 2-core machine it has run past the suite's
# 120 s default; the run's own bound (below) is the one meant.
@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_errors_or_schema_violations(
    instant_edge: Edge, tmp_path: Path
) -> None:
    edge = instant_edge
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis), "run", f"{edge.url}/openapi.json",
            "--header", f"Authorization: Bearer {edge.keys['full']}",
            "--checks", "all",
            # A schema-valid request may still exceed the model's context (max_tokens near
            # 2**31): a 400 from the engine, as OpenAI answers it, that no static schema can
            # express. Every other check stays on, including "invalid data is rejected".
            "--exclude-checks", "positive_data_acceptance",
            # Random cases per operation, after the coverage phase's deterministic ones
            # (each boundary and kind of invalid value: most of the run); 20 (40 before)
            # halve the fuzzing phase's time.
            "--max-examples", "20",
            "--seed", "20261122",
            # One worker: CPython 3.11's `ast` is not thread-safe (gh-106905: "AST constructor
            # recursion depth mismatch" when two threads parse at once), and hypothesis parses
            # while it generates; a second thread gains little under the GIL anyway.
            "--workers", "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    assert "passed" in result.stdout
