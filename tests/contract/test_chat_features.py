"""The chat surface through each adapter, against each engine's simulator started with what it
needs (a tool-call parser, a multimodal model, a reasoning parser): tools (required, auto,
named, parallel, an agent loop, streamed), logprobs, n (unary, streamed, and every
generation aborted when the caller leaves), an image, reasoning.

The simulators follow one deterministic rule for tools: `auto` calls a tool when the last
message is the user's and answers in text after a tool result; the tools called are those
the last user message names (else the first), only the first without parallel calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import orjson
import pytest
from jsonschema import validate

from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.contract.conftest import sim_stats
from tests.support.canonical import generate_request
from tests.support.polling import eventually
from tests.support.request_matrix import PIXEL, TOOL_PARAMETERS, with_tools
from tests.support.stacks import ENGINES, Stack, options, running_stack

if TYPE_CHECKING:
    from tests.contract.conftest import Stub

#: The engines with a reasoning parser (TGI has none).
REASONING_ENGINES = tuple(e for e in ENGINES if e != "tgi")


@pytest.fixture(scope="session", params=ENGINES)
def chat_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    engine: str = request.param
    opts = options(tools=True, images=True)
    with running_stack(engine, tmp_path_factory.mktemp(f"chat-{engine}"), opts, "-chat") as s:
        yield s


@pytest.fixture(scope="session", params=REASONING_ENGINES)
def reasoning_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    engine: str = request.param
    opts = options(tools=True, reasoning=True)
    path = tmp_path_factory.mktemp(f"reasoning-{engine}")
    with running_stack(engine, path, opts, "-reasoning") as s:
        yield s


@pytest.fixture
async def chat_stub(chat_stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(chat_stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


@pytest.fixture
async def reasoning_stub(reasoning_stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(reasoning_stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


def ask(
    stack: Stack, text: str = "What is the weather in Oslo?", **sampling: Any
) -> pb.GenerateRequest:
    return generate_request(stack.model, messages=[("user", text)], **sampling)


def tools(stack: Stack, choice: pb.ToolChoice | None = None, **sampling: Any) -> pb.GenerateRequest:
    request = ask(stack, max_tokens=256, **sampling)
    with_tools(request, choice)
    return request


def _valid_call(call: pb.ToolCall) -> None:
    assert call.id
    arguments = orjson.loads(call.arguments)
    if call.name == "weather":
        validate(arguments, TOOL_PARAMETERS)
    else:
        assert call.name == "time_now"
        assert isinstance(arguments, dict)


REQUIRED = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)
AUTO = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO)


@pytest.mark.parametrize("choice", [REQUIRED, AUTO, None], ids=["required", "auto", "unset"])
async def test_a_tool_is_called(
    chat_stack: Stack, chat_stub: Stub, choice: pb.ToolChoice | None
) -> None:
    response = await chat_stub.Generate(tools(chat_stack, choice))
    (answer,) = response.choices
    assert answer.tool_calls, answer
    for call in answer.tool_calls:
        _valid_call(call)
    assert answer.tool_calls[0].name == "weather"  # the first tool: none is named
    assert answer.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert response.usage.completion_tokens > 0


async def test_a_named_tool_is_the_one_called(chat_stack: Stack, chat_stub: Stub) -> None:
    response = await chat_stub.Generate(tools(chat_stack, pb.ToolChoice(function="time_now")))
    (answer,) = response.choices
    assert [c.name for c in answer.tool_calls] == ["time_now"]
    _valid_call(answer.tool_calls[0])
    # OpenAI (and vLLM) finish a forced named call with "stop"; SGLang and TGI "tool_calls".
    assert answer.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_TOOL_CALLS)


async def test_none_answers_in_text(chat_stack: Stack, chat_stub: Stub) -> None:
    response = await chat_stub.Generate(
        tools(chat_stack, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE))
    )
    (answer,) = response.choices
    assert answer.text
    assert not answer.tool_calls


async def test_an_agent_loop_ends_in_text(chat_stack: Stack, chat_stub: Stub) -> None:
    request = tools(chat_stack, AUTO)
    first = (await chat_stub.Generate(request)).choices[0]
    assert first.tool_calls
    request.chat.messages.add(role="assistant", tool_calls=first.tool_calls)
    for call in first.tool_calls:
        request.chat.messages.add(role="tool", content='{"celsius": 12}', tool_call_id=call.id)
    final = (await chat_stub.Generate(request)).choices[0]
    assert final.text
    assert not final.tool_calls
    assert final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)


async def test_parallel_calls_and_one_call_when_they_are_off(
    chat_stack: Stack, chat_stub: Stub
) -> None:
    text = "Use weather and time_now, please."
    request = ask(chat_stack, text, max_tokens=256)
    with_tools(request, REQUIRED)
    calls = (await chat_stub.Generate(request)).choices[0].tool_calls
    assert [c.name for c in calls][:1] == ["weather"]
    assert {c.name for c in calls} <= {"weather", "time_now"}
    assert len({c.id for c in calls}) == len(calls)
    request.parallel_tool_calls = False
    (only,) = (await chat_stub.Generate(request)).choices[0].tool_calls
    assert only.name == "weather"


async def test_a_streamed_tool_call(chat_stack: Stack, chat_stub: Stub) -> None:
    request = tools(chat_stack, REQUIRED)
    request.include_usage = True
    messages = [m async for m in chat_stub.GenerateStream(request)]
    fragments = [f for m in messages for f in m.tool_calls]
    assert fragments
    first = fragments[0]
    assert (first.index, first.name) == (0, "weather")
    assert first.id
    arguments = "".join(f.arguments_delta for f in fragments if f.index == 0)
    validate(orjson.loads(arguments), TOOL_PARAMETERS)
    assert messages[-1].finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert messages[-1].usage.completion_tokens == sum(m.token_count for m in messages)


async def test_logprobs(chat_stack: Stack, chat_stub: Stub) -> None:
    request = ask(chat_stack, max_tokens=8, temperature=0.0)
    request.logprobs.top_logprobs = 2
    response = await chat_stub.Generate(request)
    (answer,) = response.choices
    assert answer.logprobs
    assert len(answer.logprobs) <= response.usage.completion_tokens
    for token in answer.logprobs:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 2
        assert len({t.token for t in token.top_logprobs}) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
        assert token.top_logprobs[0].token == token.token  # greedy: the most likely
    request.include_usage = True
    streamed = [t for m in [m async for m in chat_stub.GenerateStream(request)] for t in m.logprobs]
    assert [t.token for t in streamed] == [t.token for t in answer.logprobs]


async def test_prompt_logprobs_and_n(chat_stack: Stack, chat_stub: Stub) -> None:
    # Sampled (vLLM refuses n > 1 with greedy sampling).
    request = generate_request(chat_stack.model, prompt="The yard at dawn", max_tokens=4, seed=5)
    request.logprobs.top_logprobs = 2
    request.n = 2
    response = await chat_stub.Generate(request)
    assert [c.index for c in response.choices] == [0, 1]
    for choice in response.choices:
        assert choice.logprobs
        for token in choice.logprobs:
            assert token.logprob <= 0
            assert len(token.top_logprobs) == 2
    request.include_usage = True
    messages = [m async for m in chat_stub.GenerateStream(request)]
    for index in (0, 1):
        own = [m for m in messages if m.index == index]
        assert any(m.finish_reason for m in own)
        # One per token with text (an end of sequence may have none).
        assert 0 < sum(len(m.logprobs) for m in own) <= sum(m.token_count for m in own)


async def test_n_choices_unary_and_streamed(chat_stack: Stack, chat_stub: Stub) -> None:
    # No ignore_eos (TGI's HTTP API has none): a choice may end before max_tokens.
    request = ask(chat_stack, max_tokens=5, seed=3)
    one = await chat_stub.Generate(request)
    request.n = 2
    both = await chat_stub.Generate(request)
    assert [c.index for c in both.choices] == [0, 1]
    assert all(c.text and c.finish_reason for c in both.choices)
    assert 2 <= both.usage.completion_tokens <= 10  # summed over the choices
    assert both.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt, once
    request.include_usage = True
    messages = [m async for m in chat_stub.GenerateStream(request)]
    finishes = {m.index: m.finish_reason for m in messages if m.finish_reason}
    assert set(finishes) == {0, 1}
    assert messages[-1].usage.completion_tokens == sum(m.token_count for m in messages)
    for index in (0, 1):
        assert 1 <= sum(m.token_count for m in messages if m.index == index) <= 5


async def test_leaving_n_choices_aborts_every_generation(
    chat_stack: Stack, chat_stub: Stub
) -> None:
    async def idle() -> bool:
        stats = await sim_stats(chat_stack)
        return bool(stats["open_streams"] == 0 and stats["in_flight"] == 0)

    await eventually(idle, what="the engine idle")
    before = await sim_stats(chat_stack)
    request = ask(chat_stack, max_tokens=100)
    request.n = 2
    async with chat_stack.stalled():
        call = chat_stub.GenerateStream(request)
        seen: set[int] = set()
        while seen != {0, 1}:  # both choices under way
            message = await call.read()
            assert isinstance(message, pb.GenerateStreamResponse)
            seen.add(message.index)
        call.cancel()
        await eventually(idle, what="every generation aborted")
    after = await sim_stats(chat_stack)
    # One engine call with n=2 (vLLM, SGLang), or one per choice (TGI): all of them aborted.
    assert after["aborted"] - before["aborted"] == after["requests"] - before["requests"]
    assert after["completed"] == before["completed"]


async def test_an_image_data_url(chat_stack: Stack, chat_stub: Stub) -> None:
    text = ask(chat_stack, "What is in this picture?", max_tokens=8)
    without = await chat_stub.Generate(text)
    pictured = ask(chat_stack, "", max_tokens=8)
    user = pictured.chat.messages[0]
    user.parts.add(text="What is in this picture?")
    user.parts.add(image=pb.Image(url=PIXEL))
    response = await chat_stub.Generate(pictured)
    assert response.choices[0].text
    assert response.usage.prompt_tokens > without.usage.prompt_tokens  # the image's tokens


async def test_reasoning_is_kept_apart(reasoning_stack: Stack, reasoning_stub: Stub) -> None:
    request = ask(reasoning_stack, "Why is the sky blue?", max_tokens=64)
    (answer,) = (await reasoning_stub.Generate(request)).choices
    assert answer.reasoning
    assert answer.reasoning not in answer.text
    messages = [m async for m in reasoning_stub.GenerateStream(request)]
    assert "".join(m.reasoning_delta for m in messages)
    assert messages[-1].finish_reason


# -- what an engine, as started, cannot serve --------------------------------------------


async def test_an_image_to_a_text_only_model_is_an_unsupported_feature(
    stack: Stack, stub: Stub
) -> None:
    """The default stacks serve text-only models: each engine's own refusal, mapped."""
    request = ask(stack, "", max_tokens=8)
    request.chat.messages[0].parts.add(text="What is in this picture?")
    request.chat.messages[0].parts.add(image=pb.Image(url=PIXEL))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(request)
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)


async def test_tool_choice_without_a_tool_parser(stack: Stack, stub: Stub) -> None:
    """The default stacks run no tool parser. vLLM then refuses tool choice (`auto` needs
    --enable-auto-tool-choice and --tool-call-parser; `required` and a named tool need the
    parser); SGLang would serve it with calls left in the text (its adapter refuses, having
    read at readiness that SGLang has no parser); TGI has no such flag and always serves
    tools. `none` is served everywhere: no call can come back."""
    for choice in (AUTO, REQUIRED, pb.ToolChoice(function="weather")):
        call = stub.Generate(tools(stack, choice))
        if stack.engine == "tgi":
            assert (await call).choices
            continue
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = from_rpc_error(caught.value)
        assert error.reason == pb.UNSUPPORTED_FEATURE
        assert "--tool-call-parser" in error.message
    answer = await stub.Generate(tools(stack, pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)))
    assert answer.choices[0].text
    assert not answer.choices[0].tool_calls


async def test_top_logprobs_above_the_engine_s_limit(stack: Stack, stub: Stub) -> None:
    """TGI's --max-top-n-tokens is 5 by default; vLLM's and SGLang's limits are above the
    contract's 20, which the adapter enforces itself."""
    request = ask(stack, max_tokens=4)
    request.logprobs.top_logprobs = 6 if stack.engine == "tgi" else 21
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(request)
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.INVALID_REQUEST)
    assert "top_logprobs" in error.message or "top_n_tokens" in error.message
