"""The simulated SGLang's `/v1/tokenize` renders `messages` as its chat route does (SGLang's
`to_chat_completion_request`, `_validate_request`, `_process_messages`): tools under their
tool choice and an assistant's calls count as in a generation's `prompt_tokens`; images
count as their placeholder only, as SGLang's (whose multimodal processor expands them later,
in generation). Its generations name the stop string that ended them (`matched_stop`,
native `meta_info.finish_reason.matched`).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.enginesim.sglang.conftest import MODEL, asgi, events, make_app
from tests.enginesim.sglang.test_chat_features import image_url, with_image

TOOLS = ("--tool-call-parser", "qwen25")
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLOCK = {"type": "function", "function": {"name": "time_now"}}


async def _post(client: httpx.AsyncClient, path: str, **body: Any) -> dict[str, Any]:
    response = await client.post(path, json={"model": MODEL, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _same_count(client: httpx.AsyncClient, **chat: Any) -> int:
    counted = await _post(client, "/v1/tokenize", **chat)
    generated = await _post(client, "/v1/chat/completions", max_tokens=64, **chat)
    assert counted["count"] == len(counted["tokens"]) == generated["usage"]["prompt_tokens"]
    count: int = counted["count"]
    return count


def _user(text: str = "What is the weather in Oslo?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_a_prompt_is_counted_as_generate_counts_it() -> None:
    async with asgi(make_app()) as client:
        counted = await _post(client, "/tokenize", prompt="Once upon a time")
        answer = await _post(
            client, "/generate", text="Once upon a time", sampling_params={"max_new_tokens": 2}
        )
        assert counted["count"] == answer["meta_info"]["prompt_tokens"] > 0


@pytest.mark.parametrize(
    "tool_choice",
    [None, "auto", "required", "none", {"type": "function", "function": {"name": "time_now"}}],
)
async def test_a_chat_with_tools_is_counted_as_generation_counts_it(tool_choice: Any) -> None:
    async with asgi(make_app(*TOOLS)) as client:
        choice = {} if tool_choice is None else {"tool_choice": tool_choice}
        count = await _same_count(client, messages=_user(), tools=[WEATHER, CLOCK], **choice)
        plain = await _same_count(client, messages=_user())
        if tool_choice == "none":
            assert count == plain  # SGLang lists no tools under `none`
        else:
            assert count > plain


async def test_a_tool_call_loop_is_counted() -> None:
    async with asgi(make_app(*TOOLS)) as client:
        call = {"id": "c1", "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}  # fmt: skip
        messages = [
            *_user(),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"celsius": 12}'},
        ]
        looped = await _same_count(client, messages=messages, tools=[WEATHER])
        assert looped > await _same_count(client, messages=_user(), tools=[WEATHER])


async def test_tokenize_refuses_what_the_chat_route_refuses() -> None:
    async with asgi(make_app()) as client:
        body: dict[str, Any]
        for body in (
            {"messages": _user(), "tool_choice": "required"},
            {"messages": with_image(image_url(28, 28))},  # a text-only model
            {"messages": []},
        ):
            counted = await client.post("/v1/tokenize", json=body)
            generated = await client.post("/v1/chat/completions", json=body)
            assert counted.status_code == generated.status_code == 400, body
            assert counted.json()["message"] == generated.json()["message"]


async def test_an_image_counts_as_its_placeholder_only() -> None:
    async with asgi(make_app("--sim-multimodal")) as client:
        messages = with_image(image_url(280, 140))
        counted = (await _post(client, "/v1/tokenize", messages=messages))["count"]
        generated = await _post(client, "/v1/chat/completions", messages=messages, max_tokens=4)
        assert generated["usage"]["prompt_tokens"] == counted + 50  # 10 x 5 cells


async def test_a_stop_string_is_the_matched_stop() -> None:
    async with asgi(make_app()) as client:
        request = {"messages": _user("Tell me a story"), "temperature": 0, "max_tokens": 32}
        answer = await _post(client, "/v1/chat/completions", **request)
        text = answer["choices"][0]["message"]["content"]
        stop = " " + text.split()[len(text.split()) // 2]
        choice = (await _post(client, "/v1/chat/completions", stop=[stop], **request))["choices"][0]
        assert (choice["finish_reason"], choice["matched_stop"]) == ("stop", stop)
        assert choice["message"]["content"] == text[: text.find(stop)]
        streamed = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "stop": [stop], "stream": True, **request}
        )
        finishing = [
            c["choices"][0]
            for c in events(streamed.text)
            if c.get("choices") and c["choices"][0]["finish_reason"]
        ]
        assert [(c["finish_reason"], c["matched_stop"]) for c in finishing] == [("stop", stop)]
        native = await _post(
            client,
            "/generate",
            text="Tell me a story",
            sampling_params={"temperature": 0, "max_new_tokens": 32},
        )
        stop = " " + native["text"].split()[len(native["text"].split()) // 2]
        stopped = await _post(
            client,
            "/generate",
            text="Tell me a story",
            sampling_params={"temperature": 0, "max_new_tokens": 32, "stop": [stop]},
        )
        assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
