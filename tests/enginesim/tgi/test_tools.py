"""The simulated TGI's tool calling, as TGI's router does it (`chat.rs`, `tool_grammar.rs`).

Every answer is checked against TGI's OpenAPI document; arguments against the tool's schema.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import jsonschema
import openai
import pytest
from starlette.applications import Starlette

from switchyard.enginesim.generation import Generation
from switchyard.enginesim.tgi.tools import ChatState, ToolDelta, merge_quote_comma
from tests.enginesim.tgi.conftest import asgi_client, make_app, sse_data, sse_json
from tests.enginesim.tgi.openapi import check

WIDE = ("--max-input-tokens", "3000", "--max-total-tokens", "4096")
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {
        "type": "function",
        "function": {"name": "get_time", "description": "Now.", "arguments": TIME},
    },
]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def app() -> Starlette:
    """Room for the tools: their definitions and TGI's tool prompt are long prompts."""
    return make_app(*WIDE)


async def _chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json={"model": "tgi", "max_tokens": 120, "seed": 3, **body}
    )


def _call(out: dict[str, Any]) -> dict[str, Any]:
    check("ChatCompletion", out)
    calls = out["choices"][0]["message"]["tool_calls"]
    assert len(calls) == 1  # TGI writes one call: no parallel calls
    call: dict[str, Any] = calls[0]
    return call


@pytest.mark.parametrize("choice", [None, "auto", "required"])
async def test_a_users_question_gets_a_call(client: httpx.AsyncClient, choice: str | None) -> None:
    body: dict[str, Any] = {"messages": ASK, "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    response = await _chat(client, **body)
    assert response.status_code == 200, response.text
    out = response.json()
    call = _call(out)
    assert "content" not in out["choices"][0]["message"]  # a ToolCallMessage
    assert call["id"] == "0"  # always, in a unary answer
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"  # named in the question, else the first
    assert call["function"]["description"] is None
    arguments = call["function"]["arguments"]
    assert isinstance(arguments, str)
    assert arguments == json.dumps(json.loads(arguments), separators=(",", ":"))  # compact
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert out["choices"][0]["finish_reason"] == "stop"  # EOS after the JSON, not "tool_calls"
    assert int(response.headers["x-generated-tokens"]) == out["usage"]["completion_tokens"]


async def test_a_named_function_is_called_even_when_another_is_asked_for(
    client: httpx.AsyncClient,
) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    for choice in (named, "get_time"):  # a string that is no mode names a function too
        out = (await _chat(client, messages=ASK, tools=TOOLS, tool_choice=choice)).json()
        call = _call(out)
        assert call["function"]["name"] == "get_time"
        jsonschema.validate(json.loads(call["function"]["arguments"]), TIME)


async def test_after_a_tool_result_auto_answers_in_text(client: httpx.AsyncClient) -> None:
    calls = [
        {
            "id": "0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 1}},
        }
    ]
    messages = [
        *ASK,
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "content": "Sunny, 21 C", "tool_call_id": "0"},
    ]
    response = await _chat(client, messages=messages, tools=TOOLS, temperature=0)
    out = response.json()
    check("ChatCompletion", out)
    message = out["choices"][0]["message"]
    assert "tool_calls" not in message
    assert message["content"]
    # TGI chose `no_tool`, then generated again without tools: that answer is the one
    # counted, the same as a request without tools.
    plain = (await _chat(client, messages=messages, temperature=0)).json()
    assert message["content"] == plain["choices"][0]["message"]["content"]
    assert out["usage"] == plain["usage"]


async def test_none_answers_in_text_without_the_tools(client: httpx.AsyncClient) -> None:
    out = (await _chat(client, messages=ASK, tools=TOOLS, tool_choice="none")).json()
    plain = (await _chat(client, messages=ASK)).json()
    assert out["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    assert out["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


async def test_tools_count_in_the_prompt(client: httpx.AsyncClient) -> None:
    plain = (await _chat(client, messages=ASK)).json()
    out = (await _chat(client, messages=ASK, tools=TOOLS, tool_choice="required")).json()
    assert out["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 20


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "Tool error: Tool with name nope not found",
        ),
        (
            {"response_format": {"type": "json", "value": WEATHER}},
            "Tool error: Grammar and tools are mutually exclusive",
        ),
        (  # even when no tool may be called
            {"tool_choice": "none", "response_format": {"type": "regex", "value": "a+"}},
            "Tool error: Grammar and tools are mutually exclusive",
        ),
    ],
)
async def test_tool_errors(client: httpx.AsyncClient, body: dict[str, Any], message: str) -> None:
    for stream in (False, True):  # found while templating: an HTTP error even for a stream
        response = await _chat(client, messages=ASK, tools=TOOLS, stream=stream, **body)
        assert response.status_code == 422
        assert response.json() == {"error": message, "error_type": "tool_error"}
        check("ErrorResponse", response.json())


async def test_a_tool_without_parameters_is_refused_by_serde(client: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "ping"}}]
    response = await _chat(client, messages=ASK, tools=tools)
    assert response.status_code == 422
    assert response.text == (
        "Failed to deserialize the JSON body into the target type: "
        "tools[0].function: missing field `arguments`"
    )


async def test_without_grammar_support_tools_are_refused() -> None:
    async with asgi_client(make_app(*WIDE, "--disable-grammar-support")) as client:
        response = await _chat(client, messages=ASK, tools=TOOLS, tool_choice="required")
    assert response.status_code == 422
    assert response.json()["error"] == "Input validation error: grammar is not supported"


async def _stream(client: httpx.AsyncClient, **body: Any) -> tuple[list[dict[str, Any]], str]:
    response = await _chat(client, stream=True, stream_options={"include_usage": True}, **body)
    assert response.status_code == 200, response.text
    assert sse_data(response.text)[-1] == "[DONE]"
    chunks = sse_json(response.text)
    for chunk in chunks:
        check("ChatCompletionChunk", chunk)
    return chunks, response.text


async def test_a_streamed_call_is_tool_call_deltas_without_a_finish_reason(
    client: httpx.AsyncClient,
) -> None:
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "4", "type": "function", "function": {"name": "get_time", "arguments": {}}}
            ],
        },
        {"role": "tool", "content": "noon"},
        {"role": "user", "content": "And the weather in Paris?"},
    ]
    chunks, _ = await _stream(client, messages=history, tools=TOOLS, tool_choice="required")
    *deltas, usage = chunks
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] > len(deltas)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in deltas]
    assert {c["id"] for c in calls} == {"5"}  # one past the conversation's integer ids
    assert calls[0]["function"] == {"name": "get_weather", "arguments": "{"}
    assert all(c["function"]["name"] is None for c in calls[1:])
    assert all(c["index"] == 0 and c["type"] == "function" for c in calls)
    arguments = "".join(c["function"]["arguments"] for c in calls)
    jsonschema.validate(json.loads(arguments), WEATHER)
    # The JSON's tokens after the call (EOS) send nothing: no chunk says why it ended.
    assert all(c["choices"][0]["finish_reason"] is None for c in deltas)


async def test_a_streamed_call_id_is_a_uuid_when_an_id_is_not_a_number(
    client: httpx.AsyncClient,
) -> None:
    history = [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_x",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": {}},
                }
            ],
        },
        {"role": "user", "content": "Paris weather"},
    ]
    chunks, _ = await _stream(client, messages=history, tools=TOOLS)
    call_id = chunks[0]["choices"][0]["delta"]["tool_calls"][0]["id"]
    assert len(call_id) == 36
    assert call_id.count("-") == 4


async def test_a_streamed_no_tool_streams_the_text_of_a_second_generation(
    client: httpx.AsyncClient,
) -> None:
    messages = [*ASK, {"role": "tool", "content": "Sunny"}]
    chunks, _ = await _stream(client, messages=messages, tools=TOOLS, temperature=0)
    plain, _ = await _stream(client, messages=messages, temperature=0)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "".join(c["choices"][0]["delta"]["content"] for c in plain[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == plain[-1]["usage"]


async def test_streamed_call_logprobs_follow_the_deltas(client: httpx.AsyncClient) -> None:
    chunks, _ = await _stream(
        client, messages=ASK, tools=TOOLS, logprobs=True, top_logprobs=2, tool_choice="required"
    )
    for chunk in chunks[:-1]:
        choice = chunk["choices"][0]
        [entry] = choice["logprobs"]["content"]
        assert entry["token"] == choice["delta"]["tool_calls"][0]["function"]["arguments"]
        assert len(entry["top_logprobs"]) == 2


def test_chat_state_reads_tgis_own_token_stream() -> None:
    """TGI's unit test `test_chat_stream_tool_get_weather`, on this implementation."""
    tokens = [
        '{"', "function", '":', ' {"', "_", "name", '":', ' "', "get", "_current", "_weather",
        '",', ' "', "location", '":', ' "', "San", " Francisco", ",", " CA", '",', ' "',
        "format", '":', ' "', "c", "elsius", '"}}',
    ]  # fmt: skip
    state = ChatState(using_tools=True)
    events = [state.push(t, special=False) for t in tokens]
    assert events[:11] == ["none"] * 11
    deltas = [e for e in events[11:] if isinstance(e, ToolDelta)]
    assert len(deltas) == 17
    assert deltas[0].name == "get_current_weather"
    assert "".join(d.arguments for d in deltas) == (
        '{ "location": "San Francisco, CA", "format": "celsius"}'
    )
    assert state.push("</s>", special=True) == "none"


def test_chat_state_sees_no_tool_once_named() -> None:
    state = ChatState(using_tools=True)
    pushed = [
        state.push(t, special=False) for t in ['{"', 'function":', ' {"_name": "no_tool', '"']
    ]
    assert pushed == ["none", "none", "none", "no_tool"]


def test_a_closing_quote_and_comma_are_one_token() -> None:
    generation = Generation(
        tokens=("a", '"', ",", '"', "}"), token_ids=(10, 11, 12, 11, 13),
        finish_reason="stop", matched_stop=None, completion_tokens=6,
    )  # fmt: skip
    merged = merge_quote_comma(generation)
    assert merged.tokens == ("a", '",', '"', "}")
    assert merged.text == generation.text
    assert merged.completion_tokens == 5


async def test_the_openai_sdk_reads_a_unary_call(app: Starlette) -> None:
    # The SDK's own HTTP client library, on the app in process.
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://tgi/v1", api_key="-", http_client=http, max_retries=0
        )
        messages: list[Any] = ASK
        tools: list[Any] = TOOLS
        out = await sdk.chat.completions.create(
            model="tgi", messages=messages, tools=tools, tool_choice="required", max_tokens=120
        )
    [call] = out.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)
