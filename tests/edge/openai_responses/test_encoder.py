"""The Responses encoder: every event it writes is one of the SDK's own event types (validated
with its pydantic models), numbered from 0 in order, and its whole answers are `Response`s."""

from __future__ import annotations

from typing import Any, get_args

import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel

from switchyard.edge.errors import OpenAIError
from switchyard.edge.openai_responses.encoder import ResponseEncoder
from switchyard.edge.openai_responses.pipeline import head
from switchyard.edge.openai_responses.schemas import CreateResponse
from switchyard.inference.v1 import inference_pb2 as pb


def _event_models() -> dict[str, type[BaseModel]]:
    """The SDK's event model for each event type (its union is tagged by `type`)."""
    (union, *_) = get_args(ResponseStreamEvent)
    models = {}
    for model in get_args(union):
        (kind,) = get_args(model.model_fields["type"].annotation)
        models[kind] = model
    return models


EVENTS = _event_models()
LENGTH, STOP, TOOLS = pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP, pb.FINISH_REASON_TOOL_CALLS


def _encoder(**fields: Any) -> ResponseEncoder:
    body = CreateResponse.model_validate({"model": "demo", "input": "hi", **fields})
    return ResponseEncoder(head(body, "resp_1", 1700000000))


def _events(data: bytes) -> list[dict[str, Any]]:
    """The SSE events in `data`, each checked: its `event:` line is its data's type."""
    events = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        name, payload = block.split("\n")
        assert name.startswith("event: ")
        assert payload.startswith("data: ")
        event = orjson.loads(payload[len("data: ") :])
        assert event["type"] == name[len("event: ") :]
        EVENTS[event["type"]].model_validate(event)  # the SDK's own model of it
        events.append(event)
    return events


def _stream(encoder: ResponseEncoder, messages: list[pb.GenerateStreamResponse]) -> bytes:
    """What a stream of `messages` sends, as `Generation` calls the encoder."""
    out = encoder.opening()
    for message in messages:
        out += encoder.delta(message)
        if message.finish_reason:
            out += encoder.finish(message)
        if message.HasField("usage"):
            out += encoder.usage(message.usage)
    return out + encoder.closing()


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


USAGE = pb.Usage(prompt_tokens=7, completion_tokens=4)


def test_a_text_stream() -> None:
    encoder = _encoder()
    events = _events(
        _stream(
            encoder,
            [
                pb.GenerateStreamResponse(text_delta="Hel", token_count=1),
                pb.GenerateStreamResponse(text_delta="lo", token_count=1, finish_reason=STOP),
                pb.GenerateStreamResponse(usage=USAGE),
            ],
        )
    )
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert _types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[6]["text"] == "Hello"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed"
    assert final.output_text == "Hello"
    assert final.usage is not None
    assert final.usage.total_tokens == 11
    assert encoder.finished
    assert encoder.final == events[-1]["response"]


def test_reasoning_then_text_are_two_items() -> None:
    events = _events(
        _stream(
            _encoder(),
            [
                pb.GenerateStreamResponse(reasoning_delta="Think", token_count=1),
                pb.GenerateStreamResponse(reasoning_delta="ing.", token_count=1),
                pb.GenerateStreamResponse(text_delta="Answer", token_count=1, finish_reason=STOP),
                pb.GenerateStreamResponse(usage=USAGE),
            ],
        )
    )
    added = [e for e in events if e["type"] == "response.output_item.added"]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["output_index"] for e in added] == [0, 1]
    assert [e["item"]["type"] for e in done] == ["reasoning", "message"]
    # The reasoning item is done before the message opens.
    assert _types(events).index("response.reasoning_text.done") < events.index(added[1])
    final = Response.model_validate(events[-1]["response"])
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.content is not None
    assert reasoning.content[0].text == "Thinking."
    assert final.output_text == "Answer"


def test_parallel_function_calls() -> None:
    events = _events(
        _stream(
            _encoder(),
            [
                pb.GenerateStreamResponse(
                    tool_calls=[
                        pb.ToolCallDelta(index=0, id="call_a", name="f", arguments_delta="{")
                    ]
                ),
                pb.GenerateStreamResponse(
                    tool_calls=[pb.ToolCallDelta(index=0, arguments_delta='"x": 1}')]
                ),
                pb.GenerateStreamResponse(
                    tool_calls=[
                        pb.ToolCallDelta(index=1, id="call_b", name="g", arguments_delta="{}")
                    ]
                ),
                pb.GenerateStreamResponse(finish_reason=TOOLS, usage=USAGE),
            ],
        )
    )
    argument_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["output_index"], e["arguments"]) for e in argument_done] == [
        (0, '{"x": 1}'),
        (1, "{}"),
    ]
    final = Response.model_validate(events[-1]["response"])
    assert [(c.type, c.call_id, c.name) for c in final.output] == [  # type: ignore[union-attr]
        ("function_call", "call_a", "f"),
        ("function_call", "call_b", "g"),
    ]
    assert final.status == "completed"


def test_the_length_limit_is_incomplete() -> None:
    encoder = _encoder(max_output_tokens=1)
    events = _events(
        _stream(
            encoder,
            [
                pb.GenerateStreamResponse(text_delta="A", token_count=1, finish_reason=LENGTH),
                pb.GenerateStreamResponse(usage=pb.Usage(prompt_tokens=3, completion_tokens=1)),
            ],
        )
    )
    assert events[-1]["type"] == "response.incomplete"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "incomplete"
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert final.max_output_tokens == 1


def test_an_error_after_the_start_is_response_failed_in_sequence() -> None:
    encoder = _encoder()
    sent = encoder.opening() + encoder.delta(pb.GenerateStreamResponse(text_delta="Hi"))
    sent += encoder.stream_event(OpenAIError(502, "The model backend failed."))
    events = _events(sent)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    failed = events[-1]
    assert failed["type"] == "response.failed"
    response = Response.model_validate(failed["response"])
    assert response.status == "failed"
    assert response.error is not None
    assert response.error.code == "server_error"
    assert not encoder.finished  # nothing to keep
    # Before the start, an error is OpenAI's JSON error.
    status, body, _ = encoder.answer(OpenAIError.invalid("bad", "input"))
    assert status == 400
    assert orjson.loads(body)["error"]["param"] == "input"


def test_a_whole_response_with_reasoning_text_and_a_call() -> None:
    encoder = _encoder(
        instructions="Be brief.",
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        metadata={"k": "v"},
        temperature=0.5,
    )
    body = encoder.whole(
        pb.GenerateResponse(
            choices=[
                pb.GeneratedChoice(
                    text="Calling.",
                    reasoning="Need f.",
                    tool_calls=[pb.ToolCall(id="call_1", name="f", arguments="{}")],
                    finish_reason=TOOLS,
                )
            ],
            usage=USAGE,
        )
    )
    response = Response.model_validate(orjson.loads(body))
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output_text == "Calling."
    assert response.instructions == "Be brief."
    assert response.metadata == {"k": "v"}
    assert response.temperature == 0.5
    assert response.tools[0].name == "f"  # type: ignore[union-attr]
    assert response.usage is not None
    assert response.usage.input_tokens == 7
    assert encoder.finished
