"""The whole chat surface through the official `openai` SDK, on every engine: tools (required,
auto, named; unary and streamed with the SDK's typed helpers; an agent loop; parallel calls),
logprobs, `n`, images, reasoning, vLLM's structured_outputs extra, and cancellation with n > 1.

The simulators here run as `make run`'s demo models do: tool-call parser on, multimodal, and a
reasoning parser where the engine has one (vLLM, SGLang); see `conftest.features`. Bad
input is in `test_chat_bad_input.py`.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall
from PIL import Image
from pydantic import BaseModel

from tests.edge.conftest import sim_stats
from tests.support.edge import Edge
from tests.support.polling import eventually
from tests.support.stacks import ENGINES, Stack

#: Engines with a reasoning parser (TGI has none).
REASONING = ("vllm", "sglang")
#: Engines that make several tool calls in one turn (TGI's tool grammar makes one).
PARALLEL = ("vllm", "sglang")
#: Engines that generate n choices in one call (TGI's adapter makes n calls).
NATIVE_N = {"vllm": True, "sglang": True, "tgi": False}


pytestmark = pytest.mark.usefixtures("features_quiet_after")

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
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
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}
TOOLS = [WEATHER, TIME]


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def calls_of(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    """The message's tool calls, every one a function call."""
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


def _weather_arguments(arguments: str) -> None:
    parsed = json.loads(arguments)
    assert isinstance(parsed["city"], str)
    assert parsed["unit"] in ("celsius", "fahrenheit")


# -- tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_tool_choice_required(features: Edge, engine: str) -> None:
    chat = await features.client().chat.completions.create(
        model=f"demo-{engine}",
        messages=ask("Use get_weather for Paris."),
        tools=TOOLS,
        tool_choice="required",
        max_tokens=400,
    )
    (choice,) = chat.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = calls_of(choice.message)
    assert [c.function.name for c in calls] == ["get_weather"]  # named in the message
    (call,) = calls
    assert call.type == "function"
    assert call.id
    _weather_arguments(call.function.arguments)
    assert chat.usage is not None
    assert chat.usage.completion_tokens > 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_named_tool_choice(features: Edge, engine: str) -> None:
    chat = await features.client().chat.completions.create(
        model=f"demo-{engine}",
        messages=ask("Use get_weather for Paris."),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=400,
    )
    calls = calls_of(chat.choices[0].message)
    assert [c.function.name for c in calls] == ["get_time"]  # the named one, whatever was asked
    assert isinstance(json.loads(calls[0].function.arguments)["zone"], str)


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_agent_loop_calls_a_tool_then_answers(features: Edge, engine: str) -> None:
    client = features.client()
    messages = ask("What is the weather in Paris? Use get_weather.")
    first = await client.chat.completions.create(
        model=f"demo-{engine}", messages=messages, tools=TOOLS, tool_choice="auto", max_tokens=400
    )
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = calls_of(first.choices[0].message)
    assert call.function.name == "get_weather"
    # As applications do: the SDK's own message goes back, then the tool's result.
    messages.append(first.choices[0].message.model_dump(exclude_none=True))  # type: ignore[arg-type]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"})
    final = await client.chat.completions.create(
        model=f"demo-{engine}", messages=messages, tools=TOOLS, tool_choice="auto", max_tokens=400
    )
    (choice,) = final.choices
    assert choice.message.tool_calls is None
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")


@pytest.mark.parametrize("engine", ENGINES)
async def test_parallel_tool_calls(features: Edge, engine: str) -> None:
    client = features.client()
    both = ask("Use get_time and get_weather, please.")
    parallel = await client.chat.completions.create(
        model=f"demo-{engine}", messages=both, tools=TOOLS, tool_choice="required", max_tokens=600
    )
    names = [c.function.name for c in calls_of(parallel.choices[0].message)]
    if engine in PARALLEL:
        assert names == ["get_weather", "get_time"]  # in the order of `tools`
        ids = [c.id for c in calls_of(parallel.choices[0].message)]
        assert len(set(ids)) == 2
    else:
        assert names == ["get_weather"]  # one call a turn: the first
    one = await client.chat.completions.create(
        model=f"demo-{engine}",
        messages=both,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=600,
    )
    assert [c.function.name for c in calls_of(one.choices[0].message)] == ["get_weather"]


class Weather(BaseModel):
    city: str
    unit: str


@pytest.mark.parametrize("engine", ENGINES)
async def test_typed_tool_calls_through_the_sdk_helpers(features: Edge, engine: str) -> None:
    """`pydantic_function_tool` (a strict tool): `parse()` unary, `stream()` streamed."""
    client = features.client()
    tool = openai.pydantic_function_tool(Weather, name="get_weather")
    parsed = await client.chat.completions.parse(
        model=f"demo-{engine}",
        messages=ask("What is the weather in Paris?"),
        tools=[tool],
        tool_choice="required",
        max_tokens=400,
    )
    (unary_call,) = parsed.choices[0].message.tool_calls or []
    assert isinstance(unary_call.function.parsed_arguments, Weather)
    async with client.chat.completions.stream(
        model=f"demo-{engine}",
        messages=ask("What is the weather in Paris?"),
        tools=[tool],
        tool_choice="required",
        max_tokens=400,
    ) as stream:
        fragments = 0
        async for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                fragments += 1
        final = await stream.get_final_completion()
    assert fragments >= 2, "the arguments arrive in fragments"
    (choice,) = final.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert isinstance(call.function.parsed_arguments, Weather)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_streamed_tool_call_is_the_unary_one(features: Edge, engine: str) -> None:
    """Raw chunks as OpenAI streams them: the first delta of a call has its id, type and
    name; the later ones only argument fragments; one finish, `tool_calls`."""
    args: dict[str, Any] = {
        "model": f"demo-{engine}",
        "messages": ask("Use get_weather for Paris."),
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 400,
        "seed": 11,
    }
    client = features.client()
    unary = await client.chat.completions.create(**args)
    stream = await client.chat.completions.create(**args, stream=True)
    deltas: list[ChoiceDeltaToolCall] = []
    finishes = []
    async for chunk in stream:
        for c in chunk.choices:
            deltas += c.delta.tool_calls or []
            if c.finish_reason:
                finishes.append(c.finish_reason)
    assert finishes == ["tool_calls"]
    head, *rest = deltas
    assert head.id
    assert head.type == "function"
    assert head.function
    assert head.function.name
    assert all(d.id is None and d.function and d.function.name is None for d in rest)
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    (call,) = calls_of(unary.choices[0].message)
    assert (head.function.name, json.loads(arguments)) == (
        call.function.name,
        json.loads(call.function.arguments),
    )


# -- logprobs, n ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_logprobs_and_top_logprobs(features: Edge, engine: str) -> None:
    client = features.client()
    chat = await client.chat.completions.create(
        model=f"demo-{engine}",
        messages=ask("Describe a switchyard."),
        logprobs=True,
        top_logprobs=3,
        max_tokens=40,
        temperature=0,
    )
    logprobs = chat.choices[0].logprobs
    assert logprobs is not None
    tokens = logprobs.content or []
    assert tokens
    for token in tokens:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3
        assert len({t.token for t in token.top_logprobs}) == 3
        assert token.top_logprobs[0].token == token.token  # greedy: the most likely one
    text = await client.completions.create(
        model=f"demo-{engine}", prompt="The yard", logprobs=2, max_tokens=6, temperature=0
    )
    lp = text.choices[0].logprobs
    assert lp is not None
    assert lp.tokens
    assert lp.token_logprobs
    assert lp.top_logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert all(len(alternatives) >= 2 for alternatives in lp.top_logprobs)


@pytest.mark.parametrize("engine", ENGINES)
async def test_streamed_logprobs(features: Edge, engine: str) -> None:
    stream = await features.client().chat.completions.create(
        model=f"demo-{engine}",
        messages=ask("Describe a switchyard."),
        logprobs=True,
        top_logprobs=2,
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    tokens = [
        t
        async for chunk in stream
        for c in chunk.choices
        if c.logprobs is not None
        for t in c.logprobs.content or []
    ]
    assert tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)


async def test_top_logprobs_above_the_engines_limit_is_400(features: Edge) -> None:
    """TGI serves at most 5 alternatives (--max-top-n-tokens): its refusal is a 400."""
    with pytest.raises(openai.BadRequestError):
        await features.client().chat.completions.create(
            model="demo-tgi", messages=ask("hi"), logprobs=True, top_logprobs=6, max_tokens=4
        )


@pytest.mark.parametrize("engine", ENGINES)
async def test_two_choices(features: Edge, engine: str) -> None:
    client = features.client()
    args: dict[str, Any] = {
        "model": f"demo-{engine}",
        "messages": ask("Describe a switchyard."),
        "n": 2,
        "max_tokens": 40,
        "temperature": 1.0,
        "seed": 5,
    }
    request_id = f"two-choices-{engine}-{uuid.uuid4().hex}"
    chat = await client.chat.completions.create(**args, extra_headers={"x-request-id": request_id})
    assert [c.index for c in chat.choices] == [0, 1]
    assert all(c.message.content for c in chat.choices)
    assert chat.usage is not None
    assert chat.usage.completion_tokens <= 80
    # The request's log line counts every choice's tokens, as the usage does.
    record = await features.record(request_id)
    assert record["choices"] == 2
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )
    stream = await client.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    finishes = sorted(c.index for chunk in chunks for c in chunk.choices if c.finish_reason)
    assert finishes == [0, 1]  # each choice ends once
    texts = [
        "".join(c.delta.content or "" for ch in chunks for c in ch.choices if c.index == i)
        for i in (0, 1)
    ]
    assert all(texts)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 80
    text = await client.completions.create(
        model=f"demo-{engine}", prompt="The yard", n=2, max_tokens=5
    )
    assert sorted(c.index for c in text.choices) == [0, 1]
    assert text.usage is not None
    assert 2 <= text.usage.completion_tokens <= 10


@pytest.mark.parametrize("engine", ENGINES)
async def test_leaving_a_two_choice_stream_aborts_every_generation(
    features: Edge, feature_stacks: dict[str, Stack], engine: str
) -> None:
    stack = feature_stacks[engine]
    before = (await sim_stats(stack))["aborted"]
    body = {
        "model": f"demo-{engine}",
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
        "n": 2,
        "max_tokens": 900,
    }
    calls = 1 if NATIVE_N[engine] else 2  # TGI: the adapter makes one call per choice
    async with (
        # Past the first few tokens (reasoning's opening tag shows nothing) and held there.
        stack.stalled(count=calls, after=5),
        httpx.AsyncClient(timeout=60) as client,
        client.stream(
            "POST", f"{features.url}/v1/chat/completions", json=body, headers=features.auth()
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"role"' not in line:
                break  # something generated: leave mid-stream

        async def all_aborted() -> bool:
            return bool((await sim_stats(stack))["aborted"] >= before + calls)

        await eventually(all_aborted, what=f"{calls} generation(s) aborted at the engine")


# -- images ---------------------------------------------------------------------------------


def png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("engine", ENGINES)
async def test_an_image_data_url(features: Edge, engine: str) -> None:
    client = features.client()
    text_only = await client.chat.completions.create(
        model=f"demo-{engine}", messages=ask("What is in the picture?"), max_tokens=200
    )
    with_image = await client.chat.completions.create(
        model=f"demo-{engine}",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in the picture?"},
                    {"type": "image_url", "image_url": {"url": png(64, 48), "detail": "low"}},
                ],
            }
        ],
        max_tokens=200,
    )
    assert with_image.choices[0].message.content
    assert text_only.usage is not None
    assert with_image.usage is not None
    assert with_image.usage.prompt_tokens > text_only.usage.prompt_tokens  # the image counts


# -- reasoning ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", REASONING)
async def test_reasoning_apart_from_the_answer(features: Edge, engine: str) -> None:
    client = features.client()
    args: dict[str, Any] = {
        "model": f"demo-{engine}",
        "messages": ask("Describe a switchyard."),
        "max_tokens": 300,
        "seed": 3,
        "temperature": 1.0,
    }
    whole = await client.chat.completions.create(**args)
    message = whole.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning_content")
    assert reasoning
    assert message.content
    assert "<think>" not in message.content
    assert "</think>" not in message.content
    stream = await client.chat.completions.create(**args, stream=True)
    streamed_reasoning, streamed_content = [], []
    async for chunk in stream:
        for c in chunk.choices:
            extra = c.delta.model_extra or {}
            streamed_reasoning.append(extra.get("reasoning_content") or "")
            streamed_content.append(c.delta.content or "")
    assert "".join(streamed_reasoning) == reasoning
    assert "".join(streamed_content) == message.content


# -- vLLM's structured_outputs extra ----------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_structured_outputs_choice_and_regex(features: Edge, engine: str) -> None:
    client = features.client()
    choice = await client.chat.completions.create(
        model=f"demo-{engine}",
        messages=ask("Is it raining?"),
        max_tokens=300,  # room for the reasoning first
        extra_body={"structured_outputs": {"choice": ["yes", "no", "maybe"]}},
    )
    assert choice.choices[0].message.content in ("yes", "no", "maybe")
    regex = await client.completions.create(
        model=f"demo-{engine}",
        prompt="A number:",
        max_tokens=20,
        extra_body={"structured_outputs": {"regex": "[0-9]{3}"}},
    )
    text = regex.choices[0].text
    assert len(text) == 3
    assert text.isdigit()
