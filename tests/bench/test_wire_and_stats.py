"""The bench's accounting, without servers: SSE reading, request bodies, percentiles, summaries."""

from __future__ import annotations

import math

import orjson
import pytest

from switchyard.bench.loadgen import Sample
from switchyard.bench.scenarios import default_plan, select
from switchyard.bench.stats import added, percentile, summarize
from switchyard.bench.wire import StreamReader, Workload, completion_tokens, request_body

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def test_a_stream_split_anywhere_counts_the_same() -> None:
    stream = ROLE + CHUNK * 3 + b": keep-alive\n\n" + CHUNK + b"data: [DONE]\n\n"
    for size in (1, 7, 64, len(stream)):
        reader = StreamReader()
        firsts = [reader.feed(stream[i : i + size]) for i in range(0, len(stream), size)]
        assert (reader.tokens, reader.done, reader.error) == (4, True, None)
        assert sum(firsts) == 4


def test_completions_chunks_and_error_events() -> None:
    reader = StreamReader()
    reader.feed(b'data: {"choices":[{"index":0,"text":" a"}]}\n\n')
    reader.feed(b'data: {"error":{"message":"gone","code":"timeout"}}\n\n')
    assert reader.tokens == 1
    assert reader.error is not None
    assert "timeout" in reader.error
    assert not reader.done


def test_request_bodies_ask_for_exactly_max_tokens() -> None:
    chat = orjson.loads(request_body(Workload("chat", True, 8), "m"))
    assert chat["messages"][0]["role"] == "user"
    assert (chat["max_tokens"], chat["ignore_eos"], chat["stream"]) == (8, True, True)
    text = orjson.loads(request_body(Workload("completions", False, 3), "m"))
    assert "prompt" in text
    assert Workload("completions").path == "/v1/completions"
    assert completion_tokens(b'{"usage": {"completion_tokens": 3}}') == 3
    with pytest.raises(ValueError, match="not a completion"):
        completion_tokens(b'{"error": {}}')


def test_the_tools_body_offers_one_tool_that_must_be_called() -> None:
    body = orjson.loads(request_body(Workload("chat", False, 64, tools=True), "m"))
    (tool,) = body["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "get_weather"
    assert body["tool_choice"] == "required"
    assert "ignore_eos" not in body  # a call ends with its arguments
    called = (
        b'{"choices":[{"message":{"tool_calls":[{"id":"c"}]}}],"usage":{"completion_tokens":9}}'
    )
    assert completion_tokens(called, tool_call=True) == 9
    text = b'{"choices":[{"message":{"content":"hi"}}],"usage":{"completion_tokens":2}}'
    assert completion_tokens(text) == 2
    with pytest.raises(ValueError, match="no tool call"):
        completion_tokens(text, tool_call=True)


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="q must be"):
        percentile(values, 101)


def test_summaries_count_successes_and_name_errors() -> None:
    samples = [Sample(0, 0.010 * (i + 1), None, 16, 200) for i in range(10)]
    samples.append(Sample(0, 0.5, None, 0, 429, "HTTP 429: busy"))
    samples.append(Sample(0, 0.5, None, 0, 0, "ClientConnectorError"))
    summary = summarize(samples, duration_s=2.0)
    assert (summary.requests, summary.ok) == (12, 10)
    assert summary.errors == {"HTTP 429": 1, "ClientConnectorError": 1}
    assert summary.requests_per_s == 5.0
    assert summary.tokens_per_s == 80.0
    assert summary.latency_p50_s == pytest.approx(0.055)
    assert math.isnan(summary.ttft_p50_s)
    floor = summarize([Sample(0, 0.005, None, 16, 200)], 1.0)
    assert added(summary, floor).p50_s == pytest.approx(0.050)


def test_the_plan_has_the_issues_scenarios() -> None:
    plan = default_plan()
    names = {s.name for s in plan}
    for c in (1, 16, 64, 256):
        assert {f"unary-c{c}", f"stream-c{c}"} <= names
    memory = next(s for s in plan if s.group == "memory")
    assert (memory.concurrency, memory.requests) == (1000, 1000)
    assert all(s.workload.max_tokens == 256 for s in plan if s.group == "stream")
    assert [s.name for s in select(plan, ["stream-c1", "memory"])] == ["stream-c1", "memory-1000"]
    (tools,) = select(plan, ["tools"])
    assert (tools.name, tools.sim, tools.workload.tools, tools.workload.stream) == (
        "tools-c16",
        "zero",
        True,
        False,
    )
    assert tools.warmup_workload == tools.workload  # a tool call is not cut short
    with pytest.raises(ValueError, match="unknown scenario"):
        select(plan, ["nope"])
    small = plan[0].scaled(0.001)
    assert small.requests >= 1
    assert small.warmup <= small.requests
