"""The SGLang translation: request bodies, stream parsing and errors, from literal SGLang payloads."""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from switchyard.adapter.translation import Delta, EngineRequest, StreamParser
from switchyard.adapter_sglang.translation import SglangTranslation
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request
from tests.support.engine_http import RecordingEngine

T = SglangTranslation("qwen")


def prompt_request(**sampling: Any) -> pb.GenerateRequest:
    return generate_request("qwen", prompt="Once upon", request_id="r-1", **sampling)


def chat_request(**sampling: Any) -> pb.GenerateRequest:
    return generate_request(
        "qwen",
        messages=[("system", "Be brief."), ("user", "Hi", "ann")],
        request_id="r-1",
        **sampling,
    )


def _meta(completion: int, finish: Any = None, rid: str = "r-1", prompt: int = 3) -> dict[str, Any]:
    return {
        "id": rid,
        "finish_reason": finish,
        "prompt_tokens": prompt,
        "weight_version": "default",
        "num_retractions": 0,
        "reasoning_tokens": 0,
        "completion_tokens": completion,
        "cached_tokens": 0,
    }


# Requests


def test_a_prompt_goes_to_generate_with_every_sampling_field() -> None:
    request = prompt_request(
        max_tokens=32, temperature=0.5, top_p=0.9, top_k=40, seed=7, presence_penalty=0.1,
        frequency_penalty=-0.2, repetition_penalty=1.1, stop=["\n\n", "END"], ignore_eos=True,
    )  # fmt: skip
    call = T.request(request, stream=True)
    assert call.path == "/generate"
    params = call.body.pop("sampling_params")
    assert _rid_of(call) == call.body.pop("rid")
    assert call.body == {"text": "Once upon", "stream": True}
    for name, value in (
        ("temperature", 0.5), ("top_p", 0.9), ("presence_penalty", 0.1),
        ("frequency_penalty", -0.2), ("repetition_penalty", 1.1),
    ):  # fmt: skip
        assert params.pop(name) == pytest.approx(value)
    assert params == {
        "max_new_tokens": 32,
        "top_k": 40,
        "sampling_seed": 7,
        "stop": ["\n\n", "END"],
        "ignore_eos": True,
    }


def test_unset_fields_are_left_to_sglang_but_max_tokens_runs_to_the_context() -> None:
    """Absent, /generate stops at 128 tokens; an explicit null runs to the context's end."""
    call = T.request(prompt_request(), stream=False)
    assert _rid_of(call) == call.body.pop("rid")
    assert call.body == {
        "text": "Once upon",
        "stream": False,
        "sampling_params": {"max_new_tokens": None},
    }
    chat = T.request(chat_request(), stream=False).body
    assert "max_completion_tokens" not in chat  # the chat route's absent already does
    assert "max_tokens" not in chat


def _rid_of(call: EngineRequest) -> str:
    """The call's rid: the request id with a suffix of its own, and the id its abort uses."""
    rid = call.body["rid"]
    assert rid.startswith("r-1-")
    assert len(rid) > len("r-1-")
    assert call.abort_id == rid
    return str(rid)


def test_every_call_has_its_own_rid() -> None:
    """SGLang refuses a rid in flight and aborts a finished stream's rid ~2 s later."""
    rids = {T.request(prompt_request(), stream=s).body["rid"] for s in (True, False, True)}
    rids |= {T.request(chat_request(), stream=s).body["rid"] for s in (True, False)}
    assert len(rids) == 5


def _with(request: pb.GenerateRequest, kind: str, value: Any = None) -> pb.GenerateRequest:
    so = request.structured_output
    if kind == "choice":
        so.choice.choices.extend(value)
    elif kind == "json_object":
        so.json_object.SetInParent()
    else:
        setattr(so, kind, value)
    return request


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("json_schema", '{"type": "object"}', {"json_schema": '{"type": "object"}'}),
        ("json_object", None, {"json_schema": '{"type": "object"}'}),
        ("regex", r"\d+", {"regex": r"\d+"}),
        ("choice", ["a.b", "c|d", "e"], {"regex": r"(a\.b|c\|d|e)"}),
    ],
)
def test_native_constraints(kind: str, value: Any, expected: dict[str, str]) -> None:
    call = T.request(_with(prompt_request(), kind, value), stream=False)
    assert call.body["sampling_params"] == {"max_new_tokens": None, **expected}


def test_a_chat_goes_to_chat_completions() -> None:
    request = chat_request(max_tokens=16, seed=3, temperature=0.0, top_k=5, stop=["."])
    call = T.request(request, stream=True)
    assert call.path == "/v1/chat/completions"
    assert _rid_of(call) == call.body.pop("rid")
    assert call.body == {
        "model": "qwen",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
        ],
        "stream": True,
        "max_completion_tokens": 16,
        "seed": 3,
        "temperature": 0.0,
        "top_k": 5,
        "stop": ["."],
        # Exact per-chunk token counts, and a final count for tokens without text.
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    assert "stream_options" not in T.request(request, stream=False).body


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (
            "json_schema",
            '{"type": "object", "properties": {"a": {"type": "integer"}}}',
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "output",
                        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                        "strict": True,
                    },
                }
            },
        ),
        ("json_object", None, {"response_format": {"type": "json_object"}}),
        ("regex", "[a-z]+", {"regex": "[a-z]+"}),
        ("choice", ["yes", "no"], {"regex": "(yes|no)"}),
    ],
)
def test_chat_constraints(kind: str, value: Any, expected: dict[str, Any]) -> None:
    body = T.request(_with(chat_request(), kind, value), stream=False).body
    assert {k: body[k] for k in expected} == expected


# Whole responses


def test_a_native_completion() -> None:
    body = {
        "text": "there was",
        "output_ids": [5, 6, 2],
        "meta_info": _meta(3, {"type": "stop", "matched": 2}),
    }
    completion = T.completion(prompt_request(), body)
    assert (completion.text, completion.finish_reason) == ("there was", pb.FINISH_REASON_STOP)
    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 3)
    body["meta_info"] = _meta(4, {"type": "length", "length": 4})
    assert T.completion(prompt_request(), body).finish_reason == pb.FINISH_REASON_LENGTH


def test_a_chat_completion() -> None:
    body = {
        "id": "r-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!", "reasoning_content": None},
                "logprobs": None,
                "finish_reason": "stop",
                "matched_stop": 2,
            }
        ],
        "usage": {"prompt_tokens": 9, "total_tokens": 12, "completion_tokens": 3},
    }
    completion = T.completion(chat_request(), body)
    assert (completion.text, completion.finish_reason) == ("Hello!", pb.FINISH_REASON_STOP)
    assert (completion.prompt_tokens, completion.completion_tokens) == (9, 3)


def test_an_aborted_whole_response_is_an_engine_error() -> None:
    abort = {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}
    with pytest.raises(InferenceError) as caught:
        T.completion(
            prompt_request(), {"text": "x", "output_ids": [1], "meta_info": _meta(1, abort)}
        )
    assert caught.value.code == grpc.StatusCode.INTERNAL


# Streams


def _feed(parser: StreamParser, events: list[dict[str, Any]]) -> list[Delta]:
    return [d for d in (parser.feed("message", e) for e in events) if d is not None]


def test_the_cumulative_native_stream_becomes_deltas() -> None:
    events = [
        {"text": "Once", "output_ids": [11], "meta_info": _meta(1)},
        {"text": "Once upon", "output_ids": [11, 12], "meta_info": _meta(2)},
        # A token that completes no character yet (a split multi-byte sequence): no text.
        {"text": "Once upon", "output_ids": [11, 12, 250], "meta_info": _meta(3)},
        {"text": "Once upon é", "output_ids": [11, 12, 250, 169], "meta_info": _meta(4)},
        # Coalesced: two tokens in one event.
        {"text": "Once upon é 🚀 a", "output_ids": [11, 12, 250, 169, 7, 8], "meta_info": _meta(6)},
        # The end of sequence: a token with no text, and the finish reason.
        {
            "text": "Once upon é 🚀 a",
            "output_ids": [11, 12, 250, 169, 7, 8, 2],
            "meta_info": {**_meta(7, {"type": "stop", "matched": 2}), "e2e_latency": 0.1},
        },
    ]
    deltas = _feed(T.stream_parser(prompt_request()), events)
    assert [d.text for d in deltas] == ["Once", " upon", "", " é", " 🚀 a", ""]
    assert [d.token_count for d in deltas] == [1, 1, 1, 1, 2, 1]
    assert sum(d.token_count for d in deltas) == 7
    assert [d.finish_reason for d in deltas][-1] == pb.FINISH_REASON_STOP
    assert all(d.finish_reason == pb.FINISH_REASON_UNSPECIFIED for d in deltas[:-1])
    assert deltas[-1].completion_tokens == 7
    assert deltas[-1].prompt_tokens == 3


def test_an_incremental_native_stream_is_read_too() -> None:
    events = [
        {"text": "Once", "output_ids": [11], "meta_info": _meta(1)},
        {"text": " upon", "output_ids": [12], "meta_info": _meta(2)},
        {"text": " a", "output_ids": [13], "meta_info": _meta(3, {"type": "length", "length": 3})},
    ]
    deltas = _feed(T.stream_parser(prompt_request()), events)
    assert "".join(d.text for d in deltas) == "Once upon a"
    assert sum(d.token_count for d in deltas) == 3
    assert deltas[-1].finish_reason == pb.FINISH_REASON_LENGTH


def test_a_cumulative_stream_that_loses_text_is_an_engine_error() -> None:
    parser = T.stream_parser(prompt_request())
    parser.feed("message", {"text": "Once upon", "output_ids": [1, 2], "meta_info": _meta(2)})
    with pytest.raises(InferenceError) as caught:
        parser.feed("message", {"text": "Twice", "output_ids": [1, 2, 3], "meta_info": _meta(3)})
    assert caught.value.code == grpc.StatusCode.INTERNAL


def test_a_full_queue_in_a_native_stream_is_overloaded() -> None:
    event = {
        "text": "",
        "output_ids": [],
        "meta_info": {
            "id": "r-1",
            "finish_reason": {
                "type": "abort",
                "status_code": 503,
                "message": "The request queue is full.",
            },
            "weight_version": "default",
            "e2e_latency": 0.001,
            "completion_tokens": 0,
        },
    }
    with pytest.raises(InferenceError) as caught:
        T.stream_parser(prompt_request()).feed("message", event)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == pb.ENGINE_OVERLOADED
    assert caught.value.message == "The request queue is full."


@pytest.mark.parametrize(
    ("finish", "code", "reason"),
    [
        (
            {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None},
            grpc.StatusCode.INTERNAL,
            pb.ENGINE_ERROR,
        ),
        (
            {
                "type": "abort",
                "message": "Failed to compile regex grammar: bad",
                "status_code": 400,
                "err_type": "BadRequestError",
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.INVALID_REQUEST,
        ),
        (
            {"type": "abort", "message": "Abort in waiting queue"},
            grpc.StatusCode.INTERNAL,
            pb.ENGINE_ERROR,
        ),
    ],
    ids=["abort_request", "grammar", "queued"],
)
def test_other_aborts(finish: dict[str, Any], code: grpc.StatusCode, reason: int) -> None:
    event = {"text": "", "output_ids": [], "meta_info": _meta(0, finish)}
    with pytest.raises(InferenceError) as caught:
        T.stream_parser(prompt_request()).feed("message", event)
    assert (caught.value.code, caught.value.reason) == (code, reason)


def test_an_error_event_in_a_native_stream() -> None:
    message = "The input (2048 tokens) is longer than the model's context length (1024 tokens)."
    event = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "code": 400,
            "retryable": False,
        }
    }
    with pytest.raises(InferenceError) as caught:
        T.stream_parser(prompt_request()).feed("message", event)
    assert caught.value.reason == pb.CONTEXT_LENGTH_EXCEEDED
    assert caught.value.message == message


def _chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish: str | None = None,
    usage: Any = None,
) -> dict[str, Any]:
    delta: dict[str, Any] = {"reasoning_content": None}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    chunk: dict[str, Any] = {
        "id": "r-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "qwen",
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish,
                "matched_stop": None,
            }
        ],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def _usage(completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": 9,
        "total_tokens": 9 + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
        "completion_tokens_details": None,
    }


def test_a_chat_stream_counts_tokens_from_continuous_usage() -> None:
    events = [
        _chunk("", role="assistant"),
        _chunk("Hel", usage=_usage(1)),
        _chunk("lo wor", usage=_usage(3)),  # two tokens in one chunk
        _chunk("ld", usage=_usage(4)),
        _chunk(finish="stop"),
        # The end-of-sequence token has no text: only the final usage counts it.
        {
            "id": "r-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "qwen",
            "choices": [],
            "usage": _usage(5),
        },
    ]
    deltas = _feed(T.stream_parser(chat_request()), events)
    assert "".join(d.text for d in deltas) == "Hello world"
    assert [d.token_count for d in deltas] == [1, 2, 1, 0, 1]
    assert sum(d.token_count for d in deltas) == 5
    assert deltas[3].finish_reason == pb.FINISH_REASON_STOP
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (9, 5)


def test_a_chat_stream_without_continuous_usage_is_corrected_at_the_end() -> None:
    events = [
        _chunk("", role="assistant"),
        _chunk("Hello"),
        _chunk(" world"),
        _chunk(finish="length"),
        {
            "id": "r-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "qwen",
            "choices": [],
            "usage": _usage(4),
        },
    ]
    deltas = _feed(T.stream_parser(chat_request()), events)
    assert sum(d.token_count for d in deltas) == 4
    assert deltas[2].finish_reason == pb.FINISH_REASON_LENGTH


def test_a_chat_stream_error_event() -> None:
    event = {
        "error": {
            "object": "error",
            "message": "The request queue is full.",
            "type": "SERVICE_UNAVAILABLE",
            "param": None,
            "code": 503,
        }
    }
    with pytest.raises(InferenceError) as caught:
        T.stream_parser(chat_request()).feed("message", event)
    assert caught.value.reason == pb.ENGINE_OVERLOADED


def test_an_aborted_chat_stream() -> None:
    with pytest.raises(InferenceError) as caught:
        T.stream_parser(chat_request()).feed("message", _chunk(finish="abort"))
    assert caught.value.code == grpc.StatusCode.INTERNAL


# Error bodies


@pytest.mark.parametrize(
    ("status", "body", "code", "reason", "message"),
    [
        (
            400,
            {
                "error": {
                    "message": "The input (2000 tokens) is longer than the model's context length (1024 tokens)."
                }
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.CONTEXT_LENGTH_EXCEEDED,
            "The input (2000 tokens) is longer than the model's context length (1024 tokens).",
        ),
        (
            400,
            {
                "object": "error",
                "message": "Requested token count exceeds the model's maximum context length of 1024 tokens. You requested a total of 1100 tokens: 100 tokens from the input messages and 1000 tokens for the completion.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.CONTEXT_LENGTH_EXCEEDED,
            "Requested token count exceeds",
        ),
        (
            400,
            {
                "object": "error",
                "message": "max_completion_tokens is too large: 5000.This model supports at most 1024 completion tokens.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.CONTEXT_LENGTH_EXCEEDED,
            "max_completion_tokens is too large",
        ),
        (
            400,
            {
                "error": {
                    "message": "Only one of json_schema, regex, ebnf, or structural_tag can be set."
                }
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.INVALID_REQUEST,
            "Only one of json_schema",
        ),
        (
            400,
            {"error": "unknown field `max_tokens`, expected one of `max_new_tokens`, `stop`"},
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.INVALID_REQUEST,
            "unknown field `max_tokens`",
        ),
        (
            400,
            {
                "object": "error",
                "message": "1 validation error: ...",
                "type": "Bad Request",
                "param": None,
                "code": 400,
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.INVALID_REQUEST,
            "1 validation error",
        ),
        (
            503,
            {
                "object": "error",
                "message": "The request queue is full.",
                "type": "503",
                "param": None,
                "code": 503,
            },
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            pb.ENGINE_OVERLOADED,
            "The request queue is full.",
        ),
        (404, {"detail": "Not Found"}, grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR, "Not Found"),
        (
            500,
            "Internal Server Error",
            grpc.StatusCode.INTERNAL,
            pb.ENGINE_ERROR,
            "Internal Server Error",
        ),
    ],
)
def test_error_bodies(
    status: int, body: Any, code: grpc.StatusCode, reason: int, message: str
) -> None:
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    error = T.error(status, raw)
    assert (error.code, error.reason) == (code, reason)
    assert message in error.message


# Engine info


async def test_max_model_len_comes_from_v1_models() -> None:
    cards = [
        {
            "id": "lora-a",
            "object": "model",
            "owned_by": "sglang",
            "root": "/a",
            "parent": "qwen",
            "max_model_len": None,
        },
        {
            "id": "qwen",
            "object": "model",
            "owned_by": "sglang",
            "root": "qwen",
            "parent": None,
            "max_model_len": 32768,
        },
    ]
    engine = RecordingEngine({("GET", "/v1/models"): {"object": "list", "data": cards}})
    assert await SglangTranslation("qwen").max_model_len(engine) == 32768
    assert ("GET", "/v1/models", None) in engine.calls


async def test_abort_posts_the_rid() -> None:
    engine = RecordingEngine()
    await T.abort(engine, "r-9")
    assert engine.calls == [("POST", "/abort_request", {"rid": "r-9"})]


def test_load_metrics_are_sglangs_gauges() -> None:
    assert T.engine == "sglang"
    assert T.health_path == "/ready"
    assert (T.load_metrics.running, T.load_metrics.waiting, T.load_metrics.kv_cache_usage) == (
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:token_usage",
    )
