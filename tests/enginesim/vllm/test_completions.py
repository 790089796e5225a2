"""`/v1/completions` and `/v1/chat/completions`: bodies, chunks, usage, sampling, constraints."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import validate

from tests.enginesim.vllm.conftest import MODEL, Factory, events, piece

SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "technical", "other"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["category", "priority", "tags"],
    "additionalProperties": False,
}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
USAGE_KEYS = ["prompt_tokens", "total_tokens", "completion_tokens"]


async def post(client: httpx.AsyncClient, path: str, **body: Any) -> httpx.Response:
    return await client.post(path, json={"model": MODEL, **body})


async def test_completion_body(client: httpx.AsyncClient) -> None:
    response = await post(client, "/v1/completions", prompt="The yard", max_tokens=5, seed=7)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "id", "object", "created", "model", "choices", "service_tier", "system_fingerprint",
        "usage", "kv_transfer_params", "ec_transfer_params", "metrics",
    ]  # fmt: skip
    assert re.fullmatch(r"cmpl-[0-9a-f]{32}", body["id"])
    assert (body["object"], body["model"]) == ("text_completion", MODEL)
    assert body["system_fingerprint"].startswith("vllm-0.33.0-")
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "length"
    assert choice["stop_reason"] is None
    usage = body["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5
    assert usage["prompt_tokens_details"] is None


async def test_completions_default_to_16_tokens(client: httpx.AsyncClient) -> None:
    body = (await post(client, "/v1/completions", prompt="x", ignore_eos=True)).json()
    assert body["usage"]["completion_tokens"] == 16


async def test_chat_body(client: httpx.AsyncClient) -> None:
    response = await post(client, "/v1/chat/completions", messages=CHAT, max_tokens=64, seed=3)
    body = response.json()
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", body["id"])
    assert body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"]
    assert "tool_calls" not in message
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


async def test_request_id_header_wins_over_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": "x", "max_tokens": 1, "request_id": "from-body"},
        headers={"x-request-id": "from-header"},
    )
    assert response.json()["id"] == "cmpl-from-header"
    response = await post(client, "/v1/chat/completions", messages=CHAT, request_id="abc")
    assert response.json()["id"] == "chatcmpl-abc"


async def test_completion_stream_chunks(client: httpx.AsyncClient) -> None:
    response = await post(client, "/v1/completions", prompt="The yard", max_tokens=6, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response.text)
    assert len(chunks) == 6
    for chunk in chunks:
        assert list(chunk)[:5] == ["id", "object", "created", "model", "choices"]
        assert chunk["object"] == "text_completion"
        assert "usage" not in chunk
        assert chunk["kv_transfer_params"] is None
        (choice,) = chunk["choices"]
        assert list(choice) == [
            "index", "text", "logprobs", "finish_reason", "stop_reason",
            "prompt_token_ids", "token_ids", "weight_versions",
        ]  # fmt: skip
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
    assert "system_fingerprint" in chunks[-1]
    assert len({c["id"] for c in chunks}) == 1


async def test_chat_stream_starts_with_the_role(client: httpx.AsyncClient) -> None:
    response = await post(
        client, "/v1/chat/completions", messages=CHAT, max_tokens=4, stream=True, ignore_eos=True
    )
    first, *rest = events(response.text)
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert all("role" not in c["choices"][0]["delta"] for c in rest)
    assert [c["choices"][0]["finish_reason"] for c in rest] == [None] * 3 + ["length"]
    assert rest[-1]["choices"][0]["stop_reason"] is None


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_usage_chunk_and_continuous_usage(client: httpx.AsyncClient, path: str) -> None:
    source = {"prompt": "Tell me"} if path == "/v1/completions" else {"messages": CHAT}
    options = {"include_usage": True, "continuous_usage_stats": True}
    response = await post(
        client, path, **source, max_tokens=200, seed=4, stream=True, stream_options=options
    )
    chunks = events(response.text)
    *body, last = chunks
    assert last["choices"] == []
    assert list(last["usage"]) == USAGE_KEYS
    assert "system_fingerprint" in last
    assert all("system_fingerprint" not in c for c in body)
    counts = [c["usage"]["completion_tokens"] for c in body]
    assert counts == sorted(counts)
    assert counts[-1] == last["usage"]["completion_tokens"]
    prompt = last["usage"]["prompt_tokens"]
    assert all(c["usage"]["prompt_tokens"] == prompt for c in body)
    # Every chunk with text accounts for at least the one token that made it.
    previous = 0
    for chunk, count in zip(body, counts, strict=True):
        if piece(chunk):
            assert count > previous
        previous = count
    unary = (await post(client, path, **source, max_tokens=200, seed=4)).json()
    assert unary["usage"]["completion_tokens"] == counts[-1]


async def test_usage_only_when_asked(client: httpx.AsyncClient) -> None:
    response = await post(
        client,
        "/v1/completions",
        prompt="x",
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    *body, last = events(response.text)
    assert all("usage" not in c for c in body)
    assert last["usage"]["completion_tokens"] == 3


async def test_eos_is_counted_on_the_finishing_chunk(client: httpx.AsyncClient) -> None:
    for seed in range(20):
        options = {"include_usage": True, "continuous_usage_stats": True}
        response = await post(
            client, "/v1/completions", prompt="Go", max_tokens=400, seed=seed, stream=True,
            stream_options=options,
        )  # fmt: skip
        *body, _ = events(response.text)
        if body[-1]["choices"][0]["finish_reason"] == "stop":
            assert body[-1]["choices"][0]["text"] == ""
            assert (
                body[-1]["usage"]["completion_tokens"] == body[-2]["usage"]["completion_tokens"] + 1
            )
            return
    raise AssertionError("no seed ended with EOS")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_seeded_output_is_deterministic_streamed_or_not(
    client: httpx.AsyncClient, path: str
) -> None:
    source = {"prompt": "Once"} if path == "/v1/completions" else {"messages": CHAT}

    def text_of(body: dict[str, Any]) -> str:
        choice = body["choices"][0]
        return str(choice["text"] if "text" in choice else choice["message"]["content"])

    first = text_of((await post(client, path, **source, seed=99, max_tokens=50)).json())
    second = text_of((await post(client, path, **source, seed=99, max_tokens=50)).json())
    other = text_of((await post(client, path, **source, seed=100, max_tokens=50)).json())
    assert first == second != other
    stream = await post(client, path, **source, seed=99, max_tokens=50, stream=True)
    streamed = "".join(piece(c) for c in events(stream.text))
    assert streamed == first


async def test_stop_strings(client: httpx.AsyncClient) -> None:
    free = (await post(client, "/v1/completions", prompt="A", seed=5, max_tokens=100)).json()
    text = free["choices"][0]["text"]
    word = next(w for w in re.findall(r" [a-z]{4,}", text) if text.index(w) > 0)
    cut = (
        await post(client, "/v1/completions", prompt="A", seed=5, max_tokens=100, stop=[word])
    ).json()
    choice = cut["choices"][0]
    assert choice["text"] == text[: text.index(word)]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", word)
    kept = (
        await post(
            client, "/v1/completions", prompt="A", seed=5, max_tokens=100, stop=word,
            include_stop_str_in_output=True,
        )
    ).json()  # fmt: skip
    assert kept["choices"][0]["text"] == text[: text.index(word)] + word


async def test_n_choices_and_echo(client: httpx.AsyncClient) -> None:
    body = (await post(client, "/v1/completions", prompt="Hi", n=3, seed=1, max_tokens=8)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in body["choices"]}) > 1
    echoed = (await post(client, "/v1/completions", prompt="Hi", echo=True, max_tokens=2)).json()
    assert echoed["choices"][0]["text"].startswith("Hi")
    chunks = events(
        (await post(client, "/v1/completions", prompt="Hi", n=2, max_tokens=3, stream=True)).text
    )
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}


async def test_content_parts_are_text(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    body = (await post(client, "/tokenize", messages=[{"role": "user", "content": parts}])).json()
    plain = (
        await post(client, "/tokenize", messages=[{"role": "user", "content": "Hello\nthere"}])
    ).json()
    assert body["tokens"] == plain["tokens"]
    response = await post(
        client,
        "/v1/chat/completions",
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    )
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_structured_outputs_conform(client: httpx.AsyncClient, path: str) -> None:
    source = {"prompt": "Ticket:"} if path == "/v1/completions" else {"messages": CHAT}

    async def text(**constraint: Any) -> str:
        body = (await post(client, path, **source, max_tokens=300, **constraint)).json()
        choice = body["choices"][0]
        return str(choice["text"] if "text" in choice else choice["message"]["content"])

    for seed in range(3):
        validate(orjson.loads(await text(seed=seed, structured_outputs={"json": SCHEMA})), SCHEMA)
    response_format = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}
    validate(orjson.loads(await text(response_format=response_format)), SCHEMA)
    assert isinstance(orjson.loads(await text(response_format={"type": "json_object"})), dict)
    assert isinstance(orjson.loads(await text(structured_outputs={"json_object": True})), dict)
    assert re.fullmatch(
        r"[A-Z]{3}-\d{4}", await text(structured_outputs={"regex": r"[A-Z]{3}-\d{4}"})
    )
    assert await text(structured_outputs={"choice": ["yes", "no"]}) in ("yes", "no")
    grammar = 'root ::= answer " " answer\nanswer ::= "yes" | "no"'
    assert re.fullmatch(r"(yes|no) (yes|no)", await text(structured_outputs={"grammar": grammar}))


async def test_removed_guided_fields_are_ignored(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await post(
        client, "/v1/chat/completions", messages=CHAT, seed=2, max_tokens=40,
        guided_json=SCHEMA, guided_regex="[0-9]+",
    )  # fmt: skip
    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    assert not re.fullmatch("[0-9]+", content)
    with pytest.raises(ValueError, match=r"."):
        orjson.loads(content)
    assert "guided_json" in caplog.text
    assert "will NOT be constrained" in caplog.text


async def test_greedy_ignores_the_seed(client: httpx.AsyncClient) -> None:
    texts = {
        (
            await post(client, "/v1/completions", prompt="Q", temperature=0, seed=s, max_tokens=20)
        ).json()["choices"][0]["text"]
        for s in (1, 2)
    }
    assert len(texts) == 1


async def test_stop_token_ids(simulator: Factory) -> None:
    client, _ = await simulator()
    free = (await post(client, "/v1/completions", prompt="Q", seed=8, max_tokens=30)).json()
    tokens = (await post(client, "/tokenize", prompt=free["choices"][0]["text"])).json()["tokens"]
    stop_id = tokens[3]
    cut = (
        await post(
            client, "/v1/completions", prompt="Q", seed=8, max_tokens=30, stop_token_ids=[stop_id]
        )
    ).json()
    choice = cut["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", stop_id)
    assert cut["usage"]["completion_tokens"] == tokens.index(stop_id) + 1
