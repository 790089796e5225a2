"""The vLLM translation: request bodies, stream parsing and errors, from literal vLLM payloads."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import orjson
import pytest

from switchyard.adapter.translation import Delta, EngineHTTPError
from switchyard.adapter_vllm.translation import VllmTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request
from tests.support.engine_http import RecordingEngine

CONTEXT = 8192


def models_page(context: int = CONTEXT) -> dict[str, Any]:
    return {"object": "list", "data": [
        {"id": "alias", "object": "model", "owned_by": "vllm", "max_model_len": 4096},
        {"id": "llama", "object": "model", "owned_by": "vllm", "max_model_len": context},
    ]}  # fmt: skip


def ready_translation(context: int = CONTEXT) -> VllmTranslation:
    """A translation that has read its engine's context length, as a ready adapter's has."""
    translation = VllmTranslation("llama")
    engine = RecordingEngine({("GET", "/v1/models"): models_page(context)})
    assert asyncio.run(translation.max_model_len(engine)) == context
    return translation


class RefusingEngine:
    """An engine whose info routes answer an error status (e.g. 401 from `--api-key`)."""

    def __init__(self, status: int) -> None:
        self.status = status

    async def get_json(self, path: str) -> Any:
        raise EngineHTTPError(f"GET {path}: HTTP {self.status}", self.status)

    async def post_json(self, path: str, body: Any) -> Any:
        raise EngineHTTPError(f"POST {path}: HTTP {self.status}", self.status)


T = ready_translation()


def prompt_request(**sampling: Any) -> pb.GenerateRequest:
    return generate_request("llama", prompt="Once upon", request_id="r-1", **sampling)


def chat_request(**sampling: Any) -> pb.GenerateRequest:
    return generate_request(
        "llama",
        messages=[("system", "Be brief."), ("user", "Hi", "ann")],
        request_id="r-1",
        **sampling,
    )


def test_prompt_request_maps_every_sampling_field() -> None:
    request = prompt_request(
        max_tokens=32, temperature=0.5, top_p=0.9, top_k=40, seed=7, presence_penalty=0.1,
        frequency_penalty=-0.2, repetition_penalty=1.1, stop=["\n\n", "END"], ignore_eos=True,
    )  # fmt: skip
    call = T.request(request, stream=False)
    assert call.path == "/v1/completions"
    body = call.body
    assert body.pop("temperature") == pytest.approx(0.5)
    assert body.pop("top_p") == pytest.approx(0.9)
    assert body.pop("presence_penalty") == pytest.approx(0.1)
    assert body.pop("frequency_penalty") == pytest.approx(-0.2)
    assert body.pop("repetition_penalty") == pytest.approx(1.1)
    assert body == {
        "model": "llama",
        "prompt": "Once upon",
        "max_tokens": 32,
        "top_k": 40,
        "seed": 7,
        "stop": ["\n\n", "END"],
        "ignore_eos": True,
        "request_id": "r-1",
        "stream": False,
    }


def test_unset_fields_are_left_to_the_engine_but_the_output_limit() -> None:
    # vLLM would stop a completion at 16 tokens (absent or null); the whole context is
    # what the policy means, and vLLM clamps it to what the prompt leaves.
    body = T.request(prompt_request(), stream=False).body
    assert body == {
        "model": "llama",
        "prompt": "Once upon",
        "max_tokens": CONTEXT,
        "request_id": "r-1",
        "stream": False,
    }
    # Chat's absent limit would fall back to the model's generation_config.json.
    chat = T.request(chat_request(), stream=True).body
    assert chat["max_completion_tokens"] == CONTEXT
    assert "max_tokens" not in chat


def test_without_a_known_context_an_unlimited_request_is_refused() -> None:
    fresh = VllmTranslation("llama")
    with pytest.raises(InferenceError) as caught:
        fresh.request(prompt_request(), stream=False)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        pb.ENGINE_UNAVAILABLE,
    )
    assert "context length is not known" in caught.value.message
    # A request that gives its own limit needs no context length.
    assert fresh.request(prompt_request(max_tokens=5), stream=False).body["max_tokens"] == 5


def test_chat_request_and_stream_options() -> None:
    call = T.request(chat_request(max_tokens=8), stream=True)
    assert call.path == "/v1/chat/completions"
    assert call.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "ann"},
    ]
    assert call.body["max_completion_tokens"] == 8
    assert "max_tokens" not in call.body
    assert call.body["stream"] is True
    assert call.body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("json_schema", '{"type": "object"}', {"json": {"type": "object"}}),
        ("json_object", None, {"json_object": True}),
        ("regex", r"\d+", {"regex": r"\d+"}),
        ("choice", ["yes", "no"], {"choice": ["yes", "no"]}),
    ],
)
def test_constraints_use_structured_outputs(field: str, value: Any, expected: Any) -> None:
    request = prompt_request()
    so = request.structured_output
    if field == "json_object":
        so.json_object.SetInParent()
    elif field == "choice":
        so.choice.choices.extend(value)
    else:
        setattr(so, field, value)
    body = T.request(request, stream=False).body
    assert body["structured_outputs"] == expected
    assert not any(key.startswith("guided_") for key in body)


def test_unary_completion_and_chat() -> None:
    completion = {
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "llama",
        "choices": [{"index": 0, "text": " a time", "logprobs": None, "finish_reason": "length",
                     "stop_reason": None}],
        "usage": {"prompt_tokens": 3, "total_tokens": 5, "completion_tokens": 2},
    }  # fmt: skip
    result = T.completion(prompt_request(), completion)
    assert (result.text, result.finish_reason) == (" a time", pb.FINISH_REASON_LENGTH)
    assert (result.prompt_tokens, result.completion_tokens) == (3, 2)
    chat = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                     "finish_reason": "stop", "stop_reason": None}],
        "usage": {"prompt_tokens": 9, "total_tokens": 12, "completion_tokens": 3},
    }  # fmt: skip
    result = T.completion(chat_request(), chat)
    assert (result.text, result.finish_reason, result.completion_tokens) == (
        "Hello.",
        pb.FINISH_REASON_STOP,
        3,
    )
    with pytest.raises(InferenceError) as caught:
        T.completion(prompt_request(), {"object": "error"})
    assert caught.value.code == grpc.StatusCode.INTERNAL


CHAT_STREAM = [
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":9,"completion_tokens":0,"completion_tokens_details":null},"prompt_token_ids":null,"prompt_text":null}',
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null,"token_ids":null}],"usage":{"prompt_tokens":9,"total_tokens":10,"completion_tokens":1,"completion_tokens_details":null},"kv_transfer_params":null}',
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"content":"lo."},"logprobs":null,"finish_reason":null,"token_ids":null}],"usage":{"prompt_tokens":9,"total_tokens":11,"completion_tokens":2,"completion_tokens_details":null},"kv_transfer_params":null}',
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null,"weight_versions":null}],"usage":{"prompt_tokens":9,"total_tokens":12,"completion_tokens":3,"completion_tokens_details":null},"kv_transfer_params":null}',
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama","choices":[],"usage":{"prompt_tokens":9,"total_tokens":12,"completion_tokens":3},"system_fingerprint":"vllm-0.33.0-1a2b3c4d"}',
]


def _feed(request: pb.GenerateRequest, payloads: list[bytes]) -> list[Delta | None]:
    parser = T.stream_parser(request)
    return [parser.feed("message", orjson.loads(p)) for p in payloads]


def test_chat_stream_counts_tokens_from_cumulative_usage() -> None:
    deltas = [d for d in _feed(chat_request(), CHAT_STREAM) if d is not None]
    assert "".join(d.text for d in deltas) == "Hello."
    assert [d.token_count for d in deltas] == [0, 1, 1, 1, 0]
    assert sum(d.token_count for d in deltas) == 3
    assert deltas[3].finish_reason == pb.FINISH_REASON_STOP
    assert all(d.finish_reason == pb.FINISH_REASON_UNSPECIFIED for d in deltas[:3])
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (9, 3)


def test_completion_stream_with_usage_only_at_the_end() -> None:
    payloads = [
        b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"llama","choices":[{"index":0,"text":" a","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null,"weight_versions":null}],"kv_transfer_params":null}',
        b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"llama","choices":[{"index":0,"text":" time","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null,"weight_versions":null}],"kv_transfer_params":null}',
        b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"llama","choices":[],"usage":{"prompt_tokens":3,"total_tokens":6,"completion_tokens":3}}',
    ]
    deltas = [d for d in _feed(prompt_request(), payloads) if d is not None]
    assert [d.text for d in deltas] == [" a", " time", ""]
    assert deltas[1].finish_reason == pb.FINISH_REASON_LENGTH
    # One per text chunk until the usage chunk settles the rest (here, 1 more).
    assert [d.token_count for d in deltas] == [1, 1, 1]
    assert deltas[2].completion_tokens == 3


def test_error_event_mid_stream() -> None:
    parser = T.stream_parser(prompt_request())
    event = orjson.loads(
        b'{"error": {"message": "Failed to transform regex into a grammar: bad", '
        b'"type": "BadRequestError", "param": null, "code": 400}}'
    )
    with pytest.raises(InferenceError) as caught:
        parser.feed("message", event)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == pb.INVALID_REQUEST
    assert "regex" in caught.value.message
    internal = {"error": {"message": "Internal server error", "type": "InternalServerError",
                          "param": None, "code": 500}}  # fmt: skip
    with pytest.raises(InferenceError) as caught:
        T.stream_parser(prompt_request()).feed("message", internal)
    assert caught.value.code == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("reason", ["abort", "error"])
def test_abort_and_error_finish_reasons_are_errors(reason: str) -> None:
    chunk = {"choices": [{"index": 0, "text": "", "finish_reason": reason}]}
    with pytest.raises(InferenceError) as caught:
        T.stream_parser(prompt_request()).feed("message", chunk)
    expected = grpc.StatusCode.UNAVAILABLE if reason == "abort" else grpc.StatusCode.INTERNAL
    assert caught.value.code == expected


def _error(status: int, body: dict[str, Any] | bytes) -> InferenceError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return T.error(status, raw)


def test_context_overflow_errors() -> None:
    tokens = _error(400, {"error": {
        "message": "This model's maximum context length is 1024 tokens. However, your prompt "
        "contains at least 1025 input tokens, which exceeds this limit even without any output "
        "tokens. Please reduce the length of the input prompt. (parameter=input_tokens, "
        "value=1025)",
        "type": "BadRequestError", "param": "input_tokens", "code": 400}})  # fmt: skip
    assert (tokens.code, tokens.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.CONTEXT_LENGTH_EXCEEDED,
    )
    chars = _error(400, {"error": {
        "message": "This model's maximum context length is 1024 tokens. However, your prompt "
        "contains 22528 characters (more than 12288 characters, which is the upper bound for "
        "1024 input tokens). Please reduce the length of the input prompt. (parameter="
        "input_text, value=22528)", "type": "BadRequestError", "param": "input_text",
        "code": 400}})  # fmt: skip
    assert chars.reason == pb.CONTEXT_LENGTH_EXCEEDED


def test_other_errors() -> None:
    bad = _error(400, {"error": {
        "message": "temperature must be in [0, 2], got 3.0. (parameter=temperature, value=3.0)",
        "type": "BadRequestError", "param": "temperature", "code": 400}})  # fmt: skip
    assert (bad.code, bad.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST)
    assert bad.metadata == {"param": "temperature"}
    pydantic = _error(400, {"error": {
        "message": "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.0'}",
        "type": "Bad Request", "param": "body.0", "code": 400}})  # fmt: skip
    assert pydantic.reason == pb.INVALID_REQUEST
    missing = _error(404, {"error": {
        "message": "The model `llama` does not exist. Valid aliases: other.",
        "type": "NotFoundError", "param": "model", "code": 404}})  # fmt: skip
    assert (missing.code, missing.reason) == (grpc.StatusCode.NOT_FOUND, pb.MODEL_NOT_FOUND)
    busy = _error(503, {"error": {
        "message": "The engine is currently busy and cannot accept new requests. Please try "
        "again later or on a different instance.", "type": "Service Unavailable",
        "param": None, "code": 503}})  # fmt: skip
    assert (busy.code, busy.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, pb.ENGINE_OVERLOADED)
    dead = _error(500, {"error": {
        "message": "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        "type": "InternalServerError", "param": None, "code": 500}})  # fmt: skip
    assert (dead.code, dead.reason) == (grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR)
    assert _error(502, b"<html>bad gateway</html>").code == grpc.StatusCode.UNAVAILABLE
    unauthorized = _error(401, {"error": "Unauthorized"})
    assert unauthorized.code == grpc.StatusCode.INTERNAL
    assert "Unauthorized" in unauthorized.message
    assert _error(429, b"").reason == pb.ENGINE_OVERLOADED


async def test_max_model_len_from_the_models_route() -> None:
    engine = RecordingEngine({("GET", "/v1/models"): models_page(2048)})
    translation = VllmTranslation("llama")
    assert await translation.max_model_len(engine) == 2048
    assert translation.request(prompt_request(), stream=False).body["max_tokens"] == 2048
    with pytest.raises(LookupError, match="not 'other'"):
        await VllmTranslation("other").max_model_len(engine)


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_named_as_the_cause(status: int) -> None:
    translation = VllmTranslation("llama")
    with pytest.raises(EngineHTTPError) as caught:
        await translation.max_model_len(RefusingEngine(status))
    assert caught.value.status == status
    assert f"refused the adapter's credentials on GET /v1/models (HTTP {status})" in str(
        caught.value
    )
    assert "ADAPTER_ENGINE_API_KEY" in str(caught.value)
    # A request that needs the context length says why it is unknown.
    with pytest.raises(InferenceError) as refused:
        translation.request(prompt_request(), stream=False)
    assert "ADAPTER_ENGINE_API_KEY" in refused.value.message


async def test_other_info_failures_pass_through() -> None:
    with pytest.raises(EngineHTTPError, match=r"^GET /v1/models: HTTP 500$"):
        await VllmTranslation("llama").max_model_len(RefusingEngine(500))


def test_load_metrics_names() -> None:
    metrics = T.load_metrics
    assert (metrics.running, metrics.waiting, metrics.kv_cache_usage) == (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    )


# Tools, n, logprobs, images and reasoning (shapes from vLLM 0.33.0's chat_completion and
# completion protocol and serving modules)


def test_chat_features_travel_in_openai_s_fields() -> None:
    request = chat_request(max_tokens=8)
    request.tools.add(name="weather", parameters='{"type": "object"}')
    request.tool_choice.mode = pb.TOOL_CHOICE_MODE_REQUIRED
    request.parallel_tool_calls = False
    request.n = 2
    request.logprobs.top_logprobs = 3
    body = T.request(request, stream=False).body
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("required", False)
    assert (body["n"], body["logprobs"], body["top_logprobs"]) == (2, True, 3)


def test_completions_logprobs_are_a_count_and_one_choice_sends_no_n() -> None:
    request = prompt_request(max_tokens=8)
    request.logprobs.top_logprobs = 2
    body = T.request(request, stream=True).body
    assert body["logprobs"] == 2
    assert "n" not in body
    assert "top_logprobs" not in body
    assert "logprobs" not in T.request(prompt_request(max_tokens=8), stream=True).body


def test_a_chat_completion_with_tool_calls_reasoning_and_two_choices() -> None:
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "llama",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": None, "reasoning": "Oslo.",
                                     "tool_calls": [{"id": "chatcmpl-tool-9f", "type": "function",
                                                     "function": {"name": "weather",
                                                                  "arguments": '{"city": "Oslo"}'}}]},
             "logprobs": None, "finish_reason": "tool_calls", "stop_reason": None},
            {"index": 1, "message": {"role": "assistant", "content": "Sunny.", "reasoning": None},
             "logprobs": None, "finish_reason": "stop", "stop_reason": None},
        ],
        "usage": {"prompt_tokens": 20, "total_tokens": 32, "completion_tokens": 12},
    }  # fmt: skip
    result = T.completion(chat_request(), body)
    first, second = result.choices
    assert first.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
        ("chatcmpl-tool-9f", "weather", '{"city": "Oslo"}')
    ]
    assert (first.reasoning, first.text) == ("Oslo.", "")
    assert (second.index, second.text, second.finish_reason) == (1, "Sunny.", pb.FINISH_REASON_STOP)
    assert (result.prompt_tokens, result.completion_tokens) == (20, 12)


def test_a_completion_s_legacy_logprobs() -> None:
    request = prompt_request(max_tokens=1)
    request.logprobs.top_logprobs = 1
    body = {
        "choices": [{"index": 0, "text": " a", "finish_reason": "length", "logprobs": {
            "text_offset": [9], "token_logprobs": [-0.1], "tokens": [" a"],
            "top_logprobs": [{" a": -0.1, " the": -2.5}]}}],
        "usage": {"prompt_tokens": 3, "total_tokens": 4, "completion_tokens": 1},
    }  # fmt: skip
    (logprob,) = T.completion(request, body).choices[0].logprobs
    assert logprob.token == " a"
    assert logprob.logprob == pytest.approx(-0.1)
    (top,) = logprob.top_logprobs  # the most likely one, as asked
    assert top.token == " a"
    assert top.logprob == pytest.approx(-0.1)


def test_a_chat_stream_of_reasoning_then_a_tool_call() -> None:
    request = chat_request()
    request.logprobs.SetInParent()
    payloads = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 0}},
        {"choices": [{"index": 0, "delta": {"reasoning": "Think."},
                      "logprobs": {"content": [{"token": "Think", "logprob": -0.5, "bytes": [84, 104, 105, 110, 107], "top_logprobs": []}]}}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 1}},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "chatcmpl-tool-1", "type": "function", "index": 0,
             "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]}}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 6}},
        {"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "tool_calls"}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 7}},
    ]  # fmt: skip
    parser = T.stream_parser(request)
    deltas = [d for d in (parser.feed("message", p) for p in payloads) if d is not None]
    assert [d.reasoning for d in deltas] == ["", "Think.", "", ""]
    assert [d.token_count for d in deltas] == [0, 1, 5, 1]
    assert [t.token for t in deltas[1].logprobs] == ["Think"]
    (call,) = deltas[2].tool_calls
    assert (call.index, call.id, call.name, call.arguments_delta) == (
        0, "chatcmpl-tool-1", "weather", '{"city": "Oslo"}',
    )  # fmt: skip
    assert deltas[3].finish_reason == pb.FINISH_REASON_TOOL_CALLS


@pytest.mark.parametrize(
    "message",
    [
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        'tool_choice="required" requires --tool-call-parser to be set',
        'tool_choice=function "weather" requires --tool-call-parser to be set',
        "demo is not a multimodal model",
    ],
)
def test_features_the_engine_was_not_started_for_are_unsupported(message: str) -> None:
    error = _error(400, {"error": {"message": message, "type": "BadRequestError",
                                   "param": None, "code": 400}})  # fmt: skip
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)
    assert error.message == message


def test_logprobs_above_the_engine_s_limit_are_invalid() -> None:
    error = _error(400, {"error": {
        "message": "Requested sample logprobs of 25, which is greater than max allowed: 20 "
        "(parameter=logprobs, value=25)",
        "type": "BadRequestError", "param": "logprobs", "code": 400}})  # fmt: skip
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST)
    assert error.metadata["param"] == "logprobs"
