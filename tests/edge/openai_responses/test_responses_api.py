"""OpenAI's Responses API through the official `openai` SDK, on every engine: create (a
string and items, instructions), retrieve, stream (events in order, the SDK's own final
response), parse with a pydantic format, a function-tool loop chained by
`previous_response_id`, input items a page at a time, delete, tenants, `store: false`,
`max_output_tokens`, an image, and a client leaving a stream."""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import openai
import pytest
from openai.types.responses import (
    FunctionToolParam,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseReasoningItem,
)
from pydantic import BaseModel

from tests.edge.conftest import settled, sim_stats
from tests.edge.test_chat_features import png
from tests.support.edge import Edge
from tests.support.polling import eventually
from tests.support.stacks import ENGINES, Stack

pytestmark = pytest.mark.usefixtures("responses_quiet_after")

#: Engines with a reasoning parser (TGI has none).
REASONING = ("vllm", "sglang")

WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
    "strict": False,
}


def _messages(output: list[Any]) -> list[ResponseOutputMessage]:
    return [item for item in output if isinstance(item, ResponseOutputMessage)]


def _first_text(item: Any) -> str:
    """The text of an input item's first part."""
    text: str = item.content[0].text
    return text


def _text(output: list[Any]) -> str:
    return "".join(
        part.text for m in _messages(output) for part in m.content if part.type == "output_text"
    )


@pytest.mark.parametrize("engine", ENGINES)
async def test_create_then_retrieve(responses_edge: Edge, engine: str) -> None:
    client = responses_edge.client()
    created = await client.responses.create(
        model=f"demo-{engine}",
        input="Describe a switchyard.",
        instructions="Answer in one paragraph.",
        max_output_tokens=1500,
        metadata={"case": "create"},
    )
    assert created.id.startswith("resp_")
    assert created.object == "response"
    assert created.status == "completed"
    assert created.model == f"demo-{engine}"
    assert created.instructions == "Answer in one paragraph."
    assert created.metadata == {"case": "create"}
    assert created.output_text  # the SDK's own sum of the output's text
    (message,) = _messages(created.output)
    assert message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert message.content[0].annotations == []
    reasoning = [item for item in created.output if isinstance(item, ResponseReasoningItem)]
    assert bool(reasoning) == (engine in REASONING)
    assert created.usage is not None
    assert created.usage.input_tokens > 0
    assert created.usage.output_tokens > 0
    assert created.usage.total_tokens == created.usage.input_tokens + created.usage.output_tokens

    retrieved = await client.responses.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()


@pytest.mark.parametrize("engine", ENGINES)
async def test_items_in_and_their_list(responses_edge: Edge, engine: str) -> None:
    client = responses_edge.client()
    created = await client.responses.create(
        model=f"demo-{engine}",
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]},
            {"type": "message", "role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one."},
        ],
        max_output_tokens=1500,
    )
    assert created.status == "completed"
    assert created.output_text
    listed = await client.responses.input_items.list(created.id, order="asc")
    assert [(i.type, getattr(i, "role", None)) for i in listed.data] == [
        ("message", "developer"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert all(i.id for i in listed.data)
    assert _first_text(listed.data[1]) == "Name a colour."


async def test_input_items_a_page_at_a_time(responses_edge: Edge) -> None:
    client = responses_edge.client()
    words = ["one", "two", "three", "four", "five"]
    created = await client.responses.create(
        model="demo-vllm",
        input=[{"role": "user", "content": w} for w in words],
        max_output_tokens=20,
    )
    orders: list[tuple[Literal["asc", "desc"], list[str]]] = [
        ("asc", words),
        ("desc", words[::-1]),
    ]
    for order, expected in orders:
        first = await client.responses.input_items.list(created.id, limit=2, order=order)
        assert first.has_more
        assert len(first.data) == 2
        # The SDK follows the cursor (`after`: the last id of each page) to the end.
        every = [
            item
            async for item in client.responses.input_items.list(created.id, limit=2, order=order)
        ]
        assert [_first_text(item) for item in every] == expected
        last = await client.responses.input_items.list(
            created.id,
            limit=2,
            order=order,
            after=every[2].id,
        )
        assert [i.id for i in last.data] == [i.id for i in every[3:]]
        assert not last.has_more


@pytest.mark.parametrize("engine", ENGINES)
async def test_stream_events_in_order_and_the_final_response(
    responses_edge: Edge, engine: str
) -> None:
    client = responses_edge.client()
    types: list[str] = []
    sequence: list[int] = []
    deltas: list[str] = []
    async with client.responses.stream(
        model=f"demo-{engine}", input="Describe a switchyard.", max_output_tokens=1500
    ) as stream:
        async for event in stream:
            types.append(event.type)
            sequence.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert sequence == list(range(len(sequence)))
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    message_events = [t for t in types if "output_text" in t or "content_part" in t]
    assert message_events[0] == "response.content_part.added"
    assert message_events[-2:] == ["response.output_text.done", "response.content_part.done"]
    assert types.count("response.output_item.added") == types.count("response.output_item.done")
    assert ("response.reasoning_text.delta" in types) == (engine in REASONING)
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)
    stored = await client.responses.retrieve(final.id)
    assert _text(stored.output) == final.output_text
    assert stored.usage == final.usage


class Weather(BaseModel):
    city: str
    degrees: int


@pytest.mark.parametrize("engine", ENGINES)
async def test_parse_with_a_pydantic_format(responses_edge: Edge, engine: str) -> None:
    client = responses_edge.client()
    parsed = await client.responses.parse(
        model=f"demo-{engine}",
        input="The weather in Paris, as JSON.",
        text_format=Weather,
        max_output_tokens=1500,
    )
    assert parsed.status == "completed"
    assert isinstance(parsed.output_parsed, Weather)
    assert parsed.text is not None
    assert parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_function_tool_loop_chained_by_previous_response_id(
    responses_edge: Edge, engine: str
) -> None:
    client = responses_edge.client()
    first = await client.responses.create(
        model=f"demo-{engine}",
        input="What is the weather in Paris? Use get_weather.",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=1500,
    )
    calls = [item for item in first.output if isinstance(item, ResponseFunctionToolCall)]
    assert calls, first.output
    call = calls[0]
    assert call.name == "get_weather"
    assert call.call_id
    arguments = json.loads(call.arguments)
    assert arguments["unit"] in ("celsius", "fahrenheit")
    assert first.tools[0].name == "get_weather"  # type: ignore[union-attr]

    final = await client.responses.create(
        model=f"demo-{engine}",
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": c.call_id, "output": "18 degrees, sunny"}
            for c in calls
        ],
        tools=[WEATHER],
        tool_choice="auto",
        max_output_tokens=1500,
    )
    assert final.status == "completed"
    assert final.previous_response_id == first.id
    assert not [item for item in final.output if isinstance(item, ResponseFunctionToolCall)]
    assert final.output_text
    # The engine read the whole conversation: the same prompt as when it is sent whole.
    conversation: Any = [
        {"role": "user", "content": "What is the weather in Paris? Use get_weather."},
        *[
            {
                "type": "function_call",
                "call_id": c.call_id,
                "name": c.name,
                "arguments": c.arguments,
            }
            for c in calls
        ],
        *[
            {
                "type": "function_call_output",
                "call_id": c.call_id,
                "output": "18 degrees, sunny",
            }
            for c in calls
        ],
    ]
    whole = await client.responses.create(
        model=f"demo-{engine}",
        input=conversation,
        tools=[WEATHER],
        tool_choice="auto",
        max_output_tokens=1500,
        store=False,
    )
    assert final.usage is not None
    assert whole.usage is not None
    assert final.usage.input_tokens == whole.usage.input_tokens
    listed = await client.responses.input_items.list(final.id, order="asc")
    assert [i.type for i in listed.data] == ["function_call_output"] * len(calls)


async def test_a_streamed_function_call(responses_edge: Edge) -> None:
    client = responses_edge.client()
    arguments: list[str] = []
    async with client.responses.stream(
        model="demo-vllm",
        input="What is the weather in Paris? Use get_weather.",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=1500,
    ) as stream:
        arguments.extend(
            [
                event.delta
                async for event in stream
                if event.type == "response.function_call_arguments.delta"
            ]
        )
        final = await stream.get_final_response()
    (call,) = [item for item in final.output if isinstance(item, ResponseFunctionToolCall)]
    assert call.arguments == "".join(arguments)
    json.loads(call.arguments)
    kept = (await client.responses.retrieve(final.id)).output[-1]
    assert isinstance(kept, ResponseFunctionToolCall)
    assert (kept.id, kept.call_id, kept.arguments) == (call.id, call.call_id, call.arguments)


async def test_delete_then_not_found(responses_edge: Edge) -> None:
    client = responses_edge.client()
    created = await client.responses.create(model="demo-vllm", input="hi", max_output_tokens=10)
    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.retrieve(created.id)
    assert created.id in caught.value.message
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_items.list(created.id)


async def test_another_tenants_response_is_not_found(responses_edge: Edge) -> None:
    mine = responses_edge.client()
    theirs = responses_edge.client("other-tenant")
    created = await mine.responses.create(model="demo-vllm", input="hi", max_output_tokens=10)
    with pytest.raises(openai.NotFoundError):
        await theirs.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.responses.delete(created.id)
    # OpenAI answers an unknown previous_response_id with a 400 naming it.
    with pytest.raises(openai.BadRequestError) as caught:
        await theirs.responses.create(
            model="demo-vllm", input="and?", previous_response_id=created.id
        )
    assert caught.value.code == "previous_response_not_found"
    assert (await mine.responses.retrieve(created.id)).id == created.id  # still there


async def test_store_false_keeps_nothing(responses_edge: Edge) -> None:
    client = responses_edge.client()
    created = await client.responses.create(
        model="demo-tgi", input="hi", max_output_tokens=10, store=False
    )
    assert (created.model_extra or {})["store"] is False
    assert created.output_text
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


@pytest.mark.parametrize("stream", [False, True])
async def test_max_output_tokens_is_incomplete(responses_edge: Edge, stream: bool) -> None:
    client = responses_edge.client()
    if stream:
        types: list[str] = []
        response_stream = await client.responses.create(
            model="demo-tgi", input="Describe a switchyard.", max_output_tokens=5, stream=True
        )
        async for event in response_stream:
            types.append(event.type)
            if event.type == "response.incomplete":
                response = event.response
        assert types[-1] == "response.incomplete"
    else:
        response = await client.responses.create(
            model="demo-tgi", input="Describe a switchyard.", max_output_tokens=5
        )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    assert (await client.responses.retrieve(response.id)).status == "incomplete"


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_image_input(responses_edge: Edge, engine: str) -> None:
    client = responses_edge.client()
    question: Any = {"type": "input_text", "text": "What is in this image?"}
    text_only = await client.responses.create(
        model=f"demo-{engine}",
        input=[{"role": "user", "content": [question]}],
        max_output_tokens=1500,
    )
    with_image = await client.responses.create(
        model=f"demo-{engine}",
        input=[
            {
                "role": "user",
                "content": [
                    question,
                    {"type": "input_image", "image_url": png(64, 48), "detail": "low"},
                ],
            }
        ],
        max_output_tokens=1500,
    )
    assert with_image.output_text
    assert with_image.usage is not None
    assert text_only.usage is not None
    assert with_image.usage.input_tokens > text_only.usage.input_tokens  # the image counts
    (item,) = (await client.responses.input_items.list(with_image.id)).data
    assert [p.type for p in getattr(item, "content", [])] == ["input_text", "input_image"]


async def _aborted(stack: Stack) -> int:
    aborted: int = (await sim_stats(stack))["aborted"]
    return aborted


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
async def test_client_leaving_a_stream_aborts_the_engine(
    responses_edge: Edge, feature_stacks: dict[str, Stack], engine: str
) -> None:
    stack = feature_stacks[engine]
    before = await _aborted(stack)
    body = {
        "model": f"demo-{engine}",
        "input": "go",
        "stream": True,
        "max_output_tokens": 3000,
    }
    # Past the first few tokens (reasoning's opening tag shows nothing) and held there
    # until the client leaves.
    async with (
        stack.stalled(count=1, after=5),
        httpx.AsyncClient(timeout=60) as client,
        client.stream(
            "POST",
            f"{responses_edge.url}/v1/responses",
            json=body,
            headers=responses_edge.auth(),
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"delta":"' in line:
                break  # something generated: leave mid-stream

        async def aborted() -> bool:
            return await _aborted(stack) > before

        await eventually(aborted, what="the engine saw the abort")
    await settled(responses_edge, feature_stacks)


async def test_a_request_is_recorded_as_the_responses_api(responses_edge: Edge) -> None:
    response = await responses_edge.client().responses.with_raw_response.create(
        model="demo-vllm",
        input="hi",
        max_output_tokens=10,
        extra_headers={"x-request-id": "resp-record-1"},
    )
    assert response.headers["x-request-id"] == "resp-record-1"
    record = await responses_edge.record("resp-record-1")
    assert record["api"] == "responses"
    assert record["status"] == 200
    assert record["completion_tokens"] > 0
