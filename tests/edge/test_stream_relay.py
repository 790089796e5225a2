"""A lone stream is relayed token by token, never held back for more: each token reaches
the client while the engine has not made the next one.

The engine's stall fault stops a stream after its first `after` tokens until the test lets
it go on: the client must have exactly those tokens (one logprob each) by then. After it,
the whole stream still adds up: one logprob per token the usage counts.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionChunk

from tests.support.edge import Edge
from tests.support.stacks import ENGINES, Stack


async def _stalled(stack: Stack) -> int:
    async with httpx.AsyncClient(base_url=stack.sim_url, timeout=30) as client:
        faults: dict[str, Any] = (await client.get("/sim/faults")).json()
    stalled: int = faults["stalled"]
    return stalled


def _tokens(chunk: ChatCompletionChunk) -> int:
    return sum(len(c.logprobs.content or ()) for c in chunk.choices if c.logprobs)


@pytest.mark.usefixtures("quiet_after")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("after", [1, 3])
async def test_each_token_reaches_the_client_before_the_engine_makes_the_next(
    edge: Edge, engines: dict[str, Stack], engine: str, after: int
) -> None:
    stack = engines[engine]
    async with asyncio.timeout(120), edge.client() as client:
        async with stack.stalled(count=1, after=after):
            stream = await client.chat.completions.create(
                model=stack.model,
                messages=[{"role": "user", "content": "Tell me about the yard."}],
                max_tokens=12,
                logprobs=True,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = aiter(stream)
            received = 0
            while received < after:
                received += _tokens(await anext(chunks))
            assert received == after  # no more than the engine made
            assert await _stalled(stack) == 1  # and it is still held after them
        # Let go: the rest of the stream, every token counted once.
        rest = [chunk async for chunk in chunks]
        usage = rest[-1].usage
        assert usage is not None
        assert received + sum(_tokens(c) for c in rest) == usage.completion_tokens
        assert [c.finish_reason for chunk in rest for c in chunk.choices if c.finish_reason] == [
            "length"
        ]
