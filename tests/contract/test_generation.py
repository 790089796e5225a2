"""Generation through each adapter: the same canonical requests, the same guarantees."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from jsonschema import validate
from pydantic import BaseModel

from switchyard.inference.v1 import inference_pb2 as pb
from tests.contract.conftest import sim_stats
from tests.support.canonical import generate_request
from tests.support.stacks import Stack

if TYPE_CHECKING:
    from tests.contract.conftest import Stub


class Category(StrEnum):
    billing = "billing"
    technical = "technical"
    account = "account"
    other = "other"


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


def prompt_request(stack: Stack, **sampling: Any) -> pb.GenerateRequest:
    return generate_request(stack.model, prompt="The switchyard at dawn was", **sampling)


def chat_request(stack: Stack, **sampling: Any) -> pb.GenerateRequest:
    messages = [("system", "You are terse."), ("user", "Describe a switchyard in one sentence.")]
    return generate_request(stack.model, messages=messages, **sampling)


BUILDERS = {"prompt": prompt_request, "chat": chat_request}


async def collect(
    stub: Stub, request: pb.GenerateRequest
) -> tuple[str, list[pb.GenerateStreamResponse]]:
    messages = [m async for m in stub.GenerateStream(request)]
    return "".join(m.text_delta for m in messages), messages


@pytest.mark.parametrize("kind", BUILDERS)
async def test_unary(stack: Stack, stub: Stub, kind: str) -> None:
    response = await stub.Generate(BUILDERS[kind](stack, max_tokens=64))
    assert response.text
    assert response.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 64


@pytest.mark.parametrize("kind", BUILDERS)
async def test_stream(stack: Stack, stub: Stub, kind: str) -> None:
    request = BUILDERS[kind](stack, max_tokens=64, seed=11)
    request.include_usage = True
    text, messages = await collect(stub, request)
    *body, last = messages
    assert text
    assert body, "text arrives before the last message"
    assert all(m.finish_reason == pb.FINISH_REASON_UNSPECIFIED for m in body)
    assert last.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert last.HasField("usage")
    assert last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens == sum(m.token_count for m in messages)
    # The same seed gives the same text unary and streamed.
    unary = await stub.Generate(BUILDERS[kind](stack, max_tokens=64, seed=11))
    assert unary.text == text


async def test_stream_without_usage(stack: Stack, stub: Stub) -> None:
    _, messages = await collect(stub, prompt_request(stack, max_tokens=8))
    assert not messages[-1].HasField("usage")


@pytest.mark.parametrize("kind", BUILDERS)
async def test_max_tokens_is_honoured(stack: Stack, stub: Stub, kind: str) -> None:
    response = await stub.Generate(BUILDERS[kind](stack, max_tokens=3, seed=5))
    assert response.finish_reason == pb.FINISH_REASON_LENGTH
    assert response.usage.completion_tokens == 3
    _, messages = await collect(stub, BUILDERS[kind](stack, max_tokens=3, seed=5))
    assert sum(m.token_count for m in messages) == 3
    assert messages[-1].finish_reason == pb.FINISH_REASON_LENGTH


def _a_stop_word(text: str) -> tuple[str, int]:
    """A word of `text` whose first occurrence is a whole word past the start, and its index."""
    for match in re.finditer(r"(?<=\s)([A-Za-z]{4,})(?![A-Za-z])", text):
        word = match.group(1)
        if text.find(word) == match.start() and match.start() > len(text) // 4:
            return word, match.start()
    raise AssertionError(f"no usable stop word in {text!r}")


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_stop_sequence_ends_the_output_before_it(
    stack: Stack, stub: Stub, kind: str, streamed: bool
) -> None:
    free = await stub.Generate(BUILDERS[kind](stack, max_tokens=200, seed=1234, temperature=1.0))
    word, index = _a_stop_word(free.text)
    request = BUILDERS[kind](
        stack, max_tokens=200, seed=1234, temperature=1.0, stop=["zzzz-never", word]
    )
    if streamed:
        text, messages = await collect(stub, request)
        finish = messages[-1].finish_reason
    else:
        response = await stub.Generate(request)
        text, finish = response.text, response.finish_reason
    assert finish == pb.FINISH_REASON_STOP
    assert text == free.text[:index]
    assert word not in text


def _with(request: pb.GenerateRequest, **constraint: object) -> pb.GenerateRequest:
    for name, value in constraint.items():
        if name == "choice":
            request.structured_output.choice.choices.extend(value)  # type: ignore[arg-type]
        elif name == "json_object":
            request.structured_output.json_object.SetInParent()
        else:
            setattr(request.structured_output, name, value)
    return request


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_json_schema_output_validates(
    stack: Stack, stub: Stub, kind: str, streamed: bool
) -> None:
    schema = TicketAnalysis.model_json_schema()
    request = _with(
        BUILDERS[kind](stack, max_tokens=512), json_schema=orjson.dumps(schema).decode()
    )
    text = (await collect(stub, request))[0] if streamed else (await stub.Generate(request)).text
    document = orjson.loads(text)
    validate(document, schema)
    TicketAnalysis.model_validate(document)


async def test_json_object_output_is_any_object(stack: Stack, stub: Stub) -> None:
    """JSON mode can produce any object, keys included: on TGI (outlines-core) and SGLang
    (xgrammar strict) a schema with `properties: {}` admits only `{}`."""
    objects = []
    for seed in range(3):
        for build in (chat_request, prompt_request):
            request = _with(build(stack, max_tokens=256, seed=seed), json_object=True)
            objects.append(orjson.loads((await stub.Generate(request)).text))
    assert all(isinstance(o, dict) for o in objects), objects
    assert any(objects), f"only empty objects: {objects}"


async def test_regex_output_matches(stack: Stack, stub: Stub) -> None:
    pattern = r"[A-Z]{3}-\d{4}"
    for seed in range(3):
        response = await stub.Generate(
            _with(prompt_request(stack, max_tokens=32, seed=seed), regex=pattern)
        )
        assert re.fullmatch(pattern, response.text), response.text


async def test_choice_output_is_one_of_them(stack: Stack, stub: Stub) -> None:
    choices = ["positive", "negative", "neutral"]
    seen = set()
    for seed in range(6):
        response = await stub.Generate(
            _with(chat_request(stack, max_tokens=8, seed=seed), choice=choices)
        )
        assert response.text in choices
        seen.add(response.text)
    assert len(seen) > 1, "the choice should depend on the seed"


async def test_list_models(stack: Stack, stub: Stub) -> None:
    response = await stub.ListModels(pb.ListModelsRequest())
    assert [(m.id, m.engine) for m in response.models] == [(stack.model, stack.engine)]
    assert response.models[0].max_model_len == stack.options.max_model_len


async def test_engine_receives_the_callers_trace(stack: Stack, stub: Stub) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    request = prompt_request(stack, max_tokens=4)
    request.request_id = "trace-check-" + stack.engine
    await stub.Generate(request, metadata=(("traceparent", traceparent),))
    stream = stub.GenerateStream(request, metadata=(("traceparent", traceparent),))
    messages = [m async for m in stream]  # the streamed path too
    assert messages
    recent = (await sim_stats(stack))["recent"]
    seen = [r["traceparent"] for r in recent if trace_id in (r["traceparent"] or "")]
    assert len(seen) >= 2, "both calls reached the engine with the caller's trace id"
    # The engine's parent is the adapter's client span, not the caller's span.
    assert all(tp.split("-")[2] != "00f067aa0ba902b7" for tp in seen)
