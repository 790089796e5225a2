"""The OpenAI layer: chat and completions, their chunks, usage and flat error bodies."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
from jsonschema import validate

from switchyard.enginesim.sglang.flags import parse
from switchyard.enginesim.sglang.routes import create_app
from tests.enginesim.sglang.conftest import FAST, MODEL, asgi, events

MESSAGES = [{"role": "user", "content": "Describe a switchyard."}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "tracks": {"type": "integer"}},
    "required": ["city", "tracks"],
}


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **body}
    )


async def test_a_chat_completion(client: httpx.AsyncClient) -> None:
    body = (await chat(client, max_tokens=5, rid="c-1")).json()
    assert body["id"] == "c-1"  # SGLang uses the rid as the completion's id
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["message"]["reasoning_content"] is None
    assert choice["finish_reason"] == "length"
    assert choice["matched_stop"] is None
    usage = body["usage"]
    assert usage["completion_tokens"] == 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5
    assert body["metadata"] == {"weight_version": "default"}


async def test_a_chat_stream(client: httpx.AsyncClient) -> None:
    response = await chat(
        client,
        max_completion_tokens=6,
        seed=4,
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True},
    )
    chunks = events(response.text)
    first, *content, finish, usage = chunks
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert first["choices"][0]["delta"] == {
        "reasoning_content": None,
        "role": "assistant",
        "content": "",
    }
    assert [c["usage"]["completion_tokens"] for c in content] == list(range(1, 7))
    assert all(set(c["choices"][0]["delta"]) == {"reasoning_content", "content"} for c in content)
    assert finish["choices"][0]["delta"] == {"reasoning_content": None}
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 6
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    whole = (await chat(client, max_completion_tokens=6, seed=4)).json()
    assert text == whole["choices"][0]["message"]["content"]


async def test_continuous_usage_does_not_need_include_usage(client: httpx.AsyncClient) -> None:
    response = await chat(
        client, max_tokens=3, stream=True, stream_options={"continuous_usage_stats": True}
    )
    chunks = events(response.text)
    assert [c["usage"]["completion_tokens"] for c in chunks if "usage" in c] == [1, 2, 3]
    assert chunks[-1]["choices"], "no usage chunk without include_usage"


async def test_the_eos_token_shows_only_in_the_final_usage(client: httpx.AsyncClient) -> None:
    response = await chat(
        client, max_tokens=400, seed=3, stream=True, stream_options={"include_usage": True}
    )
    *rest, finish, usage = events(response.text)
    content = [c for c in rest if c["choices"][0]["delta"].get("content")]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["matched_stop"] == 2
    assert usage["usage"]["completion_tokens"] == len(content) + 1


async def test_response_format_json_schema_and_json_object(client: httpx.AsyncClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}
    body = (await chat(client, response_format=fmt, max_tokens=200)).json()
    validate(orjson.loads(body["choices"][0]["message"]["content"]), SCHEMA)
    body = (await chat(client, response_format={"type": "json_object"}, max_tokens=200)).json()
    assert isinstance(orjson.loads(body["choices"][0]["message"]["content"]), dict)


async def test_regex_and_ebnf_extras(client: httpx.AsyncClient) -> None:
    body = (await chat(client, regex=r"(red|green|blue)", seed=2)).json()
    assert body["choices"][0]["message"]["content"] in ("red", "green", "blue")
    body = (await chat(client, ebnf='root ::= "go" | "stop"')).json()
    assert re.fullmatch("go|stop", body["choices"][0]["message"]["content"])


async def test_a_completion_and_its_stream(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "prompt": "Once", "max_tokens": 4, "seed": 9, "echo": True}
    body = (await client.post("/v1/completions", json=request)).json()
    assert body["object"] == "text_completion"
    (choice,) = body["choices"]
    assert choice["text"].startswith("Once")
    assert choice["finish_reason"] == "length"
    stream = {**request, "stream": True, "stream_options": {"include_usage": True}}
    chunks = events((await client.post("/v1/completions", json=stream)).text)
    *parts, usage = chunks
    assert all(c["usage"] is None for c in parts)
    assert "".join(c["choices"][0]["text"] for c in parts) == choice["text"]
    assert parts[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["usage"] == {
        "prompt_tokens": body["usage"]["prompt_tokens"],
        "total_tokens": body["usage"]["total_tokens"],
        "completion_tokens": 4,
        "reasoning_tokens": 0,
    }


async def test_validation_errors_are_flat_400s_not_422s(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json={"model": MODEL})
    assert response.status_code == 400
    body = response.json()
    assert (body["object"], body["type"], body["code"], body["param"]) == (
        "error",
        "Bad Request",
        400,
        None,
    )
    assert "'messages'" in body["message"]
    response = await client.post(
        "/v1/chat/completions",
        content=orjson.dumps({"messages": MESSAGES}),
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 400
    assert "Only 'application/json' is allowed" in response.json()["message"]
    response = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 0})
    assert response.status_code == 400
    assert "max_tokens must be positive" in response.json()["message"]


async def test_engine_refusals_are_bad_request_errors(client: httpx.AsyncClient) -> None:
    response = await chat(client, messages=[{"role": "user", "content": "word " * 1100}])
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "BadRequestError"
    assert "is longer than the model's context length (1024 tokens)" in body["message"]
    # Streamed, the refusal still comes before the stream starts.
    response = await chat(
        client, messages=[{"role": "user", "content": "word " * 1100}], stream=True
    )
    assert response.status_code == 400
    response = await chat(client, max_tokens=5000)
    assert response.json()["message"] == (
        "max_completion_tokens is too large: 5000.This model supports at most 1024 completion tokens."
    )
    response = await chat(client, messages=[])
    assert response.json()["message"] == "Messages cannot be empty."


async def test_max_completion_tokens_is_checked_only_with_a_context_length_flag() -> None:
    # Without --context-length the chat route skips its own check; the engine's remains.
    app = create_app(parse(["--model-path", "org/sim-model", *FAST]))
    async with asgi(app) as client:
        response = await chat(client, max_tokens=9000)
    assert response.status_code == 400
    assert response.json()["message"].startswith("Requested token count exceeds")


async def test_models_show_the_context_length(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert (card["id"], card["owned_by"], card["max_model_len"]) == (MODEL, "sglang", 1024)
    assert (await client.get(f"/v1/models/{MODEL}")).json()["max_model_len"] == 1024
    missing = await client.get("/v1/models/other")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_tokenize_and_detokenize(client: httpx.AsyncClient) -> None:
    for path in ("/v1/tokenize", "/tokenize"):
        body = (await client.post(path, json={"prompt": "hello switchyard"})).json()
        assert body["count"] == len(body["tokens"])
        assert body["max_model_len"] == 1024
    text = (await client.post("/v1/detokenize", json={"tokens": body["tokens"]})).json()
    assert text == {"text": "hello switchyard"}
    chat_tokens = (await client.post("/v1/tokenize", json={"messages": MESSAGES})).json()
    assert chat_tokens["count"] > body["count"]
    both = await client.post("/v1/tokenize", json={"prompt": "a", "messages": MESSAGES})
    assert both.status_code == 400
    assert "Exactly one of 'prompt' or 'messages' must be provided." in both.json()["message"]
