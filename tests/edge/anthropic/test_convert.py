"""Messages API bodies → the contract's canonical request (through OpenAI's chat request),
and the bodies refused on the way, each a 400 saying what is wrong."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from switchyard.edge.anthropic.convert import ERROR_PREFIX, messages_request
from switchyard.edge.anthropic.schemas import CountTokensRequest, MessagesRequest
from switchyard.edge.anthropic.service import parse
from switchyard.edge.convert import Rules
from switchyard.edge.errors import OpenAIError
from switchyard.edge.images import ImageRules
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit.json_schema import SchemaLimits

RULES = Rules(SchemaLimits(), 4, ImageRules(4, 4096, frozenset({"images.example.com"})))
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "demo", "max_tokens": 32, **fields}


def canonical(raw: dict[str, Any]) -> pb.GenerateRequest:
    parsed = parse(MessagesRequest, orjson.dumps(raw))
    return messages_request(parsed, "demo-route", "req-1", RULES).request


def refused(raw: dict[str, Any], count: bool = False) -> str:
    """The 400's message for `raw` (a count_tokens body if `count`), parsed and translated."""

    def translate() -> None:
        text = orjson.dumps(raw)
        parsed = parse(CountTokensRequest, text) if count else parse(MessagesRequest, text)
        messages_request(parsed, "demo-route", "req-1", RULES)

    with pytest.raises(OpenAIError) as raised:
        translate()
    assert raised.value.status == 400
    return raised.value.message


def test_a_conversation_with_a_tool_loop() -> None:
    request = canonical(
        body(
            system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Looking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                        {
                            "type": "text",
                            "text": "And tomorrow?",
                            "cache_control": {"type": "ephemeral"},
                        },
                    ],
                },
            ],
            tools=[WEATHER],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["a", "b", "c", "d", "e"],
            metadata={"user_id": "u-1"},
        )
    )
    messages = request.chat.messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[0].content == "Be brief.\nBe kind."
    assistant = messages[2]
    assert assistant.content == "Looking."
    (call,) = assistant.tool_calls
    assert (call.id, call.name, orjson.loads(call.arguments)) == (
        "toolu_1",
        "get_weather",
        {"city": "Paris"},
    )
    assert (messages[3].tool_call_id, messages[3].content) == ("toolu_1", "Sunny")
    assert messages[4].content == "And tomorrow?"
    (tool,) = request.tools
    assert tool.name == "get_weather"
    assert orjson.loads(tool.parameters) == WEATHER["input_schema"]
    assert request.tool_choice.mode == pb.TOOL_CHOICE_MODE_AUTO
    assert request.HasField("parallel_tool_calls")
    assert not request.parallel_tool_calls
    sampling = request.sampling
    assert sampling.max_tokens == 32
    assert sampling.temperature == pytest.approx(0.5)
    assert sampling.top_p == pytest.approx(0.9)
    assert sampling.top_k == 40
    assert list(sampling.stop) == ["a", "b", "c", "d", "e"]  # more than OpenAI's 4
    assert request.include_usage


@pytest.mark.parametrize(
    ("choice", "expect"),
    [
        ({"type": "any"}, ("mode", pb.TOOL_CHOICE_MODE_REQUIRED)),
        ({"type": "none"}, ("mode", pb.TOOL_CHOICE_MODE_NONE)),
        ({"type": "auto"}, ("mode", pb.TOOL_CHOICE_MODE_AUTO)),
        ({"type": "tool", "name": "get_weather"}, ("function", "get_weather")),
    ],
)
def test_tool_choices(choice: dict[str, Any], expect: tuple[str, object]) -> None:
    request = canonical(
        body(messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice=choice)
    )
    field, value = expect
    assert request.tool_choice.WhichOneof("kind") == field
    assert getattr(request.tool_choice, field) == value
    assert not request.HasField("parallel_tool_calls")


def test_a_tool_result_with_images_and_an_error() -> None:
    request = canonical(
        body(
            messages=[
                {"role": "user", "content": "Screenshot please"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "partial"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": PNG,
                                    },
                                },
                            ],
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://images.example.com/a.png"},
                        },
                    ],
                },
            ],
            tools=[{"name": "shot", "input_schema": {"type": "object"}}],
        )
    )
    _, assistant, tool, images = request.chat.messages
    assert assistant.content == ""
    assert [c.name for c in assistant.tool_calls] == ["shot"]
    assert tool.role == "tool"
    assert tool.content == ERROR_PREFIX + "partial"
    # The result's image, then the user's own, in a user message after the results.
    assert images.role == "user"
    assert [p.image.url for p in images.parts] == [
        f"data:image/png;base64,{PNG}",
        "https://images.example.com/a.png",
    ]


def test_count_tokens_takes_the_same_input_without_max_tokens() -> None:
    parsed = parse(
        CountTokensRequest,
        orjson.dumps(
            {"model": "demo", "system": "s", "messages": [{"role": "user", "content": "hi"}]}
        ),
    )
    request = messages_request(parsed, "demo-route", "req-1", RULES).request
    assert [m.role for m in request.chat.messages] == ["system", "user"]
    assert not request.sampling.HasField("max_tokens")


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (
            {"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
            "max_tokens: Field required",
        ),
        (body(messages=[]), "messages"),
        (
            body(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
            "'document'",
        ),
        (body(messages=[{"role": "system", "content": "x"}]), "'system'"),
        (
            body(
                messages=[
                    {"role": "user", "content": "Pick A or B."},
                    {"role": "assistant", "content": "The answer is ("},
                ]
            ),
            "a final assistant message (prefill) is not supported",
        ),
        (
            body(
                messages=[
                    {
                        "role": "assistant",
                        "content": [{"type": "thinking", "thinking": "x", "signature": "s"}],
                    }
                ]
            ),
            "'thinking'",
        ),
        (
            body(
                messages=[{"role": "user", "content": "hi"}],
                thinking={"type": "enabled", "budget_tokens": 1024},
            ),
            "extended thinking is not supported",
        ),
        (
            body(
                messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "web_search_20250305", "name": "web_search"}],
            ),
            "server tools (type 'web_search_20250305') are not supported",
        ),
        (
            body(messages=[{"role": "user", "content": "hi"}], container="c1"),
            "container: not supported",
        ),
        (body(messages=[{"role": "user", "content": "hi"}], temperature=1.5), "temperature"),
        (
            body(
                messages=[{"role": "user", "content": "hi"}],
                tools=[{"name": "f", "input_schema": {"type": "string"}}],
            ),
            '"type": "object"',
        ),
        (
            body(messages=[{"role": "user", "content": "hi"}], tool_choice={"type": "any"}),
            "needs tools",
        ),
        (
            body(
                messages=[{"role": "user", "content": "hi"}],
                tools=[WEATHER],
                tool_choice={"type": "tool", "name": "nope"},
            ),
            "not among the tools",
        ),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "ghost", "content": "x"}
                        ],
                    }
                ]
            ),
            "none has the id 'ghost'",
        ),
        (
            body(
                messages=[
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "first"},
                            {"type": "tool_result", "tool_use_id": "t1", "content": "x"},
                        ],
                    },
                ]
            ),
            "tool_result blocks must come first",
        ),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://elsewhere.example/a.png"},
                            }
                        ],
                    }
                ]
            ),
            "elsewhere.example",
        ),
        (body(messages=[{"role": "user", "content": "hi"}], max_tokens=0), "max_tokens"),
        (body(messages=[{"role": "user", "content": "hi"}], stream="yes"), "stream"),
    ],
)
def test_refused_bodies(raw: dict[str, Any], says: str) -> None:
    assert says in refused(raw)


def test_count_tokens_refuses_generation_fields() -> None:
    raw = {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert "max_tokens: not supported" in refused(raw, count=True)
