"""Tools, logprobs, n and images through the TGI adapter to the simulated TGI, both real
processes: what TGI's chat API really answers, normalised to the contract."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import jsonschema
import orjson
import pytest
from PIL import Image

from switchyard.enginesim import images
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.stacks import Stack, options, running_stack

if TYPE_CHECKING:
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A vision model (TGI knows it from the model's config; the simulator from a flag)."""
    opts = options(images=True)
    with running_stack("tgi", tmp_path_factory.mktemp("tgi-features"), opts, "-vision") as s:
        yield s


@pytest.fixture(scope="module")
def text_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack("tgi", tmp_path_factory.mktemp("tgi-text"), name="-text") as s:
        yield s


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(stack.address) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


def _ask(stack: Stack, text: str = "What is the weather in Paris?") -> pb.GenerateRequest:
    request = generate_request(stack.model, messages=[("user", text)], max_tokens=200, seed=5)
    request.tools.add(name="get_weather", parameters=orjson.dumps(WEATHER).decode())
    request.tools.add(name="get_time", parameters=orjson.dumps(TIME).decode())
    return request


async def _streamed(stub: Stub, request: pb.GenerateRequest) -> list[pb.GenerateStreamResponse]:
    request.include_usage = True
    return [m async for m in stub.GenerateStream(request)]


@pytest.mark.parametrize(
    "choice",
    [
        pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_AUTO),
        pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_REQUIRED),
        pb.ToolChoice(function="get_time"),
    ],
    ids=["auto", "required", "named"],
)
async def test_a_call_unary_and_streamed(stack: Stack, stub: Stub, choice: pb.ToolChoice) -> None:
    request = _ask(stack)
    request.tool_choice.CopyFrom(choice)
    name = choice.function or "get_weather"
    schema = TIME if choice.function else WEATHER
    # OpenAI's reasons (and vLLM's): a named function's call ends as "stop".
    finish = pb.FINISH_REASON_STOP if choice.function else pb.FINISH_REASON_TOOL_CALLS
    response = await stub.Generate(request)
    [unary] = response.choices
    [call] = unary.tool_calls
    assert call.name == name
    assert call.id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), schema)
    assert unary.finish_reason == finish
    assert unary.text == ""
    messages = await _streamed(stub, request)
    fragments = [c for m in messages for c in m.tool_calls]
    assert fragments[0].id.startswith("call_")
    assert fragments[0].name == name
    assert all(f.id == "" and f.name == "" and f.index == 0 for f in fragments[1:])
    streamed = "".join(f.arguments_delta for f in fragments)
    assert json.loads(streamed) == json.loads(call.arguments)  # seeded: the same call
    assert messages[-1].finish_reason == finish
    assert messages[-1].usage.completion_tokens == response.usage.completion_tokens


async def test_an_agent_loop_calls_then_answers(stack: Stack, stub: Stub) -> None:
    request = _ask(stack)
    [call] = (await stub.Generate(request)).choices[0].tool_calls
    request.chat.messages.add(role="assistant").tool_calls.append(call)
    request.chat.messages.add(role="tool", content='{"sky": "clear"}', tool_call_id=call.id)
    for streamed in (False, True):
        if streamed:
            messages = await _streamed(stub, request)
            assert not any(m.tool_calls for m in messages)
            assert "".join(m.text_delta for m in messages)
            assert messages[-1].finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
        else:
            [answer] = (await stub.Generate(request)).choices
            assert answer.text
            assert not answer.tool_calls
            assert answer.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)


async def test_tools_beside_a_response_format_are_refused(stack: Stack, stub: Stub) -> None:
    request = _ask(stack)
    request.structured_output.regex = "[a-z]+"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(request)
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == pb.UNSUPPORTED_FEATURE
    # With `none`, TGI is sent no tools: the response format is honoured.
    request.tool_choice.mode = pb.TOOL_CHOICE_MODE_NONE
    text = (await stub.Generate(request)).text
    assert text.isalpha()


async def test_logprobs_unary_and_streamed(stack: Stack, stub: Stub) -> None:
    request = generate_request(stack.model, messages=[("user", "Hi")], max_tokens=6, temperature=0)
    request.logprobs.top_logprobs = 3
    [choice] = (await stub.Generate(request)).choices
    assert "".join(e.token for e in choice.logprobs) == choice.text
    for entry in choice.logprobs:
        assert entry.logprob <= 0
        assert entry.bytes == entry.token.encode()
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the most likely
    messages = await _streamed(stub, request)
    assert [e.token for m in messages for e in m.logprobs] == [e.token for e in choice.logprobs]
    request.logprobs.top_logprobs = 6  # TGI's --max-top-n-tokens is 5
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`top_n_tokens` must be >= 0 and <= 5" in (caught.value.details() or "")


async def test_n_choices_from_n_calls(stack: Stack, stub: Stub) -> None:
    request = generate_request(stack.model, messages=[("user", "Hi")], max_tokens=5)
    one = await stub.Generate(request)
    request.n = 2
    response = await stub.Generate(request)
    assert [c.index for c in response.choices] == [0, 1]
    assert response.usage.prompt_tokens == one.usage.prompt_tokens  # counted once
    assert response.usage.completion_tokens == 10
    messages = await _streamed(stub, request)
    assert {m.index for m in messages if m.finish_reason} == {0, 1}
    assert messages[-1].usage.completion_tokens == 10


def _png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _looking_at(stack: Stack, url: str | None) -> pb.GenerateRequest:
    request = generate_request(stack.model, max_tokens=4, seed=1)
    message = request.chat.messages.add(role="user")
    message.parts.add(text="What is this?")
    if url is not None:
        message.parts.add(image=pb.Image(url=url))
    return request


async def test_an_image_counts_in_the_prompt_of_a_vision_model(stack: Stack, stub: Stub) -> None:
    text = await stub.Generate(_looking_at(stack, None))
    seen = await stub.Generate(_looking_at(stack, _png(84, 56)))
    added = seen.usage.prompt_tokens - text.usage.prompt_tokens
    assert added == images.image_tokens(84, 56)


async def test_a_text_only_model_refuses_images(text_stack: Stack) -> None:
    async with grpc.aio.insecure_channel(text_stack.address) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Generate(_looking_at(text_stack, _png(8, 8)))
        error = from_rpc_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == pb.UNSUPPORTED_FEATURE
        assert (await stub.Generate(_looking_at(text_stack, None))).text
