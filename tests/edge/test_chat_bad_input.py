"""Bad chat input is a 400 in OpenAI's shape, naming the parameter, and changes nothing: no
engine sees it, nothing stays in flight, no tokens stay reserved. And a feature an engine (as
started) cannot serve is refused with its engine's reason, never dropped."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.edge.conftest import sim_stats
from tests.edge.test_chat_features import TOOLS, WEATHER, png
from tests.support.edge import Edge
from tests.support.stacks import ENGINES, Stack

CHAT = "/v1/chat/completions"
USER = {"role": "user", "content": "Use get_weather for Paris."}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
}


def _image(url: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}},
        ],
    }


_IMAGE = "messages[0].content[1].image_url.url"
_BIG = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"\0" * 5000).decode()

CASES: dict[str, tuple[dict[str, Any], str | None, str]] = {
    # name: (body fields, param, a fragment of the message)
    "tool schema is not a JSON schema": (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 12}}}]},
        "tools[0].function.parameters",
        "not a valid JSON Schema",
    ),
    "duplicate tool names": ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "already"),
    "tool_choice names an unknown function": (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        "'nope'",
    ),
    "tool_choice without tools": ({"tool_choice": "required"}, "tool_choice", "tools"),
    "tool message without a matching call": (
        {
            "messages": [
                USER,
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
            ]
        },
        "messages[2].tool_call_id",
        "call_2",
    ),
    "top_logprobs without logprobs": ({"top_logprobs": 2}, "top_logprobs", "logprobs"),
    "top_logprobs above OpenAI's 20": (
        {"logprobs": True, "top_logprobs": 21},
        "top_logprobs",
        "20",
    ),
    "n above the maximum": ({"n": 5}, "n", "at most 4"),
    "image over the size limit": ({"messages": [_image(_BIG)]}, _IMAGE, "limit is 4096 bytes"),
    "image that is not base64": (
        {"messages": [_image("data:image/png;base64,@@@@")]},
        _IMAGE,
        "not valid base64",
    ),
    "image of another type": (
        {"messages": [_image("data:image/svg+xml;base64,PHN2Zz4=")]},
        _IMAGE,
        "data:image/<png|jpeg|gif|webp>;base64,",
    ),
    "image URL off the allow-list": (
        {"messages": [_image("https://elsewhere.example.com/cat.png")]},
        _IMAGE,
        "not allowed",
    ),
    "metadata address, listed": (
        {"messages": [_image("http://169.254.169.254/latest/meta-data/")]},
        _IMAGE,
        "not allowed",
    ),
    "private address, listed": (
        {"messages": [_image("http://10.0.0.1/cat.png")]},
        _IMAGE,
        "not allowed",
    ),
    "loopback, listed": ({"messages": [_image("http://127.0.0.1/cat.png")]}, _IMAGE, "not allowed"),
    "link-local IPv6, listed": (
        {"messages": [_image("http://[fe80::1]/cat.png")]},
        _IMAGE,
        "not allowed",
    ),
    "user info hiding the host": (
        {"messages": [_image("http://images.example.com@169.254.169.254/")]},
        _IMAGE,
        "plain",
    ),
    "another scheme": ({"messages": [_image("file:///etc/passwd")]}, _IMAGE, "data URLs"),
    "too many images": (
        {"messages": [_image(png(2, 2)), _image(png(2, 2)), _image(png(2, 2))]},
        "messages[2].content[1].image_url.url",
        "at most 2 images",
    ),
    "structured_outputs with response_format": (
        {"structured_outputs": {"regex": "a+"}, "response_format": {"type": "json_object"}},
        "structured_outputs",
        "together",
    ),
    "structured_outputs with both kinds": (
        {"structured_outputs": {"regex": "a+", "choice": ["a"]}},
        None,
        "structured_outputs",
    ),
}


async def _requests_seen(stacks: dict[str, Stack]) -> int:
    return sum([(await sim_stats(s))["requests"] for s in stacks.values()])


@pytest.mark.usefixtures("features_quiet_after")
@pytest.mark.parametrize("case", CASES)
async def test_bad_chat_input_is_400_and_changes_nothing(
    features: Edge, feature_stacks: dict[str, Stack], case: str
) -> None:
    fields, param, fragment = CASES[case]
    body = {"model": "demo-vllm", "messages": [USER], "max_tokens": 16, **fields}
    seen = await _requests_seen(feature_stacks)
    async with httpx.AsyncClient(base_url=features.url, timeout=30) as client:
        response = await client.post(CHAT, json=body, headers=features.auth("metered"))
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        if param is not None:
            assert error["param"] == param, error
        assert fragment in error["message"], error
        # Nothing reserved: the key's whole token budget is there for the next request.
        good = await client.post(
            CHAT,
            json={"model": "demo-vllm", "messages": [USER], "max_tokens": 1},
            headers=features.auth("metered"),
        )
    assert good.status_code == 200, good.text
    assert await _requests_seen(feature_stacks) == seen + 1  # only the good one reached an engine


async def test_tokens_are_reserved_for_every_choice(features: Edge) -> None:
    """The "tpm-2500" key may use 2,500 tokens a minute: one choice of 900 fits, four do not."""
    client = features.client("tpm-2500")
    hi: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    fits = await client.chat.completions.create(model="demo-vllm", messages=hi, max_tokens=900)
    assert fits.choices
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="demo-vllm", messages=hi, max_tokens=900, n=4)
    assert "Request too large" in caught.value.message


@pytest.mark.usefixtures("quiet_after")
async def test_tool_choice_auto_without_a_tool_parser_is_refused(edge: Edge) -> None:
    """The session's vLLM runs without --enable-auto-tool-choice: `auto` cannot be served
    there, and vLLM's own refusal reaches the client as a 400. (SGLang without a parser
    serves tools unparsed, as the real one does.)"""
    with pytest.raises(openai.BadRequestError) as caught:
        await edge.client().chat.completions.create(
            model="demo-vllm",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=TOOLS,
            tool_choice="auto",
        )
    assert caught.value.type == "invalid_request_error"
    assert "auto" in caught.value.message


@pytest.mark.usefixtures("quiet_after")
@pytest.mark.parametrize("engine", ENGINES)
async def test_an_image_to_a_text_only_model_is_refused(edge: Edge, engine: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await edge.client().chat.completions.create(
            model=f"demo-{engine}",
            messages=[_image(png(8, 8))],  # type: ignore[list-item]
            max_tokens=4,
        )
    assert caught.value.type == "invalid_request_error"
