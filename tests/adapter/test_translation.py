"""What every translation shares: OpenAI's chat messages (parts, tool calls, tool results),
tools and tool choice, the features a request uses, choice regexes, and the error for an
engine that refuses the adapter's key on a route."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchyard.adapter.translation import (
    EngineHTTPError,
    add_tools,
    chat_messages,
    choice_regex,
    features_used,
    regex_literal,
    stop_string,
)
from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request


def test_chat_messages_carry_a_name_only_when_there_is_one() -> None:
    request = generate_request(
        "m", messages=[("system", "Be brief."), ("user", "Hi", "ann"), ("assistant", "")]
    )
    assert chat_messages(request) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "ann"},
        {"role": "assistant", "content": ""},
    ]


@given(st.text(max_size=20))
def test_regex_literal_matches_exactly_itself(text: str) -> None:
    assert re.fullmatch(regex_literal(text), text, flags=re.DOTALL)


def test_choice_regex_matches_only_the_choices() -> None:
    choices = ["a+b", "(x)", "[y]", "plain", "dot.", "back\\slash", "{1}", "^$"]
    pattern = re.compile(choice_regex(choices))
    assert all(pattern.fullmatch(c) for c in choices)
    assert not pattern.fullmatch("aab")
    assert not pattern.fullmatch("dotx")
    assert choice_regex(["yes", "no"]) == "(yes|no)"


def test_a_refused_key_is_said_of_its_route_with_what_to_set() -> None:
    refused = EngineHTTPError("HTTP 401", 401).on_route("GET /v1/models")
    assert refused.status == 401
    assert str(refused) == (
        "the engine refused the adapter's credentials on GET /v1/models (HTTP 401): "
        "set ADAPTER_ENGINE_API_KEY to the engine's --api-key"
    )
    other = EngineHTTPError("HTTP 500", 500)
    assert other.on_route("GET /v1/models") is other
    unreachable = EngineHTTPError("connection refused")
    assert unreachable.on_route("POST /tokenize") is unreachable


def test_chat_messages_carry_parts_tool_calls_and_tool_results() -> None:
    request = generate_request("m", messages=[("user", ""), ("assistant", ""), ("tool", "12 C")])
    user, assistant, tool = request.chat.messages
    user.parts.add(text="What is this?")
    user.parts.add(image=pb.Image(url="data:image/png;base64,AAAA", detail="low"))
    user.parts.add(image=pb.Image(url="https://example.com/a.png"))
    assistant.tool_calls.add(id="call_1", name="weather", arguments='{"city": "Oslo"}')
    tool.tool_call_id = "call_1"
    assert chat_messages(request) == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url",
                 "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {  # only tool calls: no content at all (OpenAI's shape; TGI admits no other)
            "role": "assistant",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}],
        },
        {"role": "tool", "content": "12 C", "tool_call_id": "call_1"},
    ]  # fmt: skip


def test_tools_tool_choice_and_parallel_calls_in_openai_s_shape() -> None:
    request = generate_request("m", messages=[("user", "Hi")])
    body: dict[str, Any] = {}
    add_tools(body, request)
    assert body == {}  # no tools: nothing at all
    request.tools.add(
        name="weather", description="Forecast", parameters='{"type": "object"}', strict=True
    )
    request.tools.add(name="time_now")
    add_tools(body, request)
    assert body == {
        "tools": [
            {"type": "function", "function": {"name": "weather", "description": "Forecast",
                                              "parameters": {"type": "object"}, "strict": True}},
            {"type": "function", "function": {"name": "time_now"}},
        ]
    }  # fmt: skip
    for choice, expected in [
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO), "auto"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE), "none"),
        (pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED), "required"),
        (
            pb.ToolChoice(function="time_now"),
            {"type": "function", "function": {"name": "time_now"}},
        ),
    ]:
        request.tool_choice.CopyFrom(choice)
        request.parallel_tool_calls = False
        add_tools(body, request)
        assert (body["tool_choice"], body["parallel_tool_calls"]) == (expected, False)


def test_features_used_by_a_request() -> None:
    request = generate_request("m", messages=[("user", "Hi")])
    assert features_used(request) == []
    request.n = 1
    request.chat.messages[0].tool_call_id = "c"
    request.logprobs.SetInParent()
    assert features_used(request) == ["tools", "logprobs"]
    request.n = 3
    request.chat.messages[0].parts.add(image=pb.Image(url="data:,"))
    assert features_used(request) == ["tools", "images", "logprobs", "n"]


@pytest.mark.parametrize(
    ("finish", "matched", "expected"),
    [
        (pb.FINISH_REASON_STOP, "END", "END"),
        (pb.FINISH_REASON_STOP, 151645, ""),  # a stop token id
        (pb.FINISH_REASON_STOP, None, ""),
        (pb.FINISH_REASON_LENGTH, "END", ""),
        (pb.FINISH_REASON_TOOL_CALLS, "END", ""),
    ],
)
def test_only_a_stop_finish_names_a_stop_string(
    finish: pb.FinishReason.ValueType, matched: object, expected: str
) -> None:
    assert stop_string(finish, matched) == expected
