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
from tests.support.request_matrix import with_tools

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


# Tools, n, logprobs, images and reasoning (shapes from SGLang 0.5.23's
# entrypoints/openai/protocol.py and serving_chat.py, and the native meta_info)


def test_chat_features_travel_in_openai_s_fields() -> None:
    request = chat_request()
    request.tools.add(name="weather", parameters='{"type": "object"}')
    request.tool_choice.function = "weather"
    request.n = 2
    request.logprobs.top_logprobs = 4
    body = T.request(request, stream=True).body
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert "parallel_tool_calls" not in body  # unset: SGLang's default
    assert (body["n"], body["logprobs"], body["top_logprobs"]) == (2, True, 4)


def test_native_n_and_logprobs() -> None:
    request = prompt_request()
    request.n = 3
    request.logprobs.top_logprobs = 2
    body = T.request(request, stream=False).body
    assert body["sampling_params"]["n"] == 3
    assert (body["return_logprob"], body["top_logprobs_num"]) == (True, 2)
    assert body["return_text_in_logprobs"] is True
    plain = T.request(prompt_request(), stream=False).body
    assert "return_logprob" not in plain
    assert "n" not in plain["sampling_params"]


def _logprobs_meta(*tokens: tuple[float, int, str]) -> dict[str, Any]:
    return {
        "output_token_logprobs": [list(t) for t in tokens],
        "output_top_logprobs": [[list(t), [-9.0, 99, "zz"], [-3.0, 98, "y"]] for t in tokens],
    }


def test_a_native_completion_of_several_choices_with_logprobs() -> None:
    request = prompt_request()
    request.n = 2
    request.logprobs.top_logprobs = 2
    body = [
        {"text": " a", "output_ids": [5], "index": 0,
         "meta_info": {**_meta(1, {"type": "length", "length": 1}), **_logprobs_meta((-0.5, 5, " a"))}},
        {"text": " b", "output_ids": [6], "index": 1,
         "meta_info": {**_meta(1, {"type": "stop", "matched": 2}), **_logprobs_meta((-1.5, 6, " b"))}},
    ]  # fmt: skip
    completion = T.completion(request, body)
    assert [(c.index, c.text, c.finish_reason) for c in completion.choices] == [
        (0, " a", pb.FINISH_REASON_LENGTH),
        (1, " b", pb.FINISH_REASON_STOP),
    ]
    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 2)
    (logprob,) = completion.choices[0].logprobs
    assert (logprob.token, logprob.logprob, logprob.bytes) == (" a", -0.5, b" a")
    # The most likely alternatives first, as many as asked.
    assert [(a.token, a.logprob) for a in logprob.top_logprobs] == [(" a", -0.5), ("y", -3.0)]


def test_a_native_stream_of_two_choices_reads_each_one_s_cumulative_text() -> None:
    request = prompt_request()
    request.n = 2
    request.logprobs.SetInParent()
    events = [
        {"index": 0, "text": "A", "output_ids": [1],
         "meta_info": {**_meta(1), **_logprobs_meta((-0.1, 1, "A"))}},
        {"index": 1, "text": "B", "output_ids": [2],
         "meta_info": {**_meta(1), **_logprobs_meta((-0.2, 2, "B"))}},
        {"index": 1, "text": "Bb", "output_ids": [2, 3],
         "meta_info": {**_meta(2, {"type": "length", "length": 2}),
                       **_logprobs_meta((-0.2, 2, "B"), (-0.3, 3, "b"))}},
        {"index": 0, "text": "Aa", "output_ids": [1, 4],
         "meta_info": {**_meta(2, {"type": "stop", "matched": 2}),
                       **_logprobs_meta((-0.1, 1, "A"), (-0.4, 4, "a"))}},
    ]  # fmt: skip
    deltas = _feed(T.stream_parser(request), events)
    assert [(d.index, d.text, d.token_count) for d in deltas] == [
        (0, "A", 1), (1, "B", 1), (1, "b", 1), (0, "a", 1),
    ]  # fmt: skip
    assert [d.completion_tokens for d in deltas] == [1, 2, 3, 4]
    assert [[t.token for t in d.logprobs] for d in deltas] == [["A"], ["B"], ["b"], ["a"]]
    assert all(not t.top_logprobs for d in deltas for t in d.logprobs)  # top 0: none
    assert [d.finish_reason for d in deltas][2:] == [pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP]


def test_a_chat_completion_with_tool_calls_and_reasoning() -> None:
    body = {
        "id": "r-1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {
            "role": "assistant", "content": "", "reasoning_content": "Oslo, then.",
            "tool_calls": [{"id": "call_8b2f", "index": 0, "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
            "logprobs": None, "finish_reason": "tool_calls", "matched_stop": None}],
        "usage": {"prompt_tokens": 30, "total_tokens": 42, "completion_tokens": 12},
    }  # fmt: skip
    (choice,) = T.completion(chat_request(), body).choices
    assert choice.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert choice.reasoning == "Oslo, then."
    assert [(c.id, c.name, c.arguments) for c in choice.tool_calls] == [
        ("call_8b2f", "weather", '{"city": "Oslo"}')
    ]


def test_a_chat_stream_s_reasoning_content() -> None:
    events = [
        {"choices": [{"index": 0, "delta": {"reasoning_content": "Hmm"}}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 2}},
        {"choices": [{"index": 0, "delta": {"content": "Yes"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 9, "completion_tokens": 3}},
    ]  # fmt: skip
    deltas = _feed(T.stream_parser(chat_request()), events)
    assert [(d.reasoning, d.text, d.token_count) for d in deltas] == [
        ("Hmm", "", 2),
        ("", "Yes", 1),
    ]


@pytest.mark.parametrize(
    "message",
    [
        "Model only supports text input; received unsupported content type 'image_url'.",
        "image input is not supported for this model",
    ],
)
def test_images_to_a_text_only_model_are_unsupported(message: str) -> None:
    body = {"object": "error", "message": message, "type": "BadRequestError", "param": None,
            "code": 400}  # fmt: skip
    error = T.error(400, orjson.dumps(body))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)


@pytest.mark.parametrize(
    ("parser", "refused"), [(None, False), ("qwen25", False), ("", True)], ids=str
)
async def test_tools_need_the_engine_s_tool_call_parser(parser: str | None, refused: bool) -> None:
    """SGLang without --tool-call-parser refuses nothing and leaves calls in the text: the
    adapter reads `/model_info` at readiness and refuses tool calls itself."""
    translation = SglangTranslation("qwen")
    if parser is not None:
        engine = RecordingEngine({("GET", "/model_info"): {"tool_call_parser": parser or None}})
        await translation.max_model_len(engine)
    calling = chat_request()
    with_tools(calling, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO))
    if refused:
        with pytest.raises(InferenceError) as caught:
            translation.request(calling, stream=False)
        assert caught.value.reason == pb.UNSUPPORTED_FEATURE
        assert "--tool-call-parser" in caught.value.message
    else:
        assert translation.request(calling, stream=False).body["tools"]
    silent = chat_request()
    with_tools(silent, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE))
    assert translation.request(silent, stream=False).body["tool_choice"] == "none"
