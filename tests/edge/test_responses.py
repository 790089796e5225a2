"""The hand-encoded bodies and chunks are what the official `openai` SDK parses."""

from __future__ import annotations

import orjson
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion import Completion as CompletionChunk

from switchyard.edge.responses import DONE, Encoder
from switchyard.inference.v1 import inference_pb2 as pb


def _data(event: bytes) -> dict[str, object]:
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    parsed: dict[str, object] = orjson.loads(event[6:-2])
    return parsed


def test_chat_stream_chunks() -> None:
    enc = Encoder("chat", "chatcmpl-1", "demo", 1700000000, include_usage=True)
    role = ChatCompletionChunk.model_validate(_data(enc.role()))
    assert role.choices[0].delta.role == "assistant"
    text = 'quote " backslash \\ newline \n unicode é 🚂'
    chunk = ChatCompletionChunk.model_validate(_data(enc.chunk(text)))
    assert chunk.choices[0].delta.content == text
    assert chunk.usage is None
    assert (chunk.id, chunk.model, chunk.created) == ("chatcmpl-1", "demo", 1700000000)
    finish = ChatCompletionChunk.model_validate(_data(enc.finish(pb.FINISH_REASON_LENGTH)))
    assert finish.choices[0].finish_reason == "length"
    usage = ChatCompletionChunk.model_validate(
        _data(enc.usage(pb.Usage(prompt_tokens=3, completion_tokens=4)))
    )
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.total_tokens == 7
    assert DONE == b"data: [DONE]\n\n"


def test_usage_field_only_when_asked() -> None:
    enc = Encoder("chat", "chatcmpl-1", "demo", 1, include_usage=False)
    assert "usage" not in _data(enc.chunk("x"))


def test_completion_stream_chunks() -> None:
    enc = Encoder("completion", "cmpl-1", "demo", 1, include_usage=False)
    # Mid-stream chunks carry finish_reason null, as OpenAI's do (the SDK does not
    # validate stream chunks strictly); check them as JSON.
    chunk = _data(enc.chunk("hi"))
    assert chunk["object"] == "text_completion"
    assert chunk["choices"] == [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": None}]
    finish = CompletionChunk.model_validate(_data(enc.finish(pb.FINISH_REASON_STOP)))
    assert finish.choices[0].finish_reason == "stop"


def test_whole_bodies() -> None:
    usage = pb.Usage(prompt_tokens=5, completion_tokens=2)
    chat = ChatCompletion.model_validate(
        orjson.loads(
            Encoder("chat", "c", "m", 1, False).whole("hello", pb.FINISH_REASON_STOP, usage)
        )
    )
    assert chat.choices[0].message.content == "hello"
    assert chat.usage is not None
    assert chat.usage.total_tokens == 7
    completion = Completion.model_validate(
        orjson.loads(
            Encoder("completion", "c", "m", 1, False).whole("x", pb.FINISH_REASON_LENGTH, usage)
        )
    )
    assert completion.choices[0].finish_reason == "length"
