"""CountTokens over gRPC, on each adapter against its engine's simulator: the count is the
prompt tokens a Generate of the same request reads (its `usage.prompt_tokens`), for a
prompt, a chat, a chat with tools under every tool choice, a tool-call loop and an image;
refused as Generate refuses.

Where an engine cannot count exactly, the adapter refuses rather than undercount: SGLang's
tokenize route counts an image as one placeholder token (generation expands it later).
TGI answers an `auto` turn in text by generating again without the tools (after the model
picked `no_tool`), and reports that second prompt: the count (with tools) is then above
the usage, which is the count of the same chat without tools.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest

from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.request_matrix import PIXEL, with_tools
from tests.support.stacks import ENGINES, Stack, options, running_stack

if TYPE_CHECKING:
    from tests.contract.conftest import Stub

AUTO = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO)
REQUIRED = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED)
NONE = pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_NONE)
NAMED = pb.ToolChoice(function="time_now")


@pytest.fixture(scope="session", params=ENGINES)
def count_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    engine: str = request.param
    opts = options(tools=True, images=True)
    path = tmp_path_factory.mktemp(f"count-{engine}")
    with running_stack(engine, path, opts, "-count") as s:
        yield s


@pytest.fixture
async def count_stub(count_stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(count_stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


def chat(stack: Stack, text: str = "What is the weather in Oslo?") -> pb.GenerateRequest:
    return generate_request(
        stack.model,
        messages=[("system", "You are terse."), ("user", text)],
        max_tokens=64,
    )


async def counted(stub: Stub, request: pb.GenerateRequest) -> tuple[int, int]:
    """(CountTokens, Generate's usage.prompt_tokens) of `request`."""
    count = await stub.CountTokens(request)
    response = await stub.Generate(request)
    return count.input_tokens, response.usage.prompt_tokens


async def test_a_prompt(count_stack: Stack, count_stub: Stub) -> None:
    request = generate_request(count_stack.model, prompt="Once upon a time", max_tokens=8)
    count, used = await counted(count_stub, request)
    assert count == used > 0


async def test_a_chat_unary_and_streamed(count_stack: Stack, count_stub: Stub) -> None:
    request = chat(count_stack)
    count, used = await counted(count_stub, request)
    assert count == used > 0
    request.include_usage = True
    streamed = [m async for m in count_stub.GenerateStream(request)]
    assert streamed[-1].usage.prompt_tokens == count
    # A longer chat counts more: the count is the chat's, not a constant.
    longer = chat(count_stack, "What is the weather in Oslo, Bergen and Trondheim tomorrow?")
    assert (await count_stub.CountTokens(longer)).input_tokens > count


async def test_n_choices_read_the_prompt_once(count_stack: Stack, count_stub: Stub) -> None:
    request = chat(count_stack)
    request.n = 2
    count, used = await counted(count_stub, request)
    assert count == used


@pytest.mark.parametrize(
    "choice",
    [None, AUTO, REQUIRED, NONE, NAMED],
    ids=["unset", "auto", "required", "none", "named"],
)
async def test_a_chat_with_tools(
    count_stack: Stack, count_stub: Stub, choice: pb.ToolChoice | None
) -> None:
    request = chat(count_stack)
    with_tools(request, choice)
    count, used = await counted(count_stub, request)
    assert count == used
    plain = (await count_stub.CountTokens(chat(count_stack))).input_tokens
    if choice == NONE and count_stack.engine != "vllm":
        # SGLang lists no tools to the template under `none`; TGI is sent none.
        assert count == plain
    else:  # the tools' definitions are part of the prompt
        assert count > plain


async def test_a_tool_call_loop(count_stack: Stack, count_stub: Stub) -> None:
    request = chat(count_stack)
    with_tools(request, AUTO)
    count, used = await counted(count_stub, request)
    assert count == used
    first = (await count_stub.Generate(request)).choices[0]
    assert first.tool_calls
    request.chat.messages.add(role="assistant", tool_calls=first.tool_calls)
    for call in first.tool_calls:
        request.chat.messages.add(role="tool", content='{"celsius": 12}', tool_call_id=call.id)
    count_after = (await count_stub.CountTokens(request)).input_tokens
    final = await count_stub.Generate(request)
    assert final.choices[0].text
    assert not final.choices[0].tool_calls
    assert count_after > count  # the call and its result are read too
    if count_stack.engine == "tgi":
        # The text answer is TGI's second generation, without the tools.
        without = pb.GenerateRequest()
        without.CopyFrom(request)
        without.tool_choice.CopyFrom(NONE)
        assert final.usage.prompt_tokens == (await count_stub.CountTokens(without)).input_tokens
        assert final.usage.prompt_tokens < count_after
    else:
        assert final.usage.prompt_tokens == count_after


async def test_an_image(count_stack: Stack, count_stub: Stub) -> None:
    request = chat(count_stack, "")
    user = request.chat.messages[1]
    user.parts.add(text="What is in this picture?")
    user.parts.add(image=pb.Image(url=PIXEL))
    if count_stack.engine == "sglang":
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await count_stub.CountTokens(request)
        error = from_rpc_error(caught.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.UNSUPPORTED_FEATURE,
        )
        assert error.metadata.get("param") == "messages"
        return
    count, used = await counted(count_stub, request)
    assert count == used
    text_only = chat(count_stack, "What is in this picture?")
    assert count > (await count_stub.CountTokens(text_only)).input_tokens  # the image's tokens


async def test_refused_as_generate_refuses(count_stack: Stack, count_stub: Stub) -> None:
    for request in (
        generate_request("no-such-model", prompt="hi", max_tokens=8),
        generate_request(count_stack.model, max_tokens=8),  # neither prompt nor chat
    ):
        with pytest.raises(grpc.aio.AioRpcError) as generated:
            await count_stub.Generate(request)
        with pytest.raises(grpc.aio.AioRpcError) as counting:
            await count_stub.CountTokens(request)
        assert counting.value.code() == generated.value.code() != grpc.StatusCode.OK
        assert from_rpc_error(counting.value).reason == from_rpc_error(generated.value).reason
