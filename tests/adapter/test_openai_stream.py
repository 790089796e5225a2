"""OpenAI-format streams (vLLM's and SGLang's): deltas counted from the usage in every chunk,
or one per text chunk settled by the last; finish reasons and error events by the engine's
own rules."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from switchyard.adapter.openai_stream import OpenAIStream
from switchyard.adapter.translation import Delta, FinishReason
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
