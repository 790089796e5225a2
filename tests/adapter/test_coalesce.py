"""Deltas that arrived together go on as fewer messages, and nothing of them is lost.

Each engine's own stream (its simulator's bytes, through the engine's translation) is read
twice: every delta in a message of its own (a lone stream, one token per read), and all of
them as one batch (as if the whole stream had arrived in one read). Both must tell the
client the same thing: each choice's text, reasoning, tool calls, token count, and one
logprob per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from switchyard.adapter.coalesce import coalesce
from switchyard.adapter.translation import Delta, Translation
from switchyard.adapter_sglang.translation import SglangTranslation
from switchyard.adapter_tgi.translation import TgiTranslation
from switchyard.adapter_vllm.translation import VllmTranslation
from switchyard.devstack.components import EngineOptions, sim_args
from switchyard.enginesim.sglang import flags as sglang_flags
from switchyard.enginesim.sglang import routes as sglang_routes
from switchyard.enginesim.tgi import flags as tgi_flags
from switchyard.enginesim.tgi import routes as tgi_routes
from switchyard.enginesim.vllm import flags as vllm_flags
from switchyard.enginesim.vllm import routes as vllm_routes
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit.sse import EventDecoder
from tests.support.canonical import generate_request

MODEL = "demo"
#: No latency: the stream is read whole, once it has ended.
OPTIONS = EngineOptions(tools=True, reasoning=True, ttft_s=0, itl_s=0)
LOGPROB = pb.TokenLogprob(token="", logprob=-0.1)
WEATHER = pb.Tool(
    name="weather",
    description="The weather in a city.",
    parameters='{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}',
)


def _app(engine: str) -> Starlette:
    argv = sim_args(engine, "127.0.0.1", 0, MODEL, OPTIONS)[1:]
    if engine == "vllm":
        return vllm_routes.create_app(vllm_flags.parse(argv, environ={}))
    if engine == "sglang":
        # Its abort after a stream's end at once: the ASGI transport answers only after it.
        return sglang_routes.create_app(sglang_flags.parse([*argv, "--sim-abort-delay", "0"]))
    return tgi_routes.create_app(tgi_flags.parse(argv))


def _translation(engine: str) -> Translation:
    kinds: dict[str, type[Translation]] = {
        "vllm": VllmTranslation,
        "sglang": SglangTranslation,
        "tgi": TgiTranslation,
    }
    return kinds[engine](MODEL)


async def _deltas(engine: str, request: pb.GenerateRequest) -> list[Delta]:
    """The deltas with output (those the servicer relays) of the engine's whole stream."""
    translation = _translation(engine)
    call = translation.request(request, stream=True)
    transport = httpx.ASGITransport(app=_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        response = await client.post(call.path, json=call.body, timeout=30)
    assert response.status_code == 200, response.text
    parser = translation.stream_parser(request)
    decoder = EventDecoder()
    deltas = []
    for event in [*decoder.feed(response.content), *decoder.end()]:
        if event.data == b"[DONE]":
            break
        delta = parser.feed(event.event, orjson.loads(event.data))
        if delta is not None and (
            delta.text or delta.token_count or delta.tool_calls or delta.reasoning or delta.logprobs
        ):
            deltas.append(delta)
    return deltas


@dataclass
class Told:
    """What a choice's messages tell the client, all of them read."""

    text: str = ""
    reasoning: str = ""
    tokens: int = 0
    logprobs: list[bytes] = field(default_factory=list)
    #: Each call (by its index): id, name, arguments.
    calls: dict[int, list[str]] = field(default_factory=dict)
    #: The order in which text (t) and reasoning (r) came, runs collapsed.
    order: str = ""


def _told(messages: Sequence[pb.GenerateStreamResponse]) -> dict[int, Told]:
    told: dict[int, Told] = {}
    for m in messages:
        t = told.setdefault(m.index, Told())
        t.text += m.text_delta
        t.reasoning += m.reasoning_delta
        t.tokens += m.token_count
        t.logprobs += [lp.SerializeToString() for lp in m.logprobs]
        for fragment in m.tool_calls:
            call = t.calls.setdefault(fragment.index, ["", "", ""])
            if fragment.id:
                assert not call[0], "a call started twice"
                call[0], call[1] = fragment.id, fragment.name
            call[2] += fragment.arguments_delta
        for kind, present in (("r", m.reasoning_delta), ("t", m.text_delta)):
            if present and not t.order.endswith(kind):
                t.order += kind
    return told


def _alone(deltas: Sequence[Delta]) -> list[pb.GenerateStreamResponse]:
    return [message for delta in deltas for message in coalesce([delta])]


def _request(engine: str, **changes: Any) -> pb.GenerateRequest:
    if changes.pop("prompt", False):
        request = generate_request(MODEL, prompt="The yard at dawn", max_tokens=96, seed=7)
    else:
        request = generate_request(
            MODEL, messages=[("user", "Tell me about the yard.")], max_tokens=96, seed=7
        )
    if engine != "tgi":  # TGI generates one choice per call (the engine client fans out)
        request.n = 2
    for name, value in changes.items():
        if name == "tools":
            request.tools.extend(value)
            request.tool_choice.mode = pb.TOOL_CHOICE_MODE_REQUIRED
        elif name == "top_logprobs":
            request.logprobs.top_logprobs = value
    return request


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi"])
@pytest.mark.parametrize(
    "changes",
    [{"top_logprobs": 2}, {"prompt": True, "top_logprobs": 2}, {"tools": [WEATHER]}],
    ids=["chat-logprobs", "completion-logprobs", "tool-call"],
)
async def test_joined_messages_tell_what_each_delta_alone_told(
    engine: str, changes: dict[str, Any]
) -> None:
    deltas = await _deltas(engine, _request(engine, **dict(changes)))
    joined = coalesce(deltas)
    alone = _alone(deltas)
    assert len(joined) < len(alone)  # joined where it could be
    assert _told(joined) == _told(alone)
    told = _told(joined)
    for t in told.values():
        assert t.tokens > 0
        if "top_logprobs" in changes:
            assert t.text
            # One logprob per token (TGI counts an end of sequence it gives none for).
            assert 0 < len(t.logprobs) <= t.tokens
        else:
            assert t.calls
            assert all(c[0] and c[1] == "weather" for c in t.calls.values())


def test_only_what_keeps_its_meaning_is_joined() -> None:
    first = pb.ToolCallDelta(index=0, id="c1", name="weather", arguments_delta='{"ci')
    more = pb.ToolCallDelta(index=0, arguments_delta='ty": "Oslo"}')
    second = pb.ToolCallDelta(index=1, id="c2", name="time", arguments_delta="{}")
    deltas = [
        Delta(reasoning="Hm", token_count=1),
        Delta(reasoning="m.", token_count=1, index=1),  # another choice: its own message
        Delta(text="Let", token_count=1),  # text after reasoning: joined
        Delta(token_count=1, logprobs=(LOGPROB,)),  # a token without text: joined
        Delta(reasoning="no", token_count=1),  # reasoning after text: not joined
        Delta(text=" me", token_count=1),
        Delta(tool_calls=(first,), token_count=1),  # a call starts: a message of its own
        Delta(tool_calls=(more,), token_count=2),  # more of its arguments: joined
        Delta(tool_calls=(second,), token_count=1),  # a new call: not joined
    ]
    messages = coalesce(deltas)
    assert [(m.index, m.reasoning_delta, m.text_delta, m.token_count) for m in messages] == [
        (0, "Hm", "Let", 3), (0, "no", " me", 2), (0, "", "", 3), (0, "", "", 1),
        (1, "m.", "", 1),
    ]  # fmt: skip
    assert list(messages[2].tool_calls) == [
        pb.ToolCallDelta(index=0, id="c1", name="weather", arguments_delta='{"city": "Oslo"}')
    ]
    assert list(messages[0].logprobs) == [LOGPROB]
    assert list(messages[3].tool_calls) == [second]
    assert first.arguments_delta == '{"ci'  # the engine's deltas are left as they were
