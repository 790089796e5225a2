"""Tools, reasoning, logprobs, n and images on the vLLM simulator, through the `openai` SDK."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)
from pydantic import BaseModel

from switchyard.enginesim import images, tokenizer
from switchyard.enginesim.vllm.flags import parse
from tests.enginesim.vllm.conftest import (
    FAST,
    MODEL,
    Factory,
    SdkFactory,
    argv,
    events,
    image_url,
)

TOOLS = ("--tool-call-parser", "hermes", "--enable-auto-tool-choice", *FAST)


class Weather(BaseModel):
    city: str
    days: int


class Clock(BaseModel):
    zone: str


WEATHER = openai.pydantic_function_tool(Weather, name="get_weather")
CLOCK = openai.pydantic_function_tool(Clock, name="get_time")


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def function_calls(message: ChatCompletionMessage) -> list[ChatCompletionMessageFunctionToolCall]:
    """The message's tool calls, each a function call."""
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]


# --- tools -----------------------------------------------------------------------------


async def test_required_calls_a_tool_whose_arguments_validate(sdk: SdkFactory) -> None:
    oai = await sdk(*TOOLS)
    reply = await oai.chat.completions.create(
        model=MODEL, messages=user("Weather?"), tools=[WEATHER, CLOCK], tool_choice="required",
        seed=1,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == ""  # a forced call: vLLM's empty content
    [call] = function_calls(choice.message)
    assert call.type == "function"
    assert call.id.startswith("chatcmpl-tool-")
    assert call.function.name == "get_weather"  # none named: the first tool
    Weather.model_validate_json(call.function.arguments)
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 10


async def test_agent_loop_calls_then_answers(sdk: SdkFactory) -> None:
    oai = await sdk(*TOOLS)
    messages = user("What time is it? Use get_time.")
    first = await oai.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, CLOCK], seed=2
    )
    [call] = function_calls(first.choices[0].message)
    assert call.function.name == "get_time"
    assert first.choices[0].finish_reason == "tool_calls"
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_time", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "12:00"},
    ]
    final = await oai.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER, CLOCK], seed=2
    )
    assert final.choices[0].finish_reason == "stop"
    assert not final.choices[0].message.tool_calls
    assert final.choices[0].message.content
    assert first.usage is not None
    assert final.usage is not None
    assert final.usage.prompt_tokens > first.usage.prompt_tokens  # the call and result count


async def test_a_named_function_is_called_and_finishes_with_stop(sdk: SdkFactory) -> None:
    oai = await sdk(*TOOLS)
    reply = await oai.chat.completions.create(
        model=MODEL, messages=user("get_weather"), tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )  # fmt: skip
    [call] = function_calls(reply.choices[0].message)
    assert call.function.name == "get_time"
    assert reply.choices[0].finish_reason == "stop"  # OpenAI's reason for a forced function


async def test_parallel_tool_calls(sdk: SdkFactory) -> None:
    oai = await sdk(*TOOLS)
    ask = user("Call get_weather and get_time.")
    both = await oai.chat.completions.create(model=MODEL, messages=ask, tools=[WEATHER, CLOCK])
    names = [c.function.name for c in function_calls(both.choices[0].message)]
    assert names == ["get_weather", "get_time"]
    one = await oai.chat.completions.create(
        model=MODEL, messages=ask, tools=[WEATHER, CLOCK], parallel_tool_calls=False
    )
    assert [c.function.name for c in function_calls(one.choices[0].message)] == ["get_weather"]


async def test_streamed_tool_calls_with_the_sdk_helper(sdk: SdkFactory) -> None:
    oai = await sdk(*TOOLS)
    async with oai.chat.completions.stream(
        model=MODEL, messages=user("Weather?"), tools=[WEATHER], tool_choice="required", seed=3
    ) as stream:
        final = await stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, Weather)
    assert final.choices[0].finish_reason == "tool_calls"


async def test_streamed_tool_call_deltas_have_openai_shape(simulator: Factory) -> None:
    client, _ = await simulator(*TOOLS)
    body = {
        "model": MODEL, "messages": user("get_weather and get_time"), "stream": True,
        "tools": [WEATHER, CLOCK], "tool_choice": "required", "seed": 4,
    }  # fmt: skip
    chunks = events((await client.post("/v1/chat/completions", json=body)).text)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    deltas = [t for c in chunks for t in c["choices"][0]["delta"].get("tool_calls") or ()]
    firsts = [d for d in deltas if "id" in d]
    assert [d["function"] for d in firsts] == [{"name": "get_weather"}, {"name": "get_time"}]
    assert all(d["type"] == "function" and d["id"].startswith("chatcmpl-tool-") for d in firsts)
    later = [d for d in deltas if "id" not in d]
    assert all(
        set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in later
    )
    for index, model in ((0, Weather), (1, Clock)):
        text = "".join(d["function"]["arguments"] for d in later if d["index"] == index)
        model.model_validate_json(text)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "tool_calls"
    # No chunk carries the markup the parser consumed.
    assert "<tool_call>" not in "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks
    )


async def test_without_auto_tool_choice_the_calls_stay_text(sdk: SdkFactory) -> None:
    oai = await sdk("--tool-call-parser", "hermes", *FAST)
    reply = await oai.chat.completions.create(model=MODEL, messages=user("x"), tools=[WEATHER])
    message = reply.choices[0].message
    assert not message.tool_calls
    assert (message.content or "").startswith(tokenizer.TOOL_CALL_START)
    assert reply.choices[0].finish_reason == "stop"


async def test_a_call_cut_by_max_tokens_stays_text(sdk: SdkFactory) -> None:
    oai = await sdk(*TOOLS)
    reply = await oai.chat.completions.create(
        model=MODEL, messages=user("x"), tools=[WEATHER], tool_choice="required", max_tokens=5
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "length"  # not "tool_calls": the call is incomplete
    assert not choice.message.tool_calls
    assert (choice.message.content or "").startswith(tokenizer.TOOL_CALL_START)


@pytest.mark.parametrize(
    ("flags", "request_extra", "message"),
    [
        ((), {"tools": [WEATHER]}, '"auto" tool choice requires --enable-auto-tool-choice and'),
        ((), {"tools": [WEATHER], "tool_choice": "required"}, 'tool_choice="required" requires'),
        (
            (),
            {
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
            'tool_choice=function "get_weather" requires --tool-call-parser to be set',
        ),
        (
            TOOLS,
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "The tool specified in `tool_choice` does not match any of the specified `tools`",
        ),
        (TOOLS, {"tools": []}, "`tools` must not be an empty array."),
        (TOOLS, {"tool_choice": "required"}, "When using `tool_choice`, `tools` must be set."),
        (TOOLS, {"top_logprobs": 2}, "when using `top_logprobs`, `logprobs` must be set to true."),
    ],
)
async def test_refusals(
    simulator: Factory, flags: tuple[str, ...], request_extra: dict[str, Any], message: str
) -> None:
    client, engine = await simulator(*(flags or FAST))
    body = {"model": MODEL, "messages": user("hi"), **request_extra}
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert message in error["message"]
    assert error["type"] == "BadRequestError"
    assert engine.stats.requests == 0
    assert engine.unfinished == 0


def test_auto_tool_choice_needs_a_parser() -> None:
    with pytest.raises(SystemExit):
        parse(argv("--enable-auto-tool-choice"), environ={})


# --- reasoning ---------------------------------------------------------------------------


async def test_reasoning_is_kept_apart_whole_and_streamed(simulator: Factory) -> None:
    client, _ = await simulator("--reasoning-parser", "qwen3", *FAST)
    body: dict[str, Any] = {"model": MODEL, "messages": user("Why?"), "temperature": 0}
    whole = ChatCompletion.model_validate(
        (await client.post("/v1/chat/completions", json=body)).json()
    )
    message = whole.choices[0].message
    thought = (message.model_extra or {})["reasoning"]
    assert thought
    assert "<think>" not in thought
    assert "</think>" not in thought
    assert message.content
    assert "think>" not in message.content
    assert whole.usage is not None
    assert whole.usage.completion_tokens_details is not None
    reasoning_tokens = whole.usage.completion_tokens_details.reasoning_tokens
    assert reasoning_tokens == len(tokenizer.tokens(thought))
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    chunks = events((await client.post("/v1/chat/completions", json=stream)).text)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning") or "" for d in deltas) == thought
    assert "".join(d.get("content") or "" for d in deltas) == message.content
    assert chunks[-1]["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": reasoning_tokens
    }


async def test_without_a_reasoning_parser_there_is_no_reasoning(client: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": user("Why?"), "temperature": 0}
    message = (await client.post("/v1/chat/completions", json=body)).json()["choices"][0]["message"]
    assert message["reasoning"] is None
    assert "think>" not in message["content"]


# --- logprobs and n ------------------------------------------------------------------------


async def test_chat_logprobs(sdk: SdkFactory) -> None:
    oai = await sdk()
    reply = await oai.chat.completions.create(
        model=MODEL, messages=user("hi"), logprobs=True, top_logprobs=3, temperature=0
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content
    *shown, eos = choice.logprobs.content
    assert "".join(e.token for e in shown) == choice.message.content
    assert eos.token == tokenizer.EOS_TOKEN  # generated and counted, as in vLLM, not shown
    assert reply.usage is not None
    assert len(choice.logprobs.content) == reply.usage.completion_tokens
    for entry in choice.logprobs.content:
        assert entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen is the top
        assert len({t.token for t in entry.top_logprobs}) == 3


async def test_streamed_chat_logprobs(client: httpx.AsyncClient) -> None:
    body = {
        "model": MODEL, "messages": user("hi"), "logprobs": True, "top_logprobs": 2,
        "temperature": 0, "stream": True,
    }  # fmt: skip
    chunks = events((await client.post("/v1/chat/completions", json=body)).text)
    tokens = [
        e["token"] for c in chunks for e in (c["choices"][0]["logprobs"] or {}).get("content", [])
    ]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert "".join(tokens[:-1]) == text
    assert tokens[-1] == tokenizer.EOS_TOKEN


@pytest.mark.parametrize("stream", [False, True])
async def test_top_logprobs_above_the_limit(simulator: Factory, stream: bool) -> None:
    client, _ = await simulator("--max-logprobs", "5", *FAST)
    body = {
        "model": MODEL, "messages": user("hi"), "logprobs": True, "top_logprobs": 6,
        "stream": stream,
    }  # fmt: skip
    reply = await client.post("/v1/chat/completions", json=body)
    message = "Requested sample logprobs of 6, which is greater than max allowed: 5"
    if stream:  # vLLM checks it as the engine adds the request: inside the stream
        assert reply.status_code == 200
        [error] = events(reply.text)
        assert message in error["error"]["message"]
        assert error["error"]["code"] == 400
    else:
        assert reply.status_code == 400
        assert message in reply.json()["error"]["message"]


async def test_n_choices_and_their_usage(sdk: SdkFactory) -> None:
    oai = await sdk()
    reply = await oai.chat.completions.create(model=MODEL, messages=user("hi"), n=2, seed=5)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content != reply.choices[1].message.content
    assert reply.usage is not None
    one = await oai.chat.completions.create(model=MODEL, messages=user("hi"), seed=5)
    assert one.usage is not None
    assert reply.usage.prompt_tokens == one.usage.prompt_tokens
    assert one.choices[0].message.content == reply.choices[0].message.content
    assert reply.usage.completion_tokens > one.usage.completion_tokens  # both choices count


async def test_completions_logprobs_and_n(sdk: SdkFactory) -> None:
    oai = await sdk()
    reply = await oai.completions.create(
        model=MODEL, prompt="Once", max_tokens=5, logprobs=2, n=2, seed=1,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert [c.index for c in reply.choices] == [0, 1]
    for choice in reply.choices:
        lps = choice.logprobs
        assert lps is not None
        assert lps.tokens
        assert "".join(lps.tokens) == choice.text
        assert lps.text_offset == [
            sum(len(t) for t in lps.tokens[:k]) for k in range(len(lps.tokens))
        ]
        assert all(2 <= len(top) <= 3 for top in lps.top_logprobs or [])  # sampled + top 2
        assert all(lp is not None and lp <= 0 for lp in lps.token_logprobs or [])


# --- images --------------------------------------------------------------------------------


def with_images(*urls: str) -> list[ChatCompletionMessageParam]:
    parts: list[Any] = [{"type": "text", "text": "Describe."}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts}]


async def test_an_image_counts_in_the_prompt(sdk: SdkFactory) -> None:
    oai = await sdk("--sim-multimodal", *FAST)
    seen = await oai.chat.completions.create(
        model=MODEL, messages=with_images(image_url(280, 140)), max_tokens=1
    )
    text = await oai.chat.completions.create(model=MODEL, messages=with_images(), max_tokens=1)
    assert seen.usage is not None
    assert text.usage is not None
    placeholder = len(tokenizer.tokens("\n" + images.PLACEHOLDER))
    assert seen.usage.prompt_tokens - text.usage.prompt_tokens == 50 + placeholder  # 10 x 5 cells


@pytest.mark.parametrize(
    ("flags", "count", "message"),
    [
        (FAST, 1, f"{MODEL} is not a multimodal model"),
        (("--sim-multimodal", "--limit-mm-per-prompt", '{"image": 1}', *FAST), 2,
         "At most 1 image(s) may be provided in one prompt."),
    ],
)  # fmt: skip
async def test_images_refused(
    sdk: SdkFactory, flags: tuple[str, ...], count: int, message: str
) -> None:
    oai = await sdk(*flags)
    with pytest.raises(
        openai.BadRequestError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        await oai.chat.completions.create(
            model=MODEL, messages=with_images(*[image_url(8, 8)] * count)
        )
