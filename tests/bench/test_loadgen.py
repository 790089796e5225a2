"""The load generator's stream timing: one gap per text chunk after the first, whatever
way the chunks were written (no timing asserted)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from switchyard.bench.loadgen import Sender, Target, session
from switchyard.bench.stats import summarize
from switchyard.bench.wire import Workload

_ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
_TEXT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
_USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n'


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in (_ROLE, _TEXT, _TEXT, _TEXT):  # one write each
        await response.write(event)
    await response.write(_TEXT * 2 + _USAGE + b"data: [DONE]\n\n")  # several in one write
    await response.write_eof()
    return response


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_stream_has_one_gap_per_chunk_after_the_first(server: str) -> None:
    async with session(1) as client:
        sender = Sender(client, Target(server, "m"), Workload("chat", True, 5))
        samples = [await sender.send() for _ in range(3)]
    for sample in samples:
        assert (sample.ok, sample.tokens) == (True, 5)
        assert sample.ttft_s is not None
        assert len(sample.gaps) == 4  # five text chunks
        assert all(gap >= 0 for gap in sample.gaps)
        assert sample.ttft_s + sum(sample.gaps) <= sample.latency_s
    summary = summarize(samples, 1.0)
    assert summary.tokens == 15
    assert 0 <= summary.gap_p50_s <= summary.gap_p99_s <= max(max(s.gaps) for s in samples)
