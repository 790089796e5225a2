"""The TGI translation: request mapping, stream parsing, stop trimming and error mapping,
checked against literal TGI payloads."""

from __future__ import annotations

import itertools
import re
from typing import Any

import grpc
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from switchyard.adapter.translation import Delta, EngineHTTPError
from switchyard.adapter_tgi.json_object import json_object_regex
from switchyard.adapter_tgi.stops import StopTrimmer, cut_at_stop
from switchyard.adapter_tgi.translation import IMAGE_PROBE, TgiTranslation
from switchyard.inference.errors import InferenceError
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
    # No `decoder_input_details`: the prompt's length comes in a header (prefill is empty).
    assert unary.body == {
        "inputs": "Once upon",
        "parameters": {"details": True, "do_sample": True},
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


def test_greedy_sends_no_warper_that_would_make_tgi_sample() -> None:
    # TGI samples when top_p or top_k is set, do_sample or not; the top token is the
    # greedy choice whatever they would cut, so leaving them out changes nothing else.
    request = prompt(temperature=0.0, top_p=0.5, top_k=3)
    assert T.request(request, stream=False).body["parameters"] == {
        "details": True,
        "do_sample": False,
    }
    body = T.request(chat(temperature=0.0, top_p=0.5), stream=False).body
    assert (body["temperature"], "top_p" in body) == (0.0, False)
    assert T.request(chat(temperature=0.3, top_p=0.5), stream=False).body["top_p"] == 0.5


def test_negative_seeds_become_distinct_u64s() -> None:
    seed = T.request(prompt(seed=-1), stream=True).body["parameters"]["seed"]
    assert seed == 2**64 - 1


def test_chat_request() -> None:
    request = chat(max_tokens=5, temperature=0.2, top_p=0.5, seed=3, stop=["x"])
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
        "temperature": pytest.approx(0.2),
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
        "type": "regex",
        "value": json_object_regex(),
    }
    assert grammar(_constrained(regex=r"\d+")) == {"type": "regex", "value": r"\d+"}
    choice = grammar(_constrained(choice=["a.b", "c|d", "(e)"]))
    assert choice["type"] == "regex"
    for option in ("a.b", "c|d", "(e)"):
        assert re.fullmatch(choice["value"], option)
    assert not re.fullmatch(choice["value"], "axb")


def test_chat_structured_output_is_a_response_format() -> None:
    request = chat()
    request.structured_output.regex = "yes|no"
    body = T.request(request, stream=False).body
    assert body["response_format"] == {"type": "regex", "value": "yes|no"}


# Unary responses.


def test_native_completion() -> None:
    body: dict[str, Any] = {
        "generated_text": "Hello world STOP",
        "details": {
            "finish_reason": "stop_sequence",
            "generated_tokens": 4,
            "seed": None,
            "prefill": [],  # as TGI sends it unless --enable-prefill-logprobs
            "tokens": [],
        },
    }
    headers = {"x-prompt-tokens": "2", "x-generated-tokens": "4"}
    completion = T.completion(prompt(stop=["STOP"]), body, headers)
    assert (completion.text, completion.finish_reason) == ("Hello world ", pb.FINISH_REASON_STOP)
    assert (completion.prompt_tokens, completion.completion_tokens) == (2, 4)
    body["details"]["finish_reason"] = "length"
    body["generated_text"] = "Hello world"
    assert T.completion(prompt(), body, headers).finish_reason == pb.FINISH_REASON_LENGTH


def test_a_native_answer_without_its_prompt_count_is_an_engine_failure() -> None:
    body = {
        "generated_text": "Hi",
        "details": {"finish_reason": "length", "generated_tokens": 1, "prefill": []},
    }
    for headers in ({}, {"x-prompt-tokens": "many"}):
        with pytest.raises(InferenceError) as caught:
            T.completion(prompt(), body, headers)
        assert caught.value.code == grpc.StatusCode.INTERNAL


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
    completion = T.completion(prompt(stop=["et"]), body, {"x-prompt-tokens": "2"})
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
# "a" is complete (after " a") before " aa", which starts earlier: the first complete wins,
# however the text was split.
@example(text=" aa", cuts=[2], stops=["a", " aa"])
@example(text=" aa", cuts=[], stops=["a", " aa"])
def test_relayed_text_is_the_text_before_the_first_stop(
    text: str, cuts: list[int], stops: list[str]
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    trimmer = StopTrimmer(stops)
    relayed = "".join(trimmer.push(p) for p in pieces) + trimmer.flush()
    expected, found = cut_at_stop(text, stops)
    assert relayed == expected
    assert trimmer.matched == found
    assert trimmer.stopped == bool(found)
    assert not found or (found in stops and text.startswith(expected + found))


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


_INFO = {("GET", "/info"): {"max_total_tokens": 8192, "max_input_tokens": 8191}}


async def test_max_model_len_reads_info_and_proves_the_key() -> None:
    engine = RecordingEngine(_INFO)
    assert await T.max_model_len(engine) == 8192
    assert engine.calls == [("GET", "/info", None), ("POST", "/tokenize", {"inputs": IMAGE_PROBE})]


class _Refusing(RecordingEngine):
    def __init__(self, status: int | None) -> None:
        super().__init__(_INFO)
        self.status = status

    async def post_json(self, path: str, body: Any) -> Any:
        raise EngineHTTPError(f"POST {path}: HTTP {self.status}", self.status)


async def test_a_refused_key_keeps_the_adapter_from_serving() -> None:
    for status in (401, 403):
        with pytest.raises(EngineHTTPError) as caught:
            await T.max_model_len(_Refusing(status))
        assert "ADAPTER_ENGINE_API_KEY" in str(caught.value)
    with pytest.raises(EngineHTTPError):  # unreachable: not ready either
        await T.max_model_len(_Refusing(None))
    # Any other refusal still says the key was accepted.
    assert await T.max_model_len(_Refusing(404)) == 8192


def test_engine_facts() -> None:
    assert T.engine == "tgi"
    assert T.health_path == "/health"
    assert (T.load_metrics.running, T.load_metrics.waiting) == (
        "tgi_batch_current_size",
        "tgi_queue_size",
    )
    assert T.load_metrics.kv_cache_usage is None


# max_tokens past 1024: TGI generates whole 1024-token chunks and can run past it.


def _native_events(texts: list[str]) -> list[dict[str, Any]]:
    events = [_token(t) for t in texts[:-1]]
    events.append(_last(texts[-1], "length", len(texts)))
    return events


def test_a_native_stream_is_cut_at_max_tokens() -> None:
    deltas = _feed(prompt(max_tokens=3), _native_events(["a", " b", " c", " d", " e"]))
    assert "".join(d.text for d in deltas) == "a b c"
    assert sum(d.token_count for d in deltas) == 3
    # The third token ends the output; TGI's surplus is dropped, its last event counted.
    assert [bool(d.finish_reason) for d in deltas] == [False, False, True, True]
    assert {d.finish_reason for d in deltas[2:]} == {pb.FINISH_REASON_LENGTH}
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (3, 3)
    # A stop string found first keeps its reason; what it held back is not lost.
    deltas = _feed(prompt(max_tokens=3, stop=["b"]), _native_events(["a", " b", " c", " d"]))
    assert "".join(d.text for d in deltas) == "a "
    assert deltas[-1].finish_reason == pb.FINISH_REASON_STOP
    deltas = _feed(prompt(max_tokens=2, stop=["xyz"]), _native_events(["a", " x", " c"]))
    assert "".join(d.text for d in deltas) == "a x"


def test_a_chat_stream_is_cut_at_max_tokens() -> None:
    usage = {
        **_chunk(""),
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }
    chunks = [_chunk("a"), _chunk(" b"), _chunk(" c"), _chunk(" d"), _chunk(" e", "length")]
    deltas = _feed(chat(max_tokens=3), [*chunks, usage])
    assert "".join(d.text for d in deltas) == "a b c"
    assert sum(d.token_count for d in deltas) == 3
    assert [d.finish_reason for d in deltas if d.finish_reason] == [pb.FINISH_REASON_LENGTH]
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (9, 3)


def test_a_unary_answer_is_cut_at_max_tokens() -> None:
    tokens = [
        {"id": i, "text": t, "logprob": -1.0, "special": False} for i, t in enumerate("abcde")
    ]
    body = {
        "generated_text": "abcde",
        "details": {"finish_reason": "length", "generated_tokens": 5, "tokens": tokens},
    }
    completion = T.completion(prompt(max_tokens=3), body, {"x-prompt-tokens": "2"})
    assert (completion.text, completion.completion_tokens) == ("abc", 3)
    assert completion.finish_reason == pb.FINISH_REASON_LENGTH
    answer: dict[str, Any] = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "abcde"},
                "logprobs": {"content": [{"token": t, "logprob": -1.0} for t in "abcde"]},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }
    completion = T.completion(chat(max_tokens=3), answer)
    assert (completion.text, completion.completion_tokens) == ("abc", 3)
    answer["choices"][0]["logprobs"] = None  # nothing to cut at: never relayed too long
    with pytest.raises(InferenceError) as caught:
        T.completion(chat(max_tokens=3), answer)
    assert caught.value.code == grpc.StatusCode.INTERNAL


def test_unary_chat_asks_for_the_tokens_only_where_tgi_can_run_past_max_tokens() -> None:
    def asks(max_tokens: int, stream: bool = False) -> bool:
        return "logprobs" in T.request(chat(max_tokens=max_tokens), stream=stream).body

    assert asks(1500)
    assert asks(1025)
    assert not asks(1024)  # one whole chunk
    assert not asks(2048)  # two whole chunks
    assert not asks(500)
    assert not asks(1500, stream=True)  # a stream brings every token anyway
