"""OpenAI-format responses and streams (vLLM's and SGLang's): deltas counted from the usage
in every chunk (per choice), or one per text chunk settled by the last; finish reasons and
error events by the engine's own rules; tool calls, reasoning and logprobs read out."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from switchyard.adapter.openai_stream import OpenAIStream, chat_completion, completion_logprobs
from switchyard.adapter.translation import Delta, FinishReason, ToolCall
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb


def _finish(reason: str) -> FinishReason:
    if reason == "abort":
        raise InferenceError.unavailable("aborted")
    return pb.FINISH_REASON_LENGTH if reason == "length" else pb.FINISH_REASON_STOP


def _error(data: dict[str, Any]) -> InferenceError:
    return InferenceError.overloaded(str(data["error"]))


def stream(chat: bool = True) -> OpenAIStream:
    return OpenAIStream(chat=chat, finish_reason=_finish, error=_error)


def chunk(text: str | None = None, finish: str | None = None, **usage: int) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish}
    if text is not None:
        choice["delta"]["content"] = text
    out: dict[str, Any] = {"object": "chat.completion.chunk", "choices": [choice]}
    if usage:
        out["usage"] = {"prompt_tokens": 7, **usage}
    return out


def feed(parser: OpenAIStream, events: list[dict[str, Any]]) -> list[Delta]:
    return [d for d in (parser.feed("message", e) for e in events) if d is not None]


def test_tokens_are_counted_from_the_usage_in_every_chunk() -> None:
    deltas = feed(
        stream(),
        [
            chunk("", completion_tokens=0),
            chunk("Hel", completion_tokens=1),
            chunk("lo wor", completion_tokens=3),  # two tokens in one chunk
            chunk(finish="stop", completion_tokens=4),  # the end of sequence: no text
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}},
        ],
    )
    assert [d.token_count for d in deltas] == [0, 1, 2, 1, 0]
    assert "".join(d.text for d in deltas) == "Hello wor"
    assert deltas[3].finish_reason == pb.FINISH_REASON_STOP
    assert (deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == (7, 4)


def test_without_usage_each_text_chunk_is_a_token_until_the_last_chunk_settles() -> None:
    deltas = feed(
        stream(),
        [
            chunk(""),  # the role chunk: nothing to say
            chunk("Hello"),
            chunk(" world"),
            chunk(finish="length"),
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}},
        ],
    )
    assert [d.token_count for d in deltas] == [1, 1, 0, 3]
    assert deltas[2].finish_reason == pb.FINISH_REASON_LENGTH
    assert deltas[-1].completion_tokens == 5


def test_completions_read_the_text_of_the_choice() -> None:
    event = {"object": "text_completion", "choices": [{"index": 0, "text": " a"}]}
    assert stream(chat=False).feed("message", event) == Delta(text=" a", token_count=1)


def test_finish_reasons_and_error_events_follow_the_engine_s_rules() -> None:
    with pytest.raises(InferenceError) as caught:
        stream().feed("message", chunk(finish="abort"))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(InferenceError) as caught:
        stream().feed("message", {"error": {"message": "queue full"}})
    assert caught.value.reason == pb.ENGINE_OVERLOADED


@pytest.mark.parametrize("event", [["not", "an", "object"], "text", None])
def test_an_event_that_is_not_an_object_is_the_engine_s_failure(event: Any) -> None:
    with pytest.raises(InferenceError) as caught:
        stream().feed("message", event)
    assert caught.value.code == grpc.StatusCode.INTERNAL


def test_malformed_usage_counts_nothing_and_reports_nothing() -> None:
    delta = stream().feed("message", {"choices": [], "usage": {"completion_tokens": "3"}})
    assert delta == Delta()


# Tools, reasoning, logprobs and several choices


def test_tool_call_fragments_become_tool_call_deltas() -> None:
    """OpenAI's streaming of a call: id and name first, then argument fragments."""
    first = {"index": 0, "id": "chatcmpl-tool-1", "type": "function",
             "function": {"name": "weather", "arguments": ""}}  # fmt: skip
    more = {"index": 0, "function": {"arguments": '{"city": '}}
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [first]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    parser = OpenAIStream(
        chat=True,
        finish_reason=lambda r: pb.FINISH_REASON_TOOL_CALLS if r == "tool_calls" else _finish(r),
        error=_error,
    )
    deltas = feed(parser, events)
    assert [list(d.tool_calls) for d in deltas[:2]] == [
        [pb.ToolCallDelta(index=0, id="chatcmpl-tool-1", name="weather")],
        [pb.ToolCallDelta(index=0, arguments_delta='{"city": ')],
    ]
    assert [d.token_count for d in deltas] == [1, 1, 0]
    assert deltas[-1].finish_reason == pb.FINISH_REASON_TOOL_CALLS


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_reasoning_is_read_from_the_engine_s_field(key: str) -> None:
    parser = OpenAIStream(chat=True, finish_reason=_finish, error=_error, reasoning_keys=(key,))
    delta = parser.feed("message", {"choices": [{"index": 0, "delta": {key: "Hmm."}}]})
    assert delta is not None
    assert (delta.reasoning, delta.text, delta.token_count) == ("Hmm.", "", 1)
    other = "reasoning" if key != "reasoning" else "reasoning_content"
    ignored = parser.feed("message", {"choices": [{"index": 0, "delta": {other: "no"}}]})
    assert ignored is None


LOGPROBS = {
    "content": [
        {
            "token": "é",
            "logprob": -0.25,
            "bytes": [195, 169],
            "top_logprobs": [
                {"token": "é", "logprob": -0.25, "bytes": [195, 169]},
                {"token": "e", "logprob": -1.5, "bytes": [101]},
            ],
        }
    ]
}
EXPECTED_LOGPROB = pb.TokenLogprob(
    token="é",
    logprob=-0.25,
    bytes="é".encode(),
    top_logprobs=[
        pb.TokenLogprob(token="é", logprob=-0.25, bytes="é".encode()),
        pb.TokenLogprob(token="e", logprob=-1.5, bytes=b"e"),
    ],
)


def test_logprobs_are_read_only_when_asked_for() -> None:
    event = {"choices": [{"index": 0, "delta": {"content": "é"}, "logprobs": LOGPROBS}]}
    asked = OpenAIStream(chat=True, finish_reason=_finish, error=_error, top_logprobs=1)
    delta = asked.feed("message", event)
    assert delta is not None
    assert list(delta.logprobs) == [EXPECTED_LOGPROB]
    not_asked = stream().feed("message", event)
    assert not_asked is not None
    assert not_asked.logprobs == ()


def test_choices_are_counted_apart_and_the_last_usage_covers_them_all() -> None:
    """vLLM's and SGLang's continuous usage is the chunk's choice's own count."""

    def part(index: int, text: str, completion: int, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": {"content": text}, "finish_reason": finish}
        usage = {"prompt_tokens": 7, "completion_tokens": completion}
        return {"choices": [choice], "usage": usage}

    deltas = feed(
        stream(),
        [
            part(0, "A", 1),
            part(1, "B", 1),
            part(1, "b c", 3),
            part(0, "a", 2, "stop"),
            part(1, "", 3, "length"),
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 6}},
        ],
    )
    assert [(d.index, d.token_count) for d in deltas] == [
        (0, 1), (1, 1), (1, 2), (0, 1), (1, 0), (0, 1),
    ]  # fmt: skip
    assert [d.completion_tokens for d in deltas] == [1, 2, 4, 5, 5, 6]
    assert [d.finish_reason for d in deltas if d.finish_reason] == [
        pb.FINISH_REASON_STOP,
        pb.FINISH_REASON_LENGTH,
    ]


def test_a_chat_completion_with_every_choice() -> None:
    call = {"id": "call_9", "type": "function",
            "function": {"name": "weather", "arguments": {"city": "Oslo"}}}  # fmt: skip
    body = {
        "choices": [
            {"index": 1, "message": {"content": "Hi", "reasoning_content": "R"},
             "finish_reason": "length"},
            {"index": 0, "message": {"content": None, "tool_calls": [call]},
             "logprobs": LOGPROBS, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9},
    }  # fmt: skip
    completion = chat_completion(body, finish_reason=_finish)
    assert (completion.prompt_tokens, completion.completion_tokens) == (5, 9)
    first, second = completion.choices
    assert (first.index, first.text, first.finish_reason) == (0, "", pb.FINISH_REASON_STOP)
    # SGLang may send arguments as an object: they travel as JSON text.
    assert first.tool_calls == (ToolCall("call_9", "weather", '{"city":"Oslo"}'),)
    assert list(first.logprobs) == [EXPECTED_LOGPROB]
    assert (second.index, second.text, second.reasoning) == (1, "Hi", "R")
    assert completion.text == ""  # choice 0's


def test_a_completion_without_a_choice_is_the_engine_s_failure() -> None:
    with pytest.raises(InferenceError) as caught:
        chat_completion({"choices": [], "usage": {}}, finish_reason=_finish)
    assert caught.value.code == grpc.StatusCode.INTERNAL


def test_legacy_completion_logprobs_keep_the_most_likely_alternatives() -> None:
    """vLLM's completions list the chosen token besides the `logprobs` most likely ones."""
    raw = {
        "tokens": [" a", " b"],
        "token_logprobs": [-0.5, -2.0],
        "top_logprobs": [{" a": -0.5, " x": -0.25}, {" y": -0.1, " b": -2.0, " z": -3.0}],
        "text_offset": [0, 2],
    }
    out = completion_logprobs(raw, 1)
    assert [(t.token, t.logprob) for t in out] == [(" a", -0.5), (" b", -2.0)]
    assert [[(a.token, a.logprob) for a in t.top_logprobs] for t in out] == [
        [(" x", -0.25)],
        [(" y", pytest.approx(-0.1))],
    ]
    assert out[0].bytes == b" a"
