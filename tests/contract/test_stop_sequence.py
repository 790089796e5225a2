"""`stop_sequence` over gRPC, on each adapter against its engine's simulator: a caller's stop
string that ends a choice is named on it (unary choices, and a stream's last message), for
prompts and chats; a choice that ends on its end-of-sequence token or its length names none.

Greedy outputs are the same with and without stop strings, so a stop string is picked from
an output first generated without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from switchyard.inference.v1 import inference_pb2 as pb
from tests.support.canonical import generate_request
from tests.support.stacks import Stack

if TYPE_CHECKING:
    from tests.contract.conftest import Stub


def request_of(stack: Stack, kind: str, **sampling: Any) -> pb.GenerateRequest:
    if kind == "prompt":
        return generate_request(stack.model, prompt="Tell me a story", temperature=0, **sampling)
    return generate_request(
        stack.model, messages=[("user", "Tell me a story")], temperature=0, **sampling
    )


async def streamed(
    stub: Stub, request: pb.GenerateRequest
) -> tuple[str, pb.GenerateStreamResponse]:
    """The stream's text and its last message."""
    messages = [m async for m in stub.GenerateStream(request)]
    return "".join(m.text_delta for m in messages), messages[-1]


async def a_stop_in(stub: Stub, request: pb.GenerateRequest) -> tuple[str, str]:
    """A word of the unstopped output (past its first) and the text before it."""
    text = (await stub.Generate(request)).choices[0].text
    words = text.split()
    assert len(words) >= 4, text
    stop = " " + words[len(words) // 2]
    at = text.find(stop)
    assert at > 0, (text, stop)
    return stop, text[:at]


@pytest.mark.parametrize("kind", ["prompt", "chat"])
async def test_a_stop_string_is_named(stack: Stack, stub: Stub, kind: str) -> None:
    stop, before = await a_stop_in(stub, request_of(stack, kind, max_tokens=32))
    request = request_of(stack, kind, max_tokens=32, stop=[stop, "never-generated-zz"])
    (choice,) = (await stub.Generate(request)).choices
    assert (choice.text, choice.finish_reason, choice.stop_sequence) == (
        before,
        pb.FINISH_REASON_STOP,
        stop,
    )
    text, last = await streamed(stub, request)
    assert (text, last.finish_reason, last.stop_sequence) == (before, pb.FINISH_REASON_STOP, stop)


@pytest.mark.parametrize("kind", ["prompt", "chat"])
async def test_the_end_of_sequence_names_no_stop(stack: Stack, stub: Stub, kind: str) -> None:
    """No max_tokens: the output runs to the model's end-of-sequence token."""
    request = request_of(stack, kind, stop=["never-generated-zz"])
    (choice,) = (await stub.Generate(request)).choices
    assert (choice.finish_reason, choice.stop_sequence) == (pb.FINISH_REASON_STOP, "")
    _, last = await streamed(stub, request)
    assert (last.finish_reason, last.stop_sequence) == (pb.FINISH_REASON_STOP, "")


async def test_a_length_finish_names_no_stop(stack: Stack, stub: Stub) -> None:
    stop, _ = await a_stop_in(stub, request_of(stack, "chat", max_tokens=32))
    # Cut before the stop string is reached.
    request = request_of(stack, "chat", max_tokens=1, stop=[stop])
    (choice,) = (await stub.Generate(request)).choices
    assert (choice.finish_reason, choice.stop_sequence) == (pb.FINISH_REASON_LENGTH, "")
    _, last = await streamed(stub, request)
    assert (last.finish_reason, last.stop_sequence) == (pb.FINISH_REASON_LENGTH, "")
