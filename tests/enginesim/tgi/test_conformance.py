"""Every body and stream event the simulator sends validates against TGI's own OpenAPI schemas."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from switchyard.enginesim.tgi.flags import parse
from tests.enginesim.tgi.conftest import MODEL, asgi_client, make_app, sse_data, sse_json
from tests.enginesim.tgi.openapi import check

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "rooms": {"type": "integer", "minimum": 1}},
    "required": ["city", "rooms"],
}


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(path, json=body)


async def test_info(client: httpx.AsyncClient) -> None:
    info = (await client.get("/info")).json()
    check("Info", info)
    assert info["model_id"] == MODEL
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (200, 256)
    assert info["max_concurrent_requests"] == 8
    assert info["max_stop_sequences"] == 4


async def test_health_routes_answer_200_with_an_empty_body(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/ping", "/"):
        response = await client.get(path)
        assert (response.status_code, response.content) == (200, b"")


async def test_models_lists_the_model(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    # The spec says `ModelInfo`; the router answers a list of them (`ModelsInfo`).
    assert body["object"] == "list"
    assert len(body["data"]) == 1
    check("ModelInfo", body["data"][0])
    assert body["data"][0]["id"] == MODEL


@pytest.mark.parametrize(
    "parameters",
    [
        {"max_new_tokens": 12},
        {"max_new_tokens": 12, "details": True, "seed": 4, "do_sample": True},
        {"max_new_tokens": 8, "decoder_input_details": True, "top_n_tokens": 3, "details": True},
        {"max_new_tokens": 8, "best_of": 2, "do_sample": True, "details": True},
        {"max_new_tokens": 64, "grammar": {"type": "json", "value": SCHEMA}, "details": True},
    ],
)
async def test_generate(client: httpx.AsyncClient, parameters: dict[str, Any]) -> None:
    response = await _post(client, "/generate", {"inputs": "Hello", "parameters": parameters})
    assert response.status_code == 200, response.text
    body = response.json()
    check("GenerateResponse", body)
    assert ("details" in body) == bool(parameters.get("details"))
    if parameters.get("best_of"):
        assert len(body["details"]["best_of_sequences"]) == 1
    if parameters.get("top_n_tokens"):
        assert all(len(t) == 3 for t in body["details"]["top_tokens"])
    if parameters.get("details") or parameters.get("decoder_input_details"):
        # Asked for or not, a flash model computes no prompt logprobs by default.
        assert body["details"]["prefill"] == []
    if parameters.get("details"):
        assert int(response.headers["x-generated-tokens"]) == len(body["details"]["tokens"])
    assert response.headers["x-prompt-tokens"] == "1"


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_prefill_only_with_enable_prefill_logprobs(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "env":
        monkeypatch.setenv("ENABLE_PREFILL_LOGPROBS", "true")
    app = make_app("--enable-prefill-logprobs") if how == "flag" else make_app()
    async with asgi_client(app) as client:
        asked = {"max_new_tokens": 4, "decoder_input_details": True}
        body = (await _post(client, "/generate", {"inputs": "Hello", "parameters": asked})).json()
        prefill = body["details"]["prefill"]
        assert [t["text"] for t in prefill] == ["Hello"]
        assert prefill[0]["logprob"] is None
        # Not asked for: still empty.
        plain = {"inputs": "Hello", "parameters": {"max_new_tokens": 4, "details": True}}
        assert (await _post(client, "/generate", plain)).json()["details"]["prefill"] == []


def test_prefill_logprobs_env_spellings_of_false(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("false", "0", "off", ""):
        monkeypatch.setenv("ENABLE_PREFILL_LOGPROBS", value)
        assert not parse(["--model-id", MODEL]).enable_prefill_logprobs


async def test_compat_route_answers_a_list_with_the_prompt(client: httpx.AsyncClient) -> None:
    response = await _post(client, "/", {"inputs": "Hello", "parameters": {"max_new_tokens": 5}})
    body = response.json()
    assert isinstance(body, list)
    assert len(body) == 1
    check("GenerateResponse", body[0])
    # The pipeline is text-generation: the compat route returns the full text by default.
    assert body[0]["generated_text"].startswith("Hello")


@pytest.mark.parametrize("details", [True, False])
async def test_generate_stream_events(client: httpx.AsyncClient, details: bool) -> None:
    body = {
        "inputs": "Hello",
        "parameters": {"max_new_tokens": 10, "details": details, "top_n_tokens": 2},
    }
    response = await _post(client, "/generate_stream", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_json(response.text)
    assert "[DONE]" not in sse_data(response.text)
    for event in events:
        check("StreamResponse", event)
    *tokens, last = events
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["generated_text"] is None and e["details"] is None for e in tokens)
    assert last["generated_text"] == "".join(
        e["token"]["text"] for e in events if not e["token"]["special"]
    )
    if details:
        assert last["details"]["generated_tokens"] == len(events)
        assert last["details"]["input_length"] == 1
    else:
        assert last["details"] is None


async def test_tokenize(client: httpx.AsyncClient) -> None:
    tokens = (await _post(client, "/tokenize", {"inputs": "Hello world!"})).json()
    check("TokenizeResponse", tokens)
    assert "".join(t["text"] for t in tokens) == "Hello world!"
    assert [(t["start"], t["stop"]) for t in tokens] == [(0, 5), (5, 11), (11, 12)]


async def test_chat_tokenize(client: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    out = (await _post(client, "/chat_tokenize", body)).json()
    check("ChatTokenizeResponse", out)
    assert "".join(t["text"] for t in out["tokenize_response"]) == out["templated_text"]


async def test_chat_completion(client: httpx.AsyncClient) -> None:
    body = {
        "model": "tgi",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 10,
        "logprobs": True,
        "top_logprobs": 2,
    }
    out = (await _post(client, "/v1/chat/completions", body)).json()
    check("ChatCompletion", out)
    assert out["object"] == "chat.completion"
    assert out["id"] == ""
    assert out["system_fingerprint"].endswith("-native")
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert len(out["choices"][0]["logprobs"]["content"]) == out["usage"]["completion_tokens"]


async def test_chat_completion_chunks(client: httpx.AsyncClient) -> None:
    body = {
        "model": "tgi",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
    }
    response = await _post(client, "/v1/chat/completions", body)
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    *chunks, usage = sse_json(response.text)
    for chunk in [*chunks, usage]:
        check("ChatCompletionChunk", chunk)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    assert all(c["usage"] is None for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # EOS, named as OpenAI does
    assert chunks[-1]["choices"][0]["delta"]["content"] == ""  # EOS is special: no text
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == len(chunks)


async def test_completions(client: httpx.AsyncClient) -> None:
    body = {"prompt": ["Hi", "Hello"], "max_tokens": 6, "seed": 1}
    out = (await _post(client, "/v1/completions", body)).json()
    # Not `Completion`: its oneOf cannot tell a final from a chunk (both are "text_completion").
    check("CompletionFinal", out)
    assert [c["index"] for c in out["choices"]] == [0, 1]


async def test_completions_stream(client: httpx.AsyncClient) -> None:
    body = {"prompt": "Hi", "max_tokens": 6, "stream": True, "temperature": 0}
    response = await _post(client, "/v1/completions", body)
    assert sse_data(response.text)[-1] == "[DONE]"
    *chunks, last = sse_json(response.text)
    for chunk in chunks:
        check("Chunk", chunk)
        assert chunk["choices"][0]["finish_reason"] == ""
    check("CompletionFinal", last)
    assert last["choices"][0]["finish_reason"] in ("length", "eos_token")  # native names here


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"inputs": "Hi", "parameters": {"temperature": 0}}),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "Hi"}]}),
        ("/v1/completions", {"prompt": "Hi", "suffix": "!"}),
    ],
)
async def test_error_bodies(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await _post(client, path, body)
    assert response.status_code == 422
    check("ErrorResponse", response.json())


async def test_metrics_route_is_text(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")


_COUNTS = ("x-prompt-tokens", "x-generated-tokens")
_TIMINGS = ("x-total-time", "x-validation-time", "x-queue-time", "x-inference-time")
_CHAT = {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 6}


async def test_unary_answers_carry_the_token_counts(client: httpx.AsyncClient) -> None:
    native = {"inputs": "Hello world", "parameters": {"max_new_tokens": 5, "details": True}}
    for path in ("/generate", "/"):
        response = await _post(client, path, native)
        details = (response.json()[0] if path == "/" else response.json())["details"]
        assert response.headers["x-prompt-tokens"] == "2", path
        assert response.headers["x-generated-tokens"] == str(details["generated_tokens"])
        assert all(name in response.headers for name in (*_TIMINGS, "x-compute-time"))
    response = await _post(client, "/v1/chat/completions", _CHAT)
    usage = response.json()["usage"]
    assert int(response.headers["x-prompt-tokens"]) == usage["prompt_tokens"] > 0
    assert int(response.headers["x-generated-tokens"]) == usage["completion_tokens"]
    # Summed over the prompts, and without x-compute-time.
    response = await _post(client, "/v1/completions", {"prompt": ["Hi", "Hello world"]})
    usage = response.json()["usage"]
    assert int(response.headers["x-prompt-tokens"]) == usage["prompt_tokens"] == 3
    assert int(response.headers["x-generated-tokens"]) == usage["completion_tokens"]
    assert response.headers["x-compute-characters"] == "13"
    assert "x-compute-time" not in response.headers
    assert all(name in response.headers for name in _TIMINGS)


async def test_streams_carry_no_token_counts(client: httpx.AsyncClient) -> None:
    for path, body in (
        ("/generate_stream", {"inputs": "Hello world", "parameters": {"max_new_tokens": 3}}),
        ("/", {"inputs": "Hello world", "stream": True, "parameters": {"max_new_tokens": 3}}),
        ("/v1/chat/completions", {**_CHAT, "stream": True}),
        ("/v1/completions", {"prompt": "Hello world", "max_tokens": 3, "stream": True}),
    ):
        response = await _post(client, path, body)
        assert response.headers["x-accel-buffering"] == "no", path
        assert response.headers["x-compute-type"] == "gpu+optimized"
        assert not any(name in response.headers for name in (*_COUNTS, *_TIMINGS))


async def test_chat_reads_n_and_ignores_it(client: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "n": 3}
    out = (await _post(client, "/v1/chat/completions", body)).json()
    check("ChatCompletion", out)
    assert len(out["choices"]) == 1  # TGI has no `n`: one choice, no error
    bad = await _post(client, "/v1/chat/completions", {**body, "n": -1})
    assert bad.status_code == 422  # but it is read: a u32
