"""Anthropic's Messages API through the official `anthropic` SDK, on every engine: create,
stream (the SDK's text stream and final message; the raw event order), count_tokens,
stop sequences, errors in Anthropic's shapes, and a client leaving a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import Message, TextBlock

from tests.edge.anthropic.support import client, header_client
from tests.edge.conftest import settled
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually
from tests.support.stacks import ENGINES, Stack

pytestmark = pytest.mark.usefixtures("quiet_after")

HELLO: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Tell me a story"}]


def text_of(message: Message) -> str:
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


def error_body(exc: anthropic.APIStatusError) -> dict[str, Any]:
    assert isinstance(exc.body, dict)
    return exc.body


@pytest.mark.parametrize("engine", ENGINES)
async def test_create(edge: Edge, engine: str) -> None:
    message = await client(edge).messages.create(
        model=f"demo-{engine}", max_tokens=16, system="Be brief.", messages=HELLO
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == f"demo-{engine}"
    assert text_of(message)
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert 0 < message.usage.output_tokens <= 16
    assert message._request_id  # the `request-id` header Anthropic's SDK reads


@pytest.mark.parametrize("engine", ENGINES)
async def test_stream(edge: Edge, engine: str) -> None:
    async with client(edge).messages.stream(
        model=f"demo-{engine}", max_tokens=24, messages=HELLO
    ) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == text_of(final)
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.input_tokens > 0
    assert 0 < final.usage.output_tokens <= 24


def _events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of every event; comments (keep-alives) left out."""
    out = []
    for chunk in raw.split("\n\n"):
        lines = [line for line in chunk.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name, data = lines
        out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


@pytest.mark.parametrize("engine", ENGINES)
async def test_stream_events_in_anthropics_order(edge: Edge, engine: str) -> None:
    body = {"model": f"demo-{engine}", "max_tokens": 12, "messages": HELLO, "stream": True}
    headers = {"x-api-key": edge.keys["full"], "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(f"{edge.url}/v1/messages", json=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    middle = names[3:-3]
    assert middle
    assert set(middle) == {"content_block_delta"}
    for name, data in events:
        assert data["type"] == name
    _, delta = events[-2]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert delta["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_count_tokens_is_the_generations_input(edge: Edge, engine: str) -> None:
    sdk = client(edge)
    args: dict[str, Any] = {
        "model": f"demo-{engine}",
        "system": "You answer in one line.",
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Tell me a story"},
        ],
    }
    counted = await sdk.messages.count_tokens(**args)
    message = await sdk.messages.create(max_tokens=4, **args)
    assert counted.input_tokens == message.usage.input_tokens > 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_stop_sequence_is_named(edge: Edge, engine: str) -> None:
    """Greedy outputs are the same with and without stop strings: one is picked from an
    output made without it."""
    sdk = client(edge)
    args: dict[str, Any] = {
        "model": f"demo-{engine}",
        "max_tokens": 32,
        "messages": HELLO,
        # Greedy. The SDK (2.16) has no `temperature` argument any more; the API takes it.
        "extra_body": {"temperature": 0.0},
    }
    text = text_of(await sdk.messages.create(**args))
    words = text.split()
    assert len(words) >= 4, text
    stop = " " + words[len(words) // 2]
    before = text[: text.find(stop)]
    stopped = await sdk.messages.create(**args, stop_sequences=[stop, "never-generated-zz"])
    assert (stopped.stop_reason, stopped.stop_sequence, text_of(stopped)) == (
        "stop_sequence",
        stop,
        before,
    )
    async with sdk.messages.stream(**args, stop_sequences=[stop]) as stream:
        final = await stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence, text_of(final)) == (
        "stop_sequence",
        stop,
        before,
    )


async def test_the_x_api_key_header_authenticates(edge: Edge) -> None:
    message = await header_client(edge).messages.create(
        model="demo-vllm", max_tokens=4, messages=HELLO
    )
    assert message.usage.output_tokens > 0


@pytest.mark.parametrize("make", [client, header_client])
async def test_a_bad_key_is_an_authentication_error(edge: Edge, make: Any) -> None:
    with pytest.raises(anthropic.AuthenticationError) as raised:
        await make(edge, "sk-not-a-key").messages.create(
            model="demo-vllm", max_tokens=4, messages=HELLO
        )
    body = error_body(raised.value)
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "x-api-key" in body["error"]["message"]
    assert body["request_id"] == raised.value.response.headers["request-id"]


async def test_no_max_tokens_is_a_bad_request(edge: Edge) -> None:
    # The SDK's typed method requires max_tokens: the body goes out through its `post`.
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client(edge).post(
            "/v1/messages", body={"model": "demo-vllm", "messages": HELLO}, cast_to=Message
        )
    error = error_body(raised.value)["error"]
    assert error["type"] == "invalid_request_error"
    assert "max_tokens: Field required" in error["message"]


async def test_an_unknown_block_type_is_a_bad_request(edge: Edge) -> None:
    messages: Any = [
        {"role": "user", "content": [{"type": "hologram", "data": "..."}]},
    ]
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client(edge).messages.create(model="demo-vllm", max_tokens=4, messages=messages)
    error = error_body(raised.value)["error"]
    assert error["type"] == "invalid_request_error"
    assert "'hologram'" in error["message"]


async def test_an_unknown_model_is_not_found(edge: Edge) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        await client(edge).messages.create(model="claude-nope", max_tokens=4, messages=HELLO)
    assert error_body(raised.value)["error"]["type"] == "not_found_error"


async def test_a_keys_rate_limit_is_a_rate_limit_error(edge: Edge) -> None:
    """The "tpm-2500" key may use 2,500 tokens a minute: a request that may use more is
    refused at once (and holds nothing)."""
    with pytest.raises(anthropic.RateLimitError) as raised:
        await client(edge, "tpm-2500").messages.create(
            model="demo-vllm", max_tokens=5000, messages=HELLO
        )
    assert raised.value.status_code == 429
    error = error_body(raised.value)["error"]
    assert error["type"] == "rate_limit_error"
    assert "2500" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("GET", "/v1/messages", 405, "invalid_request_error"),
        ("POST", "/v1/messages/batches", 404, "not_found_error"),
    ],
)
async def test_the_frameworks_own_errors_are_anthropics_here(
    edge: Edge, method: str, path: str, status: int, kind: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.request(method, f"{edge.url}{path}", headers=edge.auth())
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind


async def _aborted(stack: Stack) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        aborted: int = (await http.get(f"{stack.sim_url}/sim/stats")).json()["aborted"]
        return aborted


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # engines with a long stream on hold
async def test_client_leaving_a_stream_aborts_the_engine(
    edge: Edge, engines: dict[str, Stack], engine: str
) -> None:
    stack = engines[engine]
    before = await _aborted(stack)
    # The engine holds the stream after its first token until the client leaves.
    async with (
        stack.stalled(count=1),
        client(edge).messages.stream(
            model=f"demo-{engine}", max_tokens=1000, messages=HELLO
        ) as stream,
    ):
        async for text in stream.text_stream:
            if text:
                break  # some text arrived: leave mid-stream

    async def aborted() -> bool:
        return await _aborted(stack) > before

    await eventually(aborted, what="the engine saw the abort")
    await settled(edge, engines)


async def test_count_tokens_is_one_request_and_no_tokens(edge: Edge) -> None:
    """On the "metered" key (6,000 tokens a minute): a count charges none of them, so the
    tokens left never drop from one count to the next (they only refill meanwhile)."""
    sdk = client(edge, "metered")
    messages: Any = [{"role": "user", "content": "story " * 300}]  # ~600 tokens estimated
    remaining = []
    for _ in range(2):
        raw = await sdk.messages.with_raw_response.count_tokens(
            model="demo-vllm", messages=messages
        )
        assert (await raw.parse()).input_tokens > 0
        remaining.append(int(raw.headers["x-ratelimit-remaining-tokens"]))
    assert remaining[1] >= remaining[0]


async def test_the_openapi_document_describes_the_routes(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as http:
        spec = (await http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for path, model in (
        ("/v1/messages", "MessagesRequest"),
        ("/v1/messages/count_tokens", "CountTokensRequest"),
    ):
        operation = spec["paths"][path]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert {"anthropic": []} in operation["security"]
        assert "529" in operation["responses"]
    assert "max_tokens" in schemas["MessagesRequest"]["required"]
    assert "max_tokens" not in schemas["CountTokensRequest"]["properties"]
    assert spec["components"]["securitySchemes"]["anthropic"]["name"] == "x-api-key"


async def test_keep_alives_are_sse_comments_between_events(
    eager_keepalive_edge: Edge, engines: dict[str, Stack]
) -> None:
    """A silent stream gets SSE comments (which every SSE reader, the SDK's too, skips),
    never inside an event: the engine holds the stream after its first token."""
    edge = eager_keepalive_edge
    body = {"model": "demo-vllm", "max_tokens": 1000, "messages": HELLO, "stream": True}
    seen: list[str] = []
    async with (
        engines["vllm"].stalled(count=1),
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", f"{edge.url}/v1/messages", json=body, headers=edge.auth()) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            seen.append(line)
            if line.startswith(":") and any("text_delta" in s for s in seen):
                break  # a keep-alive after some text: leave
    comment = seen[-1]
    assert comment == ": keep-alive"
    # Every event before it is whole: `event:` then `data:` then a blank line.
    lines = seen[:-1]
    events = [i for i, line in enumerate(lines) if line.startswith("event: ")]
    assert events
    for i in events:
        assert lines[i + 1].startswith("data: ")
        assert lines[i + 2] == ""
    await settled(edge, {"vllm": engines["vllm"]})


@pytest.fixture
async def short_deadline_edge(engines: dict[str, Stack], tmp_path: Path) -> AsyncIterator[Edge]:
    """An edge whose requests may take 2 seconds."""
    endpoints = {"vllm": [engines["vllm"].address]}
    env = {"EDGE_REQUEST_TIMEOUT_S": "2"}
    running = await asyncio.to_thread(start_edge, tmp_path, endpoints, env=env)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def test_a_stream_failing_after_its_first_byte_ends_with_an_error_event(
    short_deadline_edge: Edge, engines: dict[str, Stack]
) -> None:
    """The engine holds the stream after its first token, so the deadline passes mid-stream:
    the SDK reads the `error` event as Anthropic's and raises it."""
    edge = short_deadline_edge
    texts: list[str] = []

    async def read() -> None:
        async with client(edge).messages.stream(
            model="demo-vllm", max_tokens=1000, messages=HELLO
        ) as stream:
            async for text in stream.text_stream:
                texts.append(text)  # noqa: PERF401 (what came before the error counts)

    async with engines["vllm"].stalled(count=1):
        with pytest.raises(anthropic.APIStatusError) as raised:
            await read()
    assert texts  # the stream had begun
    body = error_body(raised.value)
    assert body["type"] == "error"
    assert body["error"]["type"] == "timeout_error"
    await settled(edge, {"vllm": engines["vllm"]})
