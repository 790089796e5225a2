"""Tools, images and reasoning through the Messages API, with the official `anthropic` SDK,
on every engine's simulator run as `make run`'s demo models are (tool-call parser,
images, a reasoning parser where the engine has one: see `conftest.features`)."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from anthropic.types import Message, MessageParam, TextBlock, ToolParam, ToolUseBlock
from PIL import Image

from tests.edge.anthropic.support import client
from tests.support.edge import Edge
from tests.support.stacks import ENGINES

pytestmark = pytest.mark.usefixtures("features_quiet_after")

WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}
TIME: ToolParam = {
    "name": "get_time",
    "description": "The current time in a time zone.",
    "input_schema": {
        "type": "object",
        "properties": {"zone": {"type": "string"}},
        "required": ["zone"],
    },
}
TOOLS = [WEATHER, TIME]
ASK: list[MessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]


def calls_of(message: Message) -> list[ToolUseBlock]:
    return [b for b in message.content if isinstance(b, ToolUseBlock)]


def text_of(message: Message) -> str:
    return "".join(b.text for b in message.content if isinstance(b, TextBlock))


def weather_input(call: ToolUseBlock) -> None:
    assert call.name == "get_weather"
    assert isinstance(call.input, dict)
    assert isinstance(call.input["city"], str)
    assert call.input["unit"] in ("celsius", "fahrenheit")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "choice",
    [{"type": "any"}, {"type": "tool", "name": "get_weather"}],
    ids=["any", "tool"],
)
async def test_a_tool_loop(features: Edge, engine: str, choice: Any) -> None:
    """tool_use → tool_result → text, as an agent runs it: the SDK's own message goes back."""
    sdk = client(features)
    model = f"demo-{engine}"
    first = await sdk.messages.create(
        model=model, max_tokens=400, messages=ASK, tools=TOOLS, tool_choice=choice
    )
    assert first.stop_reason == "tool_use"
    (call,) = calls_of(first)
    weather_input(call)
    assert call.id
    messages: list[MessageParam] = [
        *ASK,
        first.to_param(),
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees, sunny"}
            ],
        },
    ]
    final = await sdk.messages.create(
        model=model, max_tokens=400, messages=messages, tools=TOOLS, tool_choice={"type": "auto"}
    )
    assert not calls_of(final)
    assert text_of(final)
    assert final.stop_reason in ("end_turn", "max_tokens")


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_streamed_tool_use_is_the_unary_one(features: Edge, engine: str) -> None:
    sdk = client(features)
    args: dict[str, Any] = {
        "model": f"demo-{engine}",
        "max_tokens": 400,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "extra_body": {"temperature": 0.0},
    }
    unary = await sdk.messages.create(**args)
    fragments = 0
    async with sdk.messages.stream(**args) as stream:
        async for event in stream:
            if event.type == "input_json":
                fragments += 1
        final = await stream.get_final_message()
    assert fragments >= 2, "the input arrives in fragments"
    assert final.stop_reason == "tool_use"
    (streamed,) = calls_of(final)
    (whole,) = calls_of(unary)
    weather_input(streamed)
    assert (streamed.name, streamed.input) == (whole.name, whole.input)


@pytest.mark.parametrize("engine", ENGINES)
async def test_disable_parallel_tool_use_makes_one_call(features: Edge, engine: str) -> None:
    message = await client(features).messages.create(
        model=f"demo-{engine}",
        max_tokens=600,
        messages=[{"role": "user", "content": "Use get_time and get_weather, please."}],
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert [c.name for c in calls_of(message)] == ["get_weather"]


def png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_image_block_counts_in_the_input(features: Edge, engine: str) -> None:
    sdk = client(features)
    model = f"demo-{engine}"
    text_only = await sdk.messages.create(
        model=model,
        max_tokens=50,
        messages=[{"role": "user", "content": "What is in the picture?"}],
    )
    with_image = await sdk.messages.create(
        model=model,
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in the picture?"},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": png(64, 48),
                        },
                    },
                ],
            }
        ],
    )
    assert text_of(with_image)
    assert with_image.usage.input_tokens > text_only.usage.input_tokens


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # engines with a reasoning parser
async def test_reasoning_is_left_out(features: Edge, engine: str) -> None:
    """The engine's reasoning is not an answer block (no `thinking` is served)."""
    sdk = client(features)
    args: dict[str, Any] = {
        "model": f"demo-{engine}",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Describe a switchyard."}],
    }
    whole = await sdk.messages.create(**args)
    async with sdk.messages.stream(**args) as stream:
        streamed = await stream.get_final_message()
    for message in (whole, streamed):
        assert [b.type for b in message.content] == ["text"]
        assert text_of(message)
        assert "<think>" not in text_of(message)
