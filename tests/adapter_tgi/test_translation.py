"""The TGI translation: request mapping, stream parsing, stop trimming and error mapping,
checked against literal TGI payloads."""

from __future__ import annotations

import itertools
import re
from typing import Any

import grpc
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchyard.adapter.translation import Delta
from switchyard.adapter_tgi.stops import StopTrimmer, cut_at_stop
from switchyard.adapter_tgi.translation import TgiTranslation, regex_literal
from switchyard.common.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request
from tests.support.engine_http import RecordingEngine

T = TgiTranslation("m")


def prompt(**sampling: Any) -> pb.GenerateRequest:
    return generate_request("m", prompt="Once upon", **sampling)


def chat(**sampling: Any) -> pb.GenerateRequest:
    return generate_request(
        "m", messages=[("system", "Be brief."), ("user", "Hi", "ann")], **sampling
    )


def _refused(request: pb.GenerateRequest, param: str) -> InferenceError:
    with pytest.raises(InferenceError) as caught:
        T.request(request, stream=False)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == pb.UNSUPPORTED_CONSTRAINT
    assert error.metadata.get("param") == param
    return error


# Requests.


def test_prompt_unary_and_stream_routes() -> None:
    unary = T.request(prompt(), stream=False)
    assert unary.path == "/generate"
    assert unary.body == {
        "inputs": "Once upon",
        "parameters": {"details": True, "decoder_input_details": True, "do_sample": True},
    }
    stream = T.request(prompt(), stream=True)
    assert stream.path == "/generate_stream"
    assert stream.body["parameters"] == {"details": True, "do_sample": True}


def test_prompt_sampling_fields() -> None:
    body = T.request(
        prompt(max_tokens=7, temperature=0.7, top_p=0.9, top_k=40, seed=11, stop=["\n", "END"],
               frequency_penalty=0.5, repetition_penalty=1.2),
        stream=True,
    ).body["parameters"]  # fmt: skip
    assert body == {
        "details": True,
        "max_new_tokens": 7,
        "do_sample": True,
        "temperature": pytest.approx(0.7),
        "top_p": pytest.approx(0.9),
        "top_k": 40,
        "repetition_penalty": pytest.approx(1.2),
        "seed": 11,
        "stop": ["\n", "END"],
        "frequency_penalty": 0.5,
    }


def test_values_tgi_refuses_but_that_mean_off_are_left_out() -> None:
    body = T.request(
        prompt(top_p=1.0, frequency_penalty=0.0, repetition_penalty=1.0, presence_penalty=0.0),
        stream=True,
    ).body["parameters"]
    assert body == {"details": True, "do_sample": True}


def test_temperature_zero_is_greedy() -> None:
    body = T.request(prompt(temperature=0.0), stream=True).body["parameters"]
    assert body["do_sample"] is False
    assert "temperature" not in body


def test_negative_seeds_become_distinct_u64s() -> None:
    seed = T.request(prompt(seed=-1), stream=True).body["parameters"]["seed"]
    assert seed == 2**64 - 1


def test_chat_request() -> None:
    request = chat(max_tokens=5, temperature=0.0, top_p=0.5, seed=3, stop=["x"])
    call = T.request(request, stream=True)
    assert call.path == "/v1/chat/completions"
    assert call.body == {
        "model": "tgi",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 5,
        "temperature": 0.0,
        "top_p": 0.5,
        "seed": 3,
        "stop": ["x"],
    }
    assert "stream_options" not in T.request(request, stream=False).body


def test_refusals() -> None:
    _refused(prompt(ignore_eos=True), "ignore_eos")
    _refused(prompt(presence_penalty=0.5), "presence_penalty")
    _refused(chat(top_k=5), "top_k")
    _refused(chat(repetition_penalty=1.1), "repetition_penalty")


def _constrained(**kind: Any) -> pb.GenerateRequest:
    request = prompt()
    so = request.structured_output
    for name, value in kind.items():
        if name == "choice":
            so.choice.choices.extend(value)
        elif name == "json_object":
            so.json_object.SetInParent()
        else:
            setattr(so, name, value)
    return request


def test_structured_outputs() -> None:
    def grammar(request: pb.GenerateRequest) -> Any:
        return T.request(request, stream=False).body["parameters"]["grammar"]

    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert grammar(_constrained(json_schema=orjson.dumps(schema).decode())) == {
        "type": "json",
        "value": schema,
    }
    assert grammar(_constrained(json_object=True)) == {
        "type": "json",
        "value": {"type": "object", "properties": {}},
    }
    assert grammar(_constrained(regex=r"\d+")) == {"type": "regex", "value": r"\d+"}
    choice = grammar(_constrained(choice=["a.b", "c|d", "(e)"]))
    assert choice["type"] == "regex"
    for option in ("a.b", "c|d", "(e)"):
        assert re.fullmatch(choice["value"], option)
    assert not re.fullmatch(choice["value"], "axb")
    error = _refused(_constrained(grammar='root ::= "a"'), "grammar")
    assert "grammar" in error.message


def test_chat_structured_output_is_a_response_format() -> None:
    request = chat()
    request.structured_output.regex = "yes|no"
    body = T.request(request, stream=False).body
    assert body["response_format"] == {"type": "regex", "value": "yes|no"}


@given(st.text(max_size=20))
def test_regex_literal_matches_exactly_itself(text: str) -> None:
    assert re.fullmatch(regex_literal(text), text, flags=re.DOTALL)


# Unary responses.


def test_native_completion() -> None:
    body: dict[str, Any] = {
        "generated_text": "Hello world STOP",
        "details": {
            "finish_reason": "stop_sequence",
            "generated_tokens": 4,
            "seed": None,
            "prefill": [
                {"id": 1, "text": "Once", "logprob": None},
                {"id": 2, "text": " upon", "logprob": -1.0},
            ],
            "tokens": [],
        },
    }
    completion = T.completion(prompt(stop=["STOP"]), body)
    assert (completion.text, completion.finish_reason) == ("Hello world ", pb.FINISH_REASON_STOP)
    assert (completion.prompt_tokens, completion.completion_tokens) == (2, 4)
    body["details"]["finish_reason"] = "length"
    body["generated_text"] = "Hello world"
    assert T.completion(prompt(), body).finish_reason == pb.FINISH_REASON_LENGTH


def test_a_stop_tgi_missed_inside_a_token_is_still_cut() -> None:
    body = {
        "generated_text": "alpha beta gamma",
        "details": {
            "finish_reason": "eos_token",
            "generated_tokens": 4,
            "prefill": [],
            "tokens": [],
        },
    }
    completion = T.completion(prompt(stop=["et"]), body)
    assert (completion.text, completion.finish_reason) == ("alpha b", pb.FINISH_REASON_STOP)


def test_chat_completion() -> None:
    body = {
        "object": "chat.completion",
        "id": "",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    completion = T.completion(chat(), body)
    assert completion.text == "Hi!"
    assert completion.finish_reason == pb.FINISH_REASON_STOP
    assert (completion.prompt_tokens, completion.completion_tokens) == (12, 3)


def test_malformed_responses_are_engine_failures() -> None:
    bodies: list[Any] = [{}, [], {"generated_text": "x"}, {"choices": []}]
    for body in bodies:
        with pytest.raises(InferenceError) as caught:
            T.completion(chat() if "choices" in body else prompt(), body)
        assert caught.value.code == grpc.StatusCode.INTERNAL


# Streams.


def _token(text: str, *, special: bool = False, index: int = 1) -> dict[str, Any]:
    return {
        "index": index,
        "token": {"id": 5, "text": text, "logprob": -0.5, "special": special},
        "generated_text": None,
        "details": None,
    }


def _last(text: str, reason: str, generated: int, *, special: bool = False) -> dict[str, Any]:
    event = _token(text, special=special)
    event["generated_text"] = "(whole text)"
    event["details"] = {
        "finish_reason": reason,
        "generated_tokens": generated,
        "seed": None,
        "input_length": 3,
    }
    return event


def _feed(request: pb.GenerateRequest, events: list[dict[str, Any]]) -> list[Delta]:
    parser = T.stream_parser(request)
    out = [parser.feed("message", e) for e in events]
    return [d for d in out if d is not None]


def test_native_stream() -> None:
    deltas = _feed(
        prompt(), [_token("Hello"), _token(" world"), _last("</s>", "eos_token", 3, special=True)]
    )
    assert [d.text for d in deltas] == ["Hello", " world", ""]  # EOS counted, not shown
    assert [d.token_count for d in deltas] == [1, 1, 1]
    assert deltas[-1].finish_reason == pb.FINISH_REASON_STOP
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (3, 3)
    assert all(d.finish_reason == pb.FINISH_REASON_UNSPECIFIED for d in deltas[:-1])


def test_native_stream_drops_the_stop_sequence() -> None:
    events = [_token("Hello"), _token(" wor"), _last("ld", "stop_sequence", 3)]
    deltas = _feed(prompt(stop=["world"]), events)
    assert "".join(d.text for d in deltas) == "Hello "
    assert [d.text for d in deltas] == ["Hello", " ", ""]  # "wor" held until it was the stop
    assert deltas[-1].finish_reason == pb.FINISH_REASON_STOP


def test_without_stop_strings_nothing_is_held() -> None:
    deltas = _feed(prompt(), [_token("wor"), _last("ld", "length", 2)])
    assert [d.text for d in deltas] == ["wor", "ld"]
    assert deltas[-1].finish_reason == pb.FINISH_REASON_LENGTH


def test_a_stop_inside_a_token_ends_the_text_and_later_tokens_still_count() -> None:
    events = [_token("alpha"), _token(" beta"), _token(" gamma"), _last(".", "length", 4)]
    deltas = _feed(prompt(stop=["et"]), events)
    assert "".join(d.text for d in deltas) == "alpha b"
    assert deltas[1].finish_reason == pb.FINISH_REASON_STOP
    assert sum(d.token_count for d in deltas) == 4
    assert deltas[-1].finish_reason == pb.FINISH_REASON_STOP  # never turned into LENGTH
    assert deltas[-1].completion_tokens == 4


def test_native_stream_errors() -> None:
    parser = T.stream_parser(prompt())
    cases = [
        ({"error": "Model is overloaded", "error_type": "overloaded"}, grpc.StatusCode.RESOURCE_EXHAUSTED, pb.ENGINE_OVERLOADED),
        (
            {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1024. Given: 1020 `inputs` tokens and 16 `max_new_tokens`", "error_type": "validation"},
            grpc.StatusCode.INVALID_ARGUMENT, pb.CONTEXT_LENGTH_EXCEEDED,
        ),
        (
            {"error": "Input validation error: `top_p` must be > 0.0 and < 1.0", "error_type": "validation"},
            grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST,
        ),
        ({"error": "Request failed during generation: boom", "error_type": "generation"}, grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR),
        ({"error": "Incomplete generation", "error_type": "incomplete_generation"}, grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR),
    ]  # fmt: skip
    for event, code, reason in cases:
        with pytest.raises(InferenceError) as caught:
            parser.feed("message", event)
        assert (caught.value.code, caught.value.reason) == (code, reason), event


def _chunk(content: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "id": "",
        "created": 1,
        "model": "m",
        "system_fingerprint": "3.3.5-native",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": None,
    }


def test_chat_stream_with_usage() -> None:
    usage = {
        **_chunk(""),
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    deltas = _feed(chat(), [_chunk("Hi"), _chunk(" there"), _chunk("", "stop"), usage])
    assert [d.text for d in deltas] == ["Hi", " there", "", ""]
    assert [d.token_count for d in deltas] == [1, 1, 1, 0]
    assert deltas[2].finish_reason == pb.FINISH_REASON_STOP
    assert (deltas[3].prompt_tokens, deltas[3].completion_tokens) == (9, 3)


def test_chat_stream_stop_sequence_and_length() -> None:
    deltas = _feed(
        chat(stop=["there"]), [_chunk("Hi"), _chunk(" the"), _chunk("re", "stop_sequence")]
    )
    assert "".join(d.text for d in deltas) == "Hi "
    assert deltas[-1].finish_reason == pb.FINISH_REASON_STOP
    deltas = _feed(chat(), [_chunk("Hi", "length")])
    assert deltas[-1].finish_reason == pb.FINISH_REASON_LENGTH


def test_chat_stream_errors_are_read_from_the_message() -> None:
    parser = T.stream_parser(chat())
    cases = [
        ("Model is overloaded", pb.ENGINE_OVERLOADED),
        ("Input validation error: `inputs` must have less than 1023 tokens. Given: 2000", pb.CONTEXT_LENGTH_EXCEEDED),
        ("Input validation error: `temperature` must be strictly positive", pb.INVALID_REQUEST),
        ("Template error: unknown role", pb.INVALID_REQUEST),
        ("Request failed during generation: CUDA out of memory", pb.ENGINE_ERROR),
    ]  # fmt: skip
    for message, reason in cases:
        with pytest.raises(InferenceError) as caught:
            parser.feed("message", {"error": {"message": message, "http_status_code": 422}})
        assert caught.value.reason == reason, message


def test_unknown_finish_reason_is_an_engine_failure() -> None:
    with pytest.raises(InferenceError) as caught:
        _feed(prompt(), [_last("x", "cosmic_ray", 1)])
    assert caught.value.code == grpc.StatusCode.INTERNAL


# Stop trimming, for any text, split and stop set.


@given(
    text=st.text(alphabet="abc \n", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=12),
    stops=st.lists(st.text(alphabet="abc \n", min_size=1, max_size=4), max_size=4),
)
def test_relayed_text_is_the_text_before_the_first_stop(
    text: str, cuts: list[int], stops: list[str]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    trimmer = StopTrimmer(stops)
    relayed = "".join(trimmer.push(p) for p in pieces) + trimmer.flush()
    expected, found = cut_at_stop(text, stops)
    assert relayed == expected
    assert trimmer.stopped == found


@given(
    text=st.text(alphabet="abcxyz", max_size=30),
    stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=5), min_size=1, max_size=3),
)
def test_only_a_possible_stop_start_is_held_back(text: str, stops: list[str]) -> None:
    trimmer = StopTrimmer(stops)
    released = ""
    for i, ch in enumerate(text):
        released += trimmer.push(ch)
        if trimmer.stopped:
            return
        seen = text[: i + 1]
        assert seen.startswith(released)
        held = seen[len(released) :]
        # What is held could still become a stop string; nothing else waits.
        assert held == "" or any(s.startswith(held) and s != held for s in stops)


def test_no_stops_means_no_delay() -> None:
    trimmer = StopTrimmer([])
    assert [trimmer.push(p) for p in ("a", "bc", "")] == ["a", "bc", ""]


def test_held_text_is_released_as_soon_as_it_cannot_be_a_stop() -> None:
    trimmer = StopTrimmer(["</end>"])
    assert trimmer.push("text </") == "text "
    assert trimmer.push("e") == ""
    assert trimmer.push("x") == "</ex"
    assert trimmer.push("</end> more") == ""
    assert trimmer.stopped
    assert trimmer.flush() == ""


# HTTP errors.


@pytest.mark.parametrize(
    ("status", "body", "code", "reason"),
    [
        (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1024. Given: 2000 `inputs` tokens and 16 `max_new_tokens`", "error_type": "validation"},
         grpc.StatusCode.INVALID_ARGUMENT, pb.CONTEXT_LENGTH_EXCEEDED),
        (422, {"error": "Input validation error: `inputs` must have less than 1023 tokens. Given: 1500", "error_type": "validation"},
         grpc.StatusCode.INVALID_ARGUMENT, pb.CONTEXT_LENGTH_EXCEEDED),
        (422, {"error": "Input validation error: `stop` supports up to 4 stop sequences. Given: 5", "error_type": "validation"},
         grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST),
        (422, {"error": "Template error: bad role", "error_type": "template_error"},
         grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST),
        (429, {"error": "Model is overloaded", "error_type": "overloaded"},
         grpc.StatusCode.RESOURCE_EXHAUSTED, pb.ENGINE_OVERLOADED),
        (424, {"error": "Request failed during generation: boom", "error_type": "generation"},
         grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR),
        (500, {"error": "Incomplete generation", "error_type": "incomplete_generation"},
         grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR),
        (503, {"error": "unhealthy", "error_type": "healthcheck"},
         grpc.StatusCode.UNAVAILABLE, pb.ENGINE_UNAVAILABLE),
    ],
)  # fmt: skip
def test_error_bodies(
    status: int, body: dict[str, str], code: grpc.StatusCode, reason: int
) -> None:
    error = T.error(status, orjson.dumps(body))
    assert (error.code, error.reason) == (code, reason)
    assert body["error"] in error.message


def test_axum_plain_text_rejections_are_invalid() -> None:
    for status, text in (
        (400, b"Failed to parse the request body as JSON: EOF while parsing"),
        (422, b"Failed to deserialize the JSON body into the target type: missing field `inputs`"),
        (413, b"Failed to buffer the request body: length limit exceeded"),
    ):
        error = T.error(status, text)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert text.decode() in error.message


def test_other_statuses_are_engine_failures() -> None:
    error = T.error(401, b"")
    assert error.code == grpc.StatusCode.INTERNAL


async def test_max_model_len_reads_info() -> None:
    engine = RecordingEngine(
        {("GET", "/info"): {"max_total_tokens": 8192, "max_input_tokens": 8191}}
    )
    assert await T.max_model_len(engine) == 8192
    assert engine.calls == [("GET", "/info", None)]


def test_engine_facts() -> None:
    assert T.engine == "tgi"
    assert T.health_path == "/health"
    assert (T.load_metrics.running, T.load_metrics.waiting) == (
        "tgi_batch_current_size",
        "tgi_queue_size",
    )
    assert T.load_metrics.kv_cache_usage is None
