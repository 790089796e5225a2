"""The bench's accounting, without servers: SSE reading, request bodies, percentiles, summaries."""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import replace

import orjson
import pytest

from switchyard.bench.loadgen import Sample
from switchyard.bench.paths import SIMS
from switchyard.bench.scenarios import default_plan, select
from switchyard.bench.stats import added, percentile, summarize
from switchyard.bench.wire import (
    PASSAGES,
    StreamReader,
    Workload,
    completion_tokens,
    embedding_tokens,
    request_body,
)

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def test_a_stream_split_anywhere_counts_the_same() -> None:
    stream = ROLE + CHUNK * 3 + b": keep-alive\n\n" + CHUNK + b"data: [DONE]\n\n"
    for size in (1, 7, 64, len(stream)):
        reader = StreamReader()
        firsts = [reader.feed(stream[i : i + size]) for i in range(0, len(stream), size)]
        assert (reader.tokens, reader.done, reader.error) == (4, True, None)
        assert sum(firsts) == 4


def test_a_streams_tokens_are_its_usage_when_chunks_carry_several() -> None:
    joined = b'data: {"choices":[{"index":0,"delta":{"content":"hi there you"}}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}\n\n'
    reader = StreamReader()
    assert reader.feed(ROLE + joined + CHUNK) == 2
    assert reader.tokens == 2  # no usage yet: the text chunks
    reader.feed(usage + b"data: [DONE]\n\n")
    assert (reader.tokens, reader.chunks, reader.done) == (7, 2, True)


def test_streamed_bodies_ask_for_the_usage() -> None:
    for api in ("chat", "completions"):
        body = orjson.loads(request_body(Workload(api, True, 8), "m"))
        assert body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in orjson.loads(request_body(Workload("chat", False, 8), "m"))


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


def test_summaries_pool_the_gaps_of_good_streams_and_count_their_tokens() -> None:
    streams = [Sample(0, 1.0, 0.05, 4, 200, gaps=(0.010, 0.0, 0.030)) for _ in range(3)]
    streams.append(Sample(0, 1.0, 0.05, 2, 200, "stream ended without [DONE]", gaps=(9.0,)))
    summary = summarize(streams, 2.0)
    assert summary.tokens == 12
    assert summary.tokens_per_s == 6.0
    assert summary.gap_p50_s == pytest.approx(0.010)
    assert summary.gap_p99_s == pytest.approx(0.030)  # the failed stream's 9 s is not in it
    unary = summarize([Sample(0, 0.001, None, 16, 200)], 1.0)
    assert math.isnan(unary.gap_p50_s)
    assert math.isnan(unary.gap_p99_s)


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


def test_embeddings_bodies_carry_n_distinct_texts_as_the_sdk_asks() -> None:
    one = orjson.loads(request_body(Workload("embeddings"), "m"))
    assert one == {"model": "m", "encoding_format": "base64", "input": PASSAGES[0]}
    batch = orjson.loads(request_body(Workload("embeddings", inputs=32), "m"))
    assert len(batch["input"]) == len(set(batch["input"])) == 32
    assert "max_tokens" not in batch
    floats = orjson.loads(request_body(Workload("embeddings", encoding_format="float"), "m"))
    assert floats["encoding_format"] == "float"
    assert Workload("embeddings").path == "/v1/embeddings"


def test_distinct_workloads_send_a_new_prompt_every_time() -> None:
    greedy = Workload("chat", max_tokens=16, temperature=0.0)
    assert request_body(greedy, "m") == request_body(greedy, "m")
    assert orjson.loads(request_body(greedy, "m"))["temperature"] == 0.0
    assert "temperature" not in orjson.loads(request_body(Workload(), "m"))
    for workload in (
        replace(greedy, distinct=True),
        Workload("completions", distinct=True),
        Workload("embeddings", inputs=2, distinct=True),
    ):
        bodies = {request_body(workload, "m") for _ in range(5)}
        assert len(bodies) == 5, workload


def _embeddings(vectors: list[object], tokens: int = 7) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return orjson.dumps({"data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def test_embeddings_answers_count_input_tokens_and_check_every_vector() -> None:
    packed = base64.b64encode(struct.pack("<3f", 0.6, 0.0, 0.8)).decode()
    assert embedding_tokens(_embeddings([packed, packed]), inputs=2) == 7
    assert embedding_tokens(_embeddings([[0.6, 0.0, 0.8]], 3), inputs=1) == 3
    for bad, inputs in (
        (_embeddings([packed]), 2),  # a vector missing
        (_embeddings([packed, [0.6, 0.8]]), 2),  # lengths differ
        (_embeddings(["not base64!"]), 1),
        (_embeddings([base64.b64encode(b"abc").decode()]), 1),  # not float32s
        (_embeddings([[]]), 1),
        (_embeddings([None]), 1),
        (b'{"error": {"message": "no"}}', 1),
    ):
        with pytest.raises(ValueError, match="embeddings"):
            embedding_tokens(bad, inputs)


def test_summaries_count_the_cache_header_of_good_answers() -> None:
    samples = [Sample(0, 0.001, None, 16, 200, cache="hit") for _ in range(3)]
    samples += [Sample(0, 0.2, None, 16, 200, cache="miss"), Sample(0, 0.2, None, 16, 200)]
    samples.append(Sample(0, 0.2, None, 0, 500, "HTTP 500: no", cache="miss"))
    assert summarize(samples, 1.0).cache == {"hit": 3, "miss": 1}
    assert summarize(samples[-2:], 1.0).cache == {}


def test_the_plan_has_the_embeddings_and_cache_scenarios() -> None:
    plan = default_plan()
    embed = select(plan, ["embed"])
    assert {(s.workload.inputs, s.concurrency) for s in embed} == {
        (1, 1),
        (1, 16),
        (32, 1),
        (32, 16),
    }
    assert all(s.sim == "embed" and s.workload.api == "embeddings" for s in embed)
    assert all(SIMS[s.sim].embedding for s in embed)
    assert all(s.target == s.sim for s in embed)
    cache = select(plan, ["cache"])
    assert {s.name for s in cache} == {
        "cache-miss-c16",
        "cache-hit-c16",
        "cache-miss-stream-c16",
        "cache-hit-stream-c16",
    }
    for s in cache:
        assert (s.concurrency, s.workload.temperature, s.target) == (16, 0.0, "stream+cache")
        assert s.workload.distinct == ("miss" in s.name)
        assert s.workload.stream == ("stream" in s.name)
        # The warm-up sends the request measured: a hit scenario's is stored by then.
        assert s.warmup_workload == s.workload
        assert s.scaled(0.01).warmup >= 1
