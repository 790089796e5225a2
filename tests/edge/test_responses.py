"""The hand-encoded bodies and chunks are what the official `openai` SDK parses."""

from __future__ import annotations

import openai
import orjson
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion import Completion as CompletionChunk
from pydantic import BaseModel

from switchyard.edge.responses import DONE, Encoder
from switchyard.inference.v1 import inference_pb2 as pb


def _data(event: bytes) -> dict[str, object]:
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    parsed: dict[str, object] = orjson.loads(event[6:-2])
    return parsed


def _events(stream: bytes) -> list[dict[str, object]]:
    return [_data(e + b"\n\n") for e in stream.split(b"\n\n") if e]


def test_chat_stream_chunks() -> None:
    enc = Encoder("chat", "chatcmpl-1", "demo", 1700000000, include_usage=True)
    role = ChatCompletionChunk.model_validate(_data(enc.opening()))
    assert role.choices[0].delta.role == "assistant"
    text = 'quote " backslash \\ newline \n unicode é 🚂'
    chunk = ChatCompletionChunk.model_validate(_data(enc.chunk(text)))
    assert chunk.choices[0].delta.content == text
    assert chunk.usage is None
    assert (chunk.id, chunk.model, chunk.created) == ("chatcmpl-1", "demo", 1700000000)
    finish = ChatCompletionChunk.model_validate(
        _data(enc.finish(pb.GenerateStreamResponse(finish_reason=pb.FINISH_REASON_LENGTH)))
    )
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
    assert "usage" not in _data(enc.delta(pb.GenerateStreamResponse(reasoning_delta="x")))


def test_a_model_name_with_percent_signs_is_sent_as_it_is() -> None:
    enc = Encoder("chat", "c", "50%-off %d %s", 1, include_usage=False, choices=2)
    assert (
        _data(enc.finish(pb.GenerateStreamResponse(finish_reason=pb.FINISH_REASON_STOP, index=1)))[
            "model"
        ]
        == "50%-off %d %s"
    )
    assert _data(enc.chunk("x", 1))["model"] == "50%-off %d %s"


def test_completion_stream_chunks() -> None:
    enc = Encoder("completion", "cmpl-1", "demo", 1, include_usage=False)
    # Mid-stream chunks carry finish_reason null, as OpenAI's do (the SDK does not
    # validate stream chunks strictly); check them as JSON.
    chunk = _data(enc.chunk("hi"))
    assert chunk["object"] == "text_completion"
    assert chunk["choices"] == [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": None}]
    finish = CompletionChunk.model_validate(
        _data(enc.finish(pb.GenerateStreamResponse(finish_reason=pb.FINISH_REASON_STOP)))
    )
    assert finish.choices[0].finish_reason == "stop"


def test_whole_bodies() -> None:
    usage = pb.Usage(prompt_tokens=5, completion_tokens=2)
    chat = ChatCompletion.model_validate(
        orjson.loads(
            Encoder("chat", "c", "m", 1, False).whole(
                pb.GenerateResponse(text="hello", finish_reason=pb.FINISH_REASON_STOP, usage=usage)
            )
        )
    )
    assert chat.choices[0].message.content == "hello"
    assert chat.usage is not None
    assert chat.usage.total_tokens == 7
    completion = Completion.model_validate(
        orjson.loads(
            Encoder("completion", "c", "m", 1, False).whole(
                pb.GenerateResponse(text="x", finish_reason=pb.FINISH_REASON_LENGTH, usage=usage)
            )
        )
    )
    assert completion.choices[0].finish_reason == "length"


def _logprob(token: str, value: float, *alternatives: tuple[str, float]) -> pb.TokenLogprob:
    return pb.TokenLogprob(
        token=token,
        logprob=value,
        bytes=token.encode(),
        top_logprobs=[
            pb.TokenLogprob(token=t, logprob=v, bytes=t.encode()) for t, v in alternatives
        ],
    )


CALL = pb.ToolCall(id="chatcmpl-tool-1", name="get_weather", arguments='{"city": "Paris"}')


def test_whole_chat_with_choices_tool_calls_reasoning_and_logprobs() -> None:
    response = pb.GenerateResponse(
        usage=pb.Usage(prompt_tokens=5, completion_tokens=9),
        choices=[
            pb.GeneratedChoice(
                index=0, tool_calls=[CALL], finish_reason=pb.FINISH_REASON_TOOL_CALLS,
                reasoning="The user wants weather.",
            ),
            pb.GeneratedChoice(
                index=1, text="Sunny", finish_reason=pb.FINISH_REASON_STOP,
                logprobs=[_logprob("Sunny", -0.25, ("Sunny", -0.25), ("Rain", -1.5))],
            ),
        ],
    )  # fmt: skip
    enc = Encoder("chat", "c", "m", 1, False, choices=2, logprobs=True)
    raw = orjson.loads(enc.whole(response))
    chat = ChatCompletion.model_validate(raw)
    first, second = chat.choices
    assert first.index == 0
    assert first.finish_reason == "tool_calls"
    assert first.message.content is None
    assert raw["choices"][0]["message"]["content"] is None  # null, not absent
    assert first.message.model_extra == {"reasoning_content": "The user wants weather."}
    (call,) = first.message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == (
        "chatcmpl-tool-1",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert first.logprobs is not None
    assert first.logprobs.content == []
    assert (second.index, second.message.content, second.finish_reason) == (1, "Sunny", "stop")
    assert "reasoning_content" not in raw["choices"][1]["message"]
    assert second.logprobs is not None
    (token,) = second.logprobs.content or []
    assert (token.token, token.logprob, token.bytes) == ("Sunny", -0.25, list(b"Sunny"))
    assert [(t.token, t.logprob) for t in token.top_logprobs] == [("Sunny", -0.25), ("Rain", -1.5)]
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 9


def test_whole_completion_with_logprobs() -> None:
    response = pb.GenerateResponse(
        usage=pb.Usage(prompt_tokens=1, completion_tokens=2),
        choices=[
            pb.GeneratedChoice(
                text="ab",
                finish_reason=pb.FINISH_REASON_LENGTH,
                logprobs=[_logprob("a", -0.5, ("a", -0.5), ("c", -2.0)), _logprob("b", -0.125)],
            )
        ],
    )
    raw = orjson.loads(Encoder("completion", "c", "m", 1, False, logprobs=True).whole(response))
    logprobs = Completion.model_validate(raw).choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens == ["a", "b"]
    assert logprobs.token_logprobs == [-0.5, -0.125]
    assert logprobs.top_logprobs == [{"a": -0.5, "c": -2.0}, {}]
    assert logprobs.text_offset == [0, 1]


class Weather(BaseModel):
    city: str


def test_a_tool_call_stream_is_what_the_sdk_stream_helper_assembles() -> None:
    """Our chunks, through the SDK's own stream accumulator (what
    `client.chat.completions.stream(...)` uses): a typed tool call, and a second choice."""
    enc = Encoder("chat", "c", "m", 1, include_usage=True, choices=2)
    messages = [
        pb.GenerateStreamResponse(index=0, reasoning_delta="Weather: call the tool."),
        pb.GenerateStreamResponse(
            index=0, token_count=1,
            tool_calls=[pb.ToolCallDelta(index=0, id="call_a", name="get_weather")],
        ),
        pb.GenerateStreamResponse(index=1, text_delta="Sun", token_count=1),
        pb.GenerateStreamResponse(
            index=0, token_count=2,
            tool_calls=[pb.ToolCallDelta(index=0, arguments_delta='{"city": ')],
        ),
        pb.GenerateStreamResponse(
            index=0, token_count=1,
            tool_calls=[pb.ToolCallDelta(index=0, arguments_delta='"Paris"}')],
        ),
        pb.GenerateStreamResponse(index=1, text_delta="ny", token_count=1),
        pb.GenerateStreamResponse(index=1, finish_reason=pb.FINISH_REASON_STOP),
        pb.GenerateStreamResponse(index=0, finish_reason=pb.FINISH_REASON_TOOL_CALLS),
    ]  # fmt: skip
    stream = enc.opening() + b"".join(enc.delta(m) for m in messages)
    stream += b"".join(enc.finish(m) for m in messages if m.finish_reason)
    stream += enc.usage(pb.Usage(prompt_tokens=4, completion_tokens=6))
    events = _events(stream)
    first_call = events[3]["choices"][0]["delta"]["tool_calls"][0]  # type: ignore[index]
    assert first_call == {
        "index": 0, "id": "call_a", "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }  # fmt: skip
    later = events[5]["choices"][0]["delta"]["tool_calls"][0]  # type: ignore[index]
    assert later == {"index": 0, "function": {"arguments": '{"city": '}}
    state = ChatCompletionStreamState(
        input_tools=[openai.pydantic_function_tool(Weather, name="get_weather")]
    )
    for event in events:
        state.handle_chunk(ChatCompletionChunk.model_validate(event))
    final = state.get_final_completion()
    tools, text = final.choices
    assert tools.finish_reason == "tool_calls"
    (call,) = tools.message.tool_calls or []
    assert call.function.parsed_arguments == Weather(city="Paris")
    assert (call.id, call.function.name) == ("call_a", "get_weather")
    assert tools.message.model_extra["reasoning_content"] == "Weather: call the tool."  # type: ignore[index]
    assert (text.index, text.message.content, text.finish_reason) == (1, "Sunny", "stop")
    assert final.usage is not None
    assert final.usage.completion_tokens == 6


def test_stream_logprobs_per_chunk() -> None:
    chat = Encoder("chat", "c", "m", 1, include_usage=False, logprobs=True)
    message = pb.GenerateStreamResponse(
        text_delta="Hi", token_count=1, logprobs=[_logprob("Hi", -0.5, ("Hi", -0.5), ("Yo", -1.0))]
    )
    chunk = ChatCompletionChunk.model_validate(_data(chat.delta(message)))
    assert chunk.choices[0].delta.content == "Hi"
    assert chunk.choices[0].logprobs is not None
    (token,) = chunk.choices[0].logprobs.content or []
    assert [t.token for t in token.top_logprobs] == ["Hi", "Yo"]
    text = Encoder("completion", "c", "m", 1, include_usage=False, choices=2, logprobs=True)
    offsets = []
    for piece in ("ab", "c"):
        m = pb.GenerateStreamResponse(
            index=1, text_delta=piece, token_count=1, logprobs=[_logprob(piece, -1.0)]
        )
        data = _data(text.delta(m))
        choice = data["choices"][0]  # type: ignore[index]
        assert choice["index"] == 1
        offsets += choice["logprobs"]["text_offset"]
    assert offsets == [0, 2]  # each choice's offsets run on from its earlier chunks


def test_an_empty_message_makes_no_chunk() -> None:
    enc = Encoder("chat", "c", "m", 1, include_usage=False)
    assert enc.delta(pb.GenerateStreamResponse(token_count=1)) == b""
