"""The Messages API's encoder: every body and event validated with the `anthropic` SDK's own
types, and a stream folded by the SDK's accumulator into the message a whole answer gives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent, ToolUseBlock
from pydantic import TypeAdapter

from switchyard.edge.anthropic.encoding import MessagesEncoder
from switchyard.edge.errors import OpenAIError
from switchyard.inference.v1 import inference_pb2 as pb

EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each event in `raw`; every event has both lines."""
    out = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk:
            continue
        name, data = chunk.split("\n")
        assert name.startswith("event: ")
        assert data.startswith("data: ")
        out.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return out


def run(encoder: MessagesEncoder, messages: list[pb.GenerateStreamResponse]) -> bytes:
    """What `Generation` sends for these messages, in its order."""
    out = encoder.opening()
    for m in messages:
        out += encoder.delta(m)
        if m.finish_reason:
            out += encoder.finish(m)
        if m.HasField("usage"):
            out += encoder.usage(m.usage)
    return out + encoder.closing()


def fold(raw: bytes) -> Message:
    """The SDK's own reading of a stream: each event typed, then accumulated."""
    snapshot: Message | None = None
    buffers: dict[int, bytes] = {}
    for name, data in sse(raw):
        if name == "ping":
            assert data == {"type": "ping"}
            continue
        parsed = EVENTS.validate_python(data)
        assert parsed.type == name  # the event line names the data's type
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    assert snapshot is not None
    return snapshot


def test_a_text_stream_is_anthropics_event_sequence() -> None:
    raw = run(
        MessagesEncoder("msg_1", "demo"),
        [
            pb.GenerateStreamResponse(text_delta="Hel", token_count=1),
            pb.GenerateStreamResponse(text_delta='lo "there"', token_count=2),
            pb.GenerateStreamResponse(
                finish_reason=pb.FINISH_REASON_STOP,
                usage=pb.Usage(prompt_tokens=7, completion_tokens=3),
            ),
        ],
    )
    names = [name for name, _ in sse(raw)]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = fold(raw)
    assert message.id == "msg_1"
    assert message.model == "demo"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == 'Hello "there"'  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (7, 3)


def test_text_then_tool_calls_are_blocks_in_turn() -> None:
    raw = run(
        MessagesEncoder("msg_2", "demo"),
        [
            pb.GenerateStreamResponse(text_delta="Let me look.", token_count=3),
            pb.GenerateStreamResponse(
                tool_calls=[pb.ToolCallDelta(index=0, id="call_a", name="get_weather")]
            ),
            pb.GenerateStreamResponse(
                tool_calls=[pb.ToolCallDelta(index=0, arguments_delta='{"city": "Pa')]
            ),
            pb.GenerateStreamResponse(
                tool_calls=[pb.ToolCallDelta(index=0, arguments_delta='ris"}')]
            ),
            pb.GenerateStreamResponse(
                tool_calls=[
                    pb.ToolCallDelta(index=1, id="call_b", name="get_time", arguments_delta="{}")
                ]
            ),
            pb.GenerateStreamResponse(
                finish_reason=pb.FINISH_REASON_TOOL_CALLS,
                usage=pb.Usage(prompt_tokens=20, completion_tokens=15),
            ),
        ],
    )
    events = sse(raw)
    starts = [
        (d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"
    ]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    assert stops == [0, 1, 2]
    # No block's events interleave with another's: each stops before the next starts.
    order = [(n, d.get("index")) for n, d in events if n.startswith("content_block")]
    opened: int | None = None
    for name, index in order:
        if name == "content_block_start":
            assert opened is None
            opened = index
        else:
            assert index == opened
            if name == "content_block_stop":
                opened = None
    message = fold(raw)
    text, weather, time = message.content
    assert text.type == "text"
    assert isinstance(weather, ToolUseBlock)
    assert isinstance(time, ToolUseBlock)
    assert (weather.id, weather.name, weather.input) == ("call_a", "get_weather", {"city": "Paris"})
    assert (time.id, time.name, time.input) == ("call_b", "get_time", {})
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop", "reason"),
    [
        (pb.FINISH_REASON_STOP, "", "end_turn"),
        (pb.FINISH_REASON_STOP, "END", "stop_sequence"),
        (pb.FINISH_REASON_LENGTH, "", "max_tokens"),
        (pb.FINISH_REASON_TOOL_CALLS, "", "tool_use"),
    ],
)
def test_stop_reasons_streamed_and_whole(
    finish: pb.FinishReason.ValueType, stop: str, reason: str
) -> None:
    streamed = fold(
        run(
            MessagesEncoder("msg_3", "demo"),
            [
                pb.GenerateStreamResponse(text_delta="x", token_count=1),
                pb.GenerateStreamResponse(
                    finish_reason=finish, stop_sequence=stop, usage=pb.Usage(completion_tokens=1)
                ),
            ],
        )
    )
    whole = Message.model_validate(
        orjson.loads(
            MessagesEncoder("msg_3", "demo").whole(
                pb.GenerateResponse(
                    choices=[
                        pb.GeneratedChoice(text="x", finish_reason=finish, stop_sequence=stop)
                    ],
                    usage=pb.Usage(completion_tokens=1),
                )
            )
        )
    )
    for message in (streamed, whole):
        assert message.stop_reason == reason
        assert message.stop_sequence == (stop or None)


@pytest.mark.parametrize(
    ("finish", "reason"),
    [(pb.FINISH_REASON_STOP, "tool_use"), (pb.FINISH_REASON_LENGTH, "max_tokens")],
)
def test_a_call_that_finished_with_stop_is_tool_use(
    finish: pb.FinishReason.ValueType, reason: str
) -> None:
    """Engines finish a named tool choice's call with "stop" (as OpenAI does); for Anthropic
    a message whose model called a tool is "tool_use", unless it was cut short."""
    call = pb.ToolCallDelta(index=0, id="c1", name="f", arguments_delta="{}")
    streamed = fold(
        run(
            MessagesEncoder("msg_8", "demo"),
            [
                pb.GenerateStreamResponse(tool_calls=[call], token_count=3),
                pb.GenerateStreamResponse(
                    finish_reason=finish, usage=pb.Usage(completion_tokens=3)
                ),
            ],
        )
    )
    whole = Message.model_validate(
        orjson.loads(
            MessagesEncoder("msg_8", "demo").whole(
                pb.GenerateResponse(
                    choices=[
                        pb.GeneratedChoice(
                            finish_reason=finish,
                            tool_calls=[pb.ToolCall(id="c1", name="f", arguments="{}")],
                        )
                    ]
                )
            )
        )
    )
    assert streamed.stop_reason == whole.stop_reason == reason


def test_a_whole_message_with_tool_calls() -> None:
    body = orjson.loads(
        MessagesEncoder("msg_4", "demo-vllm").whole(
            pb.GenerateResponse(
                choices=[
                    pb.GeneratedChoice(
                        text="",
                        finish_reason=pb.FINISH_REASON_TOOL_CALLS,
                        reasoning="hidden",
                        tool_calls=[
                            pb.ToolCall(id="c1", name="get_weather", arguments='{"city": "Oslo"}')
                        ],
                    )
                ],
                usage=pb.Usage(prompt_tokens=11, completion_tokens=9),
            )
        )
    )
    message = Message.model_validate(body)
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    (call,) = message.content  # no empty text block, no reasoning
    assert isinstance(call, ToolUseBlock)
    assert call.input == {"city": "Oslo"}
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 9)


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", '"text"'])
def test_tool_arguments_that_are_not_an_object_are_a_backend_error(arguments: str) -> None:
    response = pb.GenerateResponse(
        choices=[
            pb.GeneratedChoice(
                finish_reason=pb.FINISH_REASON_TOOL_CALLS,
                tool_calls=[pb.ToolCall(id="c1", name="f", arguments=arguments)],
            )
        ]
    )
    with pytest.raises(OpenAIError) as raised:
        MessagesEncoder("msg_5", "demo").whole(response)
    assert raised.value.status == 502


def test_a_fragment_of_a_closed_tool_call_is_a_backend_error() -> None:
    encoder = MessagesEncoder("msg_6", "demo")
    encoder.opening()
    encoder.delta(
        pb.GenerateStreamResponse(tool_calls=[pb.ToolCallDelta(index=0, id="a", name="f")])
    )
    encoder.delta(
        pb.GenerateStreamResponse(tool_calls=[pb.ToolCallDelta(index=1, id="b", name="g")])
    )
    with pytest.raises(OpenAIError) as raised:
        encoder.delta(
            pb.GenerateStreamResponse(tool_calls=[pb.ToolCallDelta(index=0, arguments_delta="{}")])
        )
    assert raised.value.status == 502


def test_reasoning_is_not_sent() -> None:
    message = fold(
        run(
            MessagesEncoder("msg_7", "demo"),
            [
                pb.GenerateStreamResponse(reasoning_delta="thinking...", token_count=2),
                pb.GenerateStreamResponse(text_delta="Answer.", token_count=1),
                pb.GenerateStreamResponse(
                    finish_reason=pb.FINISH_REASON_STOP, usage=pb.Usage(completion_tokens=3)
                ),
            ],
        )
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.usage.output_tokens == 3
