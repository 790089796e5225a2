"""Tool calling on the chat route: SGLang's shapes with `--tool-call-parser`, the raw text
without it, the agent-loop rule, and SGLang's refusals."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
from jsonschema import validate
from pydantic import BaseModel

from tests.enginesim.sglang import shapes
from tests.enginesim.sglang.conftest import MODEL, asgi, events, make_app

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL_ID = re.compile(r"call_[0-9a-f]{24}")
PARSER = ("--tool-call-parser", "qwen25")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi(make_app(*PARSER)) as c:
        yield c


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    request = {"model": MODEL, "messages": ASK, "tools": TOOLS, "temperature": 0, **body}
    return await client.post("/v1/chat/completions", json=request)


def called(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments) of each call of a unary answer, checking ids and arguments."""
    calls = body["choices"][0]["message"].get("tool_calls") or []
    for i, call in enumerate(calls):
        assert CALL_ID.fullmatch(call["id"]), call["id"]
        assert (call["index"], call["type"]) == (i, "function")
        validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


async def test_a_required_call_is_parsed_into_tool_calls(client: httpx.AsyncClient) -> None:
    body = (await chat(client, tool_choice="required")).json()
    shapes.chat_response(body)
    (choice,) = body["choices"]
    assert [name for name, _ in called(body)] == ["get_weather"]  # none named: the first
    assert choice["message"]["content"] == ""
    assert (choice["finish_reason"], choice["matched_stop"]) == ("tool_calls", None)
    assert body["usage"]["completion_tokens"] > 0


async def test_auto_calls_after_the_user_and_answers_after_a_tool_result(
    client: httpx.AsyncClient,
) -> None:
    first = (await chat(client)).json()
    assert len(called(first)) == 1
    call = first["choices"][0]["message"]["tool_calls"][0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 C."},
    ]
    final = (await chat(client, messages=history)).json()
    shapes.chat_response(final)
    (choice,) = final["choices"]
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    # The tools and the call are in the prompt, as a chat template puts them there.
    assert final["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
    # Streamed, the answer goes through the tool-call parser: its chunks have every field.
    chunks = events((await chat(client, messages=history, stream=True)).text)
    for chunk in chunks:
        shapes.chat_chunk(chunk)
    texts = [c["choices"][0]["delta"] for c in chunks if c["choices"][0]["delta"].get("content")]
    assert texts
    assert all(d["role"] is None and d["reasoning_content"] is None for d in texts)
    assert "".join(d["content"] for d in texts) == choice["message"]["content"]


async def test_named_parallel_and_none(client: httpx.AsyncClient) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    assert [n for n, _ in called((await chat(client, tool_choice=named)).json())] == ["get_time"]
    both = [{"role": "user", "content": "Call get_time and get_weather."}]
    body = (await chat(client, messages=both, tool_choice="required")).json()
    assert [n for n, _ in called(body)] == ["get_weather", "get_time"]  # in the tools' order
    body = (await chat(client, messages=both, parallel_tool_calls=False)).json()
    assert [n for n, _ in called(body)] == ["get_weather"]
    body = (await chat(client, tool_choice="none")).json()
    assert called(body) == []
    assert "<tool_call>" not in body["choices"][0]["message"]["content"]


async def test_a_streamed_call_comes_as_id_and_name_then_argument_fragments(
    client: httpx.AsyncClient,
) -> None:
    response = await chat(client, tool_choice="required", stream=True)
    chunks = events(response.text)
    for chunk in chunks:
        shapes.chat_chunk(chunk)
    deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls") or []]
    first, *rest = deltas
    assert CALL_ID.fullmatch(first["id"])
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert rest
    assert all(d["id"] is None and d["function"]["name"] is None for d in rest)
    assert all(d["index"] == 0 for d in deltas)
    arguments = "".join(d["function"]["arguments"] for d in rest)
    unary = (await chat(client, tool_choice="required")).json()
    assert arguments == unary["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    finish = chunks[-1]["choices"][0]
    assert finish["finish_reason"] == "tool_calls"
    assert finish["matched_stop"] == 2  # a stream keeps the stop SGLang matched (EOS)


class Weather(BaseModel):
    city: str
    days: int


async def test_the_openai_sdk_drives_an_agent_loop_and_parses_arguments() -> None:
    app = make_app(*PARSER)
    # The SDK's own HTTP client library, on the app in process.
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as http:
        client = openai.AsyncOpenAI(
            base_url="http://sglang/v1", api_key="-", http_client=http, max_retries=0
        )
        tool = openai.pydantic_function_tool(Weather, name="get_weather")
        messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
        async with client.chat.completions.stream(
            model=MODEL, messages=messages, tools=[tool], temperature=0
        ) as stream:
            completion = await stream.get_final_completion()
        message = completion.choices[0].message
        assert completion.choices[0].finish_reason == "tool_calls"
        (call,) = message.tool_calls or []
        assert isinstance(call.function.parsed_arguments, Weather)
        messages += [message, {"role": "tool", "tool_call_id": call.id, "content": "Snow."}]
        answer = await client.chat.completions.create(
            model=MODEL, messages=messages, tools=[tool], temperature=0
        )
        assert answer.choices[0].message.tool_calls is None
        assert answer.choices[0].message.content


async def test_without_a_parser_calls_stay_in_the_text() -> None:
    async with asgi(make_app()) as client:
        auto = (await chat(client)).json()
        required = (await chat(client, tool_choice="required")).json()
        streamed = events((await chat(client, tool_choice="required", stream=True)).text)
    shapes.chat_response(auto)
    # The model writes its call as ever; nobody parses it.
    (choice,) = auto["choices"]
    assert "tool_calls" not in choice["message"]
    assert choice["message"]["content"].startswith("<tool_call>\n{")
    assert choice["finish_reason"] == "stop"
    # A forced call is the JSON array SGLang's schema constraint asks for, as content.
    (choice,) = required["choices"]
    (call,) = json.loads(choice["message"]["content"])
    assert call["name"] == "get_weather"
    validate(call["parameters"], WEATHER)
    assert choice["finish_reason"] == "stop"
    for chunk in streamed:
        shapes.chat_chunk(chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed)
    assert text == choice["message"]["content"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"tools": None, "tool_choice": "required"},
            "Tools cannot be empty if tool choice is set to required.",
        ),
        (
            {"tools": None, "tool_choice": {"type": "function", "function": {"name": "f"}}},
            "Tools cannot be empty if tool choice is set to a specific tool.",
        ),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_tide"}}},
            "Tool 'get_tide' not found in tools list.",
        ),
    ],
)
async def test_tool_choice_refusals(
    client: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await chat(client, **body)
    assert response.status_code == 400
    assert response.json() == {
        "object": "error", "message": message, "type": "BadRequestError", "param": None,
        "code": 400,
    }  # fmt: skip


async def test_a_parameters_schema_that_is_not_a_schema_is_refused(
    client: httpx.AsyncClient,
) -> None:
    broken = [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]
    response = await chat(client, tools=broken)
    assert response.status_code == 400
    assert response.json()["message"].startswith(
        "Tool 0 function has invalid 'parameters' schema: 5 is not valid under any"
    )


async def test_conversion_refusals_are_bad_requests(client: httpx.AsyncClient) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{"}}
    history = [*ASK, {"role": "assistant", "tool_calls": [call]}]
    response = await chat(client, messages=history)
    assert response.status_code == 400
    assert (response.json()["type"], response.json()["message"]) == (
        "BadRequest",
        "Assistant tool call function.arguments must be valid JSON.",
    )
    fmt = {"type": "json_object"}
    response = await chat(client, tool_choice="required", response_format=fmt)
    assert response.status_code == 400
    assert response.json()["message"].startswith(
        "tool_choice 'required' or a named tool cannot be combined with response_format"
    )
    # With "auto", the output constraint wins: the answer is the constrained text.
    body = (await chat(client, response_format=fmt)).json()
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


async def test_the_server_reports_its_parsers() -> None:
    async with asgi(make_app(*PARSER, "--reasoning-parser", "qwen3")) as client:
        info = (await client.get("/model_info")).json()
    assert (info["tool_call_parser"], info["reasoning_parser"]) == ("qwen25", "qwen3")
