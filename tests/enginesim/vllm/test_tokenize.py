"""The simulated vLLM's `/tokenize` counts what its generation routes count as
`prompt_tokens`, as vLLM's does (the same renderer: chat template, tools, images expanded by
the multimodal processor), and its generations name the stop string that ended them
(`stop_reason`), unary and on the stream's finishing chunk.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.enginesim.vllm.conftest import FAST, MODEL, Factory, events, image_url

TOOLS = ("--tool-call-parser", "hermes", "--enable-auto-tool-choice", "--sim-multimodal", *FAST)
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def _post(client: httpx.AsyncClient, path: str, **body: Any) -> dict[str, Any]:
    response = await client.post(path, json={"model": MODEL, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _same_count(client: httpx.AsyncClient, **chat: Any) -> int:
    counted = await _post(client, "/tokenize", **chat)
    generated = await _post(client, "/v1/chat/completions", max_tokens=4, **chat)
    assert counted["count"] == len(counted["tokens"]) == generated["usage"]["prompt_tokens"]
    count: int = counted["count"]
    return count


def _user(text: str = "What is the weather in Oslo?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_a_prompt_is_counted_as_completions_counts_it(simulator: Factory) -> None:
    client, _ = await simulator(*TOOLS)
    counted = await _post(client, "/tokenize", prompt="Once upon a time")
    generated = await _post(client, "/v1/completions", prompt="Once upon a time", max_tokens=2)
    assert counted["count"] == generated["usage"]["prompt_tokens"] > 0
    assert counted["max_model_len"] == 1024


@pytest.mark.parametrize(
    "tool_choice", [None, "auto", "none", {"type": "function", "function": {"name": "weather"}}]
)
async def test_a_chat_with_tools_is_counted_as_generation_counts_it(
    simulator: Factory, tool_choice: Any
) -> None:
    client, _ = await simulator(*TOOLS)
    plain = await _same_count(client, messages=_user())
    choice = {} if tool_choice is None else {"tool_choice": tool_choice}
    counted = await _post(client, "/tokenize", messages=_user(), tools=[WEATHER])
    generated = await _post(
        client, "/v1/chat/completions", messages=_user(), tools=[WEATHER], max_tokens=64, **choice
    )
    assert counted["count"] == generated["usage"]["prompt_tokens"] > plain


async def test_a_tool_call_loop_is_counted(simulator: Factory) -> None:
    client, _ = await simulator(*TOOLS)
    call = {"id": "c1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}  # fmt: skip
    messages = [
        *_user(),
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"celsius": 12}'},
    ]
    looped = await _same_count(client, messages=messages, tools=[WEATHER])
    assert looped > await _same_count(client, messages=_user(), tools=[WEATHER])


async def test_images_are_counted_expanded(simulator: Factory) -> None:
    client, _ = await simulator(*TOOLS)
    parts = [
        {"type": "text", "text": "Describe these."},
        {"type": "image_url", "image_url": {"url": image_url(280, 140)}},
        {"type": "image_url", "image_url": {"url": image_url(56, 56)}},
    ]
    pictured = await _same_count(client, messages=[{"role": "user", "content": parts}])
    text = await _same_count(client, messages=_user("Describe these."))
    assert pictured > text + 50  # the first image alone is 10 x 5 cells


async def test_a_text_only_model_refuses_images_on_tokenize_too(simulator: Factory) -> None:
    client, _ = await simulator()
    parts = [{"type": "image_url", "image_url": {"url": image_url(28, 28)}}]
    response = await client.post(
        "/tokenize", json={"messages": [{"role": "user", "content": parts}]}
    )
    assert response.status_code == 400
    assert "is not a multimodal model" in response.text


async def test_a_stop_string_is_the_stop_reason(simulator: Factory) -> None:
    client, _ = await simulator()
    request = {"messages": _user("Tell me a story"), "temperature": 0, "max_tokens": 32}
    text = (await _post(client, "/v1/chat/completions", **request))["choices"][0]["message"][
        "content"
    ]
    stop = " " + text.split()[len(text.split()) // 2]
    stopped = await _post(client, "/v1/chat/completions", stop=[stop], **request)
    choice = stopped["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", stop)
    assert choice["message"]["content"] == text[: text.find(stop)]
    streamed = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "stop": [stop], "stream": True, **request},
    )
    chunks = [c for c in events(streamed.text) if c["choices"]]
    finishing = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert [(c["finish_reason"], c["stop_reason"]) for c in finishing] == [("stop", stop)]
