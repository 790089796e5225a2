"""Deltas that arrived together, relayed as few stream messages as the contract allows.

Every message costs the same on its way (a gRPC write, a read, an SSE chunk, a socket write
at the edge), whatever it carries; so when one read of the engine's stream gave several
deltas, consecutive ones of the same choice go on as one message: their text, reasoning
and a tool call's argument fragments joined, their token counts summed, their logprobs
listed one per token as before. Nothing waits for a later delta: a lone stream, whose
engine sends one token per read, still gets one message per token at once.

What is never joined: deltas of different choices (each choice's are joined apart, in
their order; the order among choices is no part of the stream), reasoning after text (the order of the
two would be lost), a tool call's fragment after anything but the same call's fragments,
and a new call's first fragment (its id and name start the call).
"""

from __future__ import annotations

from collections.abc import Sequence

from switchyard.adapter.translation import Delta
from switchyard.inference.v1 import inference_pb2 as pb


def coalesce(deltas: Sequence[Delta]) -> list[pb.GenerateStreamResponse]:
    """The messages for `deltas` (each with output): each choice's in its order, joined
    where they may be (the choices' order among each other is no part of the stream)."""
    if len(deltas) == 1:
        return [_message(deltas)]
    first = deltas[0].index
    if all(d.index == first for d in deltas):
        return _runs(deltas)
    by_choice: dict[int, list[Delta]] = {}
    for delta in deltas:
        by_choice.setdefault(delta.index, []).append(delta)
    return [message for run in by_choice.values() for message in _runs(run)]


def _runs(deltas: Sequence[Delta]) -> list[pb.GenerateStreamResponse]:
    """One choice's deltas, each run of joinable ones as one message."""
    messages = []
    start = 0
    texted = bool(deltas[0].text)  # the run so far has text: no reasoning may join it
    for i in range(1, len(deltas)):
        delta = deltas[i]
        if not _joins(deltas[i - 1], delta, texted):
            messages.append(_message(deltas[start:i]))
            start, texted = i, False
        texted = texted or bool(delta.text)
    messages.append(_message(deltas[start:]))
    return messages


def _joins(before: Delta, delta: Delta, texted: bool) -> bool:
    """Whether `delta` may go on in the message of the run that `before` ends (of the same
    choice; `texted`: the run has text)."""
    if before.tool_calls or delta.tool_calls:
        return _continues_call(before, delta)
    return not (texted and delta.reasoning)


def _continues_call(before: Delta, delta: Delta) -> bool:
    """`delta` is only more of the arguments of `before`'s last tool call."""
    if not before.tool_calls or delta.text or delta.reasoning or len(delta.tool_calls) != 1:
        return False
    fragment = delta.tool_calls[0]
    return not fragment.id and not fragment.name and fragment.index == before.tool_calls[-1].index


def _message(run: Sequence[Delta]) -> pb.GenerateStreamResponse:
    """One message for a run of joinable deltas (only what they have is set)."""
    first = run[0]
    if len(run) == 1:
        message = pb.GenerateStreamResponse(
            text_delta=first.text, token_count=first.token_count, index=first.index
        )
        if first.reasoning:
            message.reasoning_delta = first.reasoning
        if first.tool_calls:
            message.tool_calls.extend(first.tool_calls)
        if first.logprobs:
            message.logprobs.extend(first.logprobs)
        return message
    message = pb.GenerateStreamResponse(
        text_delta="".join([d.text for d in run]),
        token_count=sum([d.token_count for d in run]),
        index=first.index,
    )
    reasoning = "".join([d.reasoning for d in run])
    if reasoning:
        message.reasoning_delta = reasoning
    if first.tool_calls:
        message.tool_calls.extend(first.tool_calls)  # copied: the deltas' stay as they were
        more = "".join([d.tool_calls[0].arguments_delta for d in run[1:]])
        message.tool_calls[-1].arguments_delta += more
    for delta in run:
        if delta.logprobs:
            message.logprobs.extend(delta.logprobs)
    return message
