"""The simulated TGI's `/chat_tokenize` counts what its chat route counts as
`prompt_tokens` (`try_into_generate`: the template, the tools' prompt, images expanded by a
vision model), and `/tokenize` what `/generate` counts; after `no_tool`, the chat route
reports its second generation, whose prompt has no tools.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from switchyard.enginesim import images
from tests.enginesim.tgi.conftest import asgi_client, make_app
from tests.enginesim.tgi.test_images import _messages, data_url
from tests.enginesim.tgi.test_tools import ASK, TOOLS, WIDE


async def _count(client: httpx.AsyncClient, **chat: Any) -> int:
    response = await client.post("/chat_tokenize", json={"model": "tgi", **chat})
    assert response.status_code == 200, response.text
    return len(response.json()["tokenize_response"])


async def _prompt_tokens(client: httpx.AsyncClient, **chat: Any) -> int:
    body = {"model": "tgi", "max_tokens": 120, "seed": 3, **chat}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    tokens: int = response.json()["usage"]["prompt_tokens"]
    return tokens


async def test_a_prompt_is_counted_as_generate_counts_it() -> None:
    async with asgi_client(make_app()) as client:
        tokens = (await client.post("/tokenize", json={"inputs": "Once upon a time"})).json()
        answer = await client.post(
            "/generate", json={"inputs": "Once upon a time", "parameters": {"max_new_tokens": 2}}
        )
        assert int(answer.headers["x-prompt-tokens"]) == len(tokens) > 0


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_time"}}],
    ids=["required", "named"],
)
async def test_a_chat_with_tools_is_counted_as_generation_counts_it(tool_choice: Any) -> None:
    async with asgi_client(make_app(*WIDE)) as client:
        chat = {"messages": ASK, "tools": TOOLS, "tool_choice": tool_choice}
        count = await _count(client, **chat)
        assert count == await _prompt_tokens(client, **chat)
        assert count > await _count(client, messages=ASK)  # the tools' prompt


async def test_after_no_tool_the_usage_is_the_prompt_without_tools() -> None:
    async with asgi_client(make_app(*WIDE)) as client:
        call = {"id": "0", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}}  # fmt: skip
        messages = [
            *ASK,
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "0", "content": "sunny"},
        ]
        with_tools = await _count(client, messages=messages, tools=TOOLS, tool_choice="auto")
        used = await _prompt_tokens(client, messages=messages, tools=TOOLS, tool_choice="auto")
        assert used == await _count(client, messages=messages) < with_tools


async def test_a_vision_model_counts_images_expanded() -> None:
    app = make_app("--sim-multimodal", "--payload-limit", "4000000")
    async with asgi_client(app) as client:
        messages = _messages(data_url(280, 280))
        count = await _count(client, messages=messages)
        assert count == await _prompt_tokens(client, messages=messages, max_tokens=4)
        text = await _count(client, messages=_messages(None))
        assert count - text == images.image_tokens(280, 280) == 100
