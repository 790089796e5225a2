"""A Responses request translated: its items checked and kept in OpenAI's item form, then
read as a chat conversation; tools, tool_choice and text.format as chat's; errors naming
the Responses API's params; input items a page at a time."""

from __future__ import annotations

from typing import Any

import pytest

from switchyard.edge.errors import OpenAIError
from switchyard.edge.openai_responses.convert import chat_body, renamed
from switchyard.edge.openai_responses.items import chat_messages, normalize
from switchyard.edge.openai_responses.routes import page
from switchyard.edge.openai_responses.schemas import CreateResponse


def _body(**fields: Any) -> CreateResponse:
    return CreateResponse.model_validate({"model": "m", "input": "hi", **fields})


def _chat(**fields: Any) -> dict[str, Any]:
    body = _body(**fields)
    items = normalize(body.input)
    chat, _ = chat_body(body, items, [f"input[{i}]" for i in range(len(items))])
    return chat.model_dump(exclude_none=True, by_alias=True)


def test_a_string_is_one_user_message() -> None:
    (item,) = normalize("hello")
    assert item["id"].startswith("msg_")
    assert item == {
        "id": item["id"],
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "hello"}],
    }


def test_instructions_come_first_and_items_become_messages() -> None:
    chat = _chat(
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Answer in French."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://images.example.com/a.png"},
                ],
            },
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Looked."}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Un chat."}],
            },
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ],
    )
    messages = chat["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "tool",
    ]
    assert messages[0]["content"] == "Be brief."
    assert messages[2]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://images.example.com/a.png", "detail": "auto"},
    }
    # The calls join the assistant message before them; reasoning is not read again.
    assert messages[3]["content"] == "Un chat."
    assert [c["id"] for c in messages[3]["tool_calls"]] == ["call_1", "call_2"]
    assert [m["content"] for m in messages[4:]] == ["one", "two"]


def test_tools_tool_choice_and_formats_as_chats() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    chat = _chat(
        tools=[tool],
        tool_choice={"type": "function", "name": "f"},
        parallel_tool_calls=False,
        max_output_tokens=7,
        text={
            "format": {
                "type": "json_schema",
                "name": "w",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["max_completion_tokens"] == 7
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert _chat(text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }
    assert _chat(text={"format": {"type": "text"}})["response_format"] == {"type": "text"}
    assert "response_format" not in _chat(text={"verbosity": "low"})


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"type": "message", "role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": "x", "extra": 1}]}, "input[0].extra"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice.type"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format.name"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ],
)
def test_bad_items_and_params_name_themselves(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        _chat(**fields)
    assert caught.value.status == 400
    assert caught.value.param == param


def test_a_result_needs_its_call_earlier_in_the_conversation() -> None:
    items = normalize([{"type": "function_call_output", "call_id": "c", "output": "x"}])
    with pytest.raises(OpenAIError) as caught:
        chat_messages(items, ["input[0]"])
    assert caught.value.param == "input[0].call_id"


def test_chats_params_are_named_as_the_responses_api_names_them() -> None:
    where = ["instructions", "previous_response_id", "input[0]"]
    assert renamed("messages[2].content[1].image_url.url", where) == "input[0].content[1].image_url"
    assert renamed("messages[1]", where) == "previous_response_id"
    assert renamed("response_format.json_schema.schema", where) == "text.format.schema"
    assert renamed("tools[3].function.parameters", where) == "tools[3].parameters"
    assert renamed("max_completion_tokens", where) == "max_output_tokens"
    assert renamed("temperature", where) == "temperature"


def test_pages_both_ways() -> None:
    items = [{"id": f"msg_{i}"} for i in range(5)]
    first = page(items, after=None, limit=2, order="asc")
    assert [i["id"] for i in first["data"]] == ["msg_0", "msg_1"]
    assert (first["first_id"], first["last_id"], first["has_more"]) == ("msg_0", "msg_1", True)
    rest = page(items, after="msg_3", limit=2, order="asc")
    assert [i["id"] for i in rest["data"]] == ["msg_4"]
    assert not rest["has_more"]
    newest = page(items, after=None, limit=3, order="desc")
    assert [i["id"] for i in newest["data"]] == ["msg_4", "msg_3", "msg_2"]
    older = page(items, after="msg_2", limit=3, order="desc")
    assert [i["id"] for i in older["data"]] == ["msg_1", "msg_0"]
    assert page([], after=None, limit=2, order="desc") == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
