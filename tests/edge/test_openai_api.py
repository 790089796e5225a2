"""The official `openai` SDK against the running stack: what an application developer sees."""

from __future__ import annotations

from enum import StrEnum

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from tests.support.edge import Edge
from tests.support.stacks import ENGINES

pytestmark = pytest.mark.usefixtures("quiet_after")


class Category(StrEnum):
    billing = "billing"
    technical = "technical"
    account = "account"
    shipping = "shipping"


class Priority(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    urgent = "urgent"


class TicketAnalysis(BaseModel):
    category: Category
    priority: Priority
    summary: str
    sentiment: float
    key_issues: list[str]
    requires_human: bool


HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Describe a switchyard."}]


@pytest.mark.parametrize("engine", ENGINES)
async def test_chat_and_completions(edge: Edge, engine: str) -> None:
    client = edge.client()
    chat = await client.chat.completions.create(
        model=f"demo-{engine}", messages=HELLO, max_tokens=16
    )
    choice = chat.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert chat.model == f"demo-{engine}"
    assert chat.usage is not None
    assert chat.usage.prompt_tokens > 0
    assert 0 < chat.usage.completion_tokens <= 16
    text = await client.completions.create(
        model=f"demo-{engine}", prompt="Once upon a time", max_tokens=8
    )
    assert text.choices[0].text
    assert text.usage is not None
    assert text.usage.completion_tokens <= 8


@pytest.mark.parametrize("engine", ENGINES)
async def test_streaming_with_usage(edge: Edge, engine: str) -> None:
    client = edge.client()
    args = {
        "model": f"demo-{engine}",
        "messages": HELLO,
        "max_tokens": 40,
        "seed": 7,
        "temperature": 1.0,
    }
    stream = await client.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[call-overload]
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert len(finishes) == 1
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].choices == []
    whole = await client.chat.completions.create(**args)  # type: ignore[call-overload]
    assert whole.choices[0].message.content == text
    assert whole.usage == usage


async def test_completions_stream_without_usage(edge: Edge) -> None:
    stream = await edge.client().completions.create(
        model="demo-tgi", prompt="The yard", max_tokens=6, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize("engine", ENGINES)
async def test_parse_ticket_analysis(edge: Edge, engine: str) -> None:
    completion = await edge.client().chat.completions.parse(
        model=f"demo-{engine}",
        messages=[
            {"role": "user", "content": "My invoice was charged twice and support never answered."}
        ],
        response_format=TicketAnalysis,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, TicketAnalysis)
    assert isinstance(parsed.category, Category)
    assert isinstance(parsed.priority, Priority)


async def test_models_list_shows_only_what_the_key_may_use(edge: Edge) -> None:
    everything = sorted([m.id async for m in edge.client().models.list()])
    assert everything == ["demo-sglang", "demo-tgi", "demo-vllm"]
    limited = [m.id async for m in edge.client("vllm-only").models.list()]
    assert limited == ["demo-vllm"]
    assert (await edge.client("vllm-only").models.retrieve("demo-vllm")).id == "demo-vllm"
    with pytest.raises(openai.NotFoundError):
        await edge.client("vllm-only").models.retrieve("demo-tgi")


async def test_unknown_key_is_authentication_error(edge: Edge) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await edge.client("sy-not-a-real-key").chat.completions.create(
            model="demo-vllm", messages=HELLO
        )
    assert caught.value.code == "invalid_api_key"
    assert "sy-not-a-real-key" not in str(caught.value)
    with pytest.raises(openai.AuthenticationError):
        await edge.client("sy-not-a-real-key").models.list()


async def test_model_not_allowed_or_missing_is_not_found(edge: Edge) -> None:
    for key, model in (("vllm-only", "demo-tgi"), ("full", "no-such-model")):
        with pytest.raises(openai.NotFoundError) as caught:
            await edge.client(key).chat.completions.create(model=model, messages=HELLO)
        assert caught.value.code == "model_not_found"
        assert f"'{model}' does not exist or you do not have access to it" in caught.value.message


async def test_past_the_keys_limit_is_rate_limit_error(edge: Edge) -> None:
    client = edge.client("tight")  # 3 requests per minute
    for _ in range(3):
        await client.completions.create(model="demo-vllm", prompt="x", max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.completions.create(model="demo-vllm", prompt="x", max_tokens=1)
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert caught.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("engine", ENGINES)
async def test_context_overflow_is_bad_request(edge: Edge, engine: str) -> None:
    long_prompt = "switchyard " * 3000
    with pytest.raises(openai.BadRequestError) as caught:
        await edge.client().chat.completions.create(
            model=f"demo-{engine}",
            messages=[{"role": "user", "content": long_prompt}],
            max_tokens=16,
        )
    assert caught.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"temperature": 5}, "temperature"),
        ({"n": 9}, "at most 8 choices"),
        ({"max_tokens": 10**12}, "max_tokens"),
        ({"logprobs": 1}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"1": 1.0}}, "logit_bias is not supported"),
        ({"frobnicate": 1}, "frobnicate"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": 12}},
                }
            },
            "JSON Schema",
        ),
    ],
)
async def test_invalid_parameters_are_bad_request(
    edge: Edge, extra: dict[str, object], fragment: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await edge.client().chat.completions.create(
            model="demo-vllm", messages=HELLO, extra_body=extra
        )
    assert fragment in caught.value.message
    assert caught.value.type == "invalid_request_error"
