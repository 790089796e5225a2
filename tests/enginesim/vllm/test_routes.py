"""The informational routes, the command line and the Prometheus families."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from switchyard.enginesim.vllm.flags import parse
from tests.enginesim.vllm.conftest import MODEL, Factory, argv, events
from tests.support.polling import eventually

GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
FAMILIES = (
    *GAUGES,
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:request_queue_time_seconds_bucket",
)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of `name` (with at least these labels) in an exposition."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in the exposition")


async def test_models(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert (card["id"], card["object"], card["owned_by"]) == (MODEL, "model", "vllm")
    assert (card["root"], card["parent"], card["max_model_len"]) == ("org/sim-model", None, 1024)
    assert card["permission"][0]["object"] == "model_permission"


async def test_health_version_load(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    assert (await client.get("/version")).json() == {"version": "0.33.0"}
    assert (await client.get("/load")).json() == {"server_load": 0}


async def test_tokenize_and_detokenize(client: httpx.AsyncClient) -> None:
    body = (
        await client.post(
            "/tokenize", json={"model": MODEL, "prompt": "hello world", "return_token_strs": True}
        )
    ).json()
    assert body["count"] == len(body["tokens"]) == 2
    assert body["token_strs"] == ["hello", " world"]
    assert body["max_model_len"] == 1024
    back = await client.post("/detokenize", json={"model": MODEL, "tokens": body["tokens"]})
    assert back.json() == {"prompt": "hello world"}
    chat = await client.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]})
    assert chat.json()["count"] > 2
    assert (await client.post("/detokenize", json={"tokens": [2**40]})).status_code == 400


async def test_request_id_headers(simulator: Factory) -> None:
    client, _ = await simulator("--enable-request-id-headers", "--sim-ttft", "0", "--sim-itl", "0")
    response = await client.get("/health", headers={"x-request-id": "abc"})
    assert response.headers["x-request-id"] == "abc"
    assert re.fullmatch(r"[0-9a-f]{32}", (await client.get("/health")).headers["x-request-id"])


def test_command_line() -> None:
    config = parse(
        [*argv(), "-tp", "2", "--gpu-memory-utilization", "0.5", "--dtype", "bfloat16",
         "--disable-fastapi-docs", "--max-num-seqs", "8", "--max-num-queued-reqs", "12"]
    )  # fmt: skip
    assert config.served_model_names == (MODEL,)
    assert (config.max_model_len, config.max_num_seqs, config.max_num_queued_reqs) == (1024, 8, 12)
    assert config.tensor_parallel_size == 2
    assert config.host == "0.0.0.0"
    assert parse(["serve", "m", "--max-model-len", "32k"]).max_model_len == 32000
    assert parse(["serve", "--model", "m"]).served_model_names == ("m",)
    with pytest.raises(SystemExit):
        parse(["serve", "m", "--max-model-len", "0"])


def test_chat_feature_flags() -> None:
    plain = parse(argv())
    assert (plain.tool_call_parser, plain.reasoning_parser, plain.max_logprobs) == (None, None, 20)
    assert plain.image_limit == 999
    assert not plain.enable_auto_tool_choice
    config = parse(
        [*argv(), "--tool-call-parser", "hermes", "--enable-auto-tool-choice",
         "--reasoning-parser", "qwen3", "--max-logprobs", "-1", "--chat-template", "t.jinja",
         "--limit-mm-per-prompt", '{"image": {"count": 3, "width": 512}}']
    )  # fmt: skip
    assert (config.tool_call_parser, config.reasoning_parser) == ("hermes", "qwen3")
    assert config.enable_auto_tool_choice
    assert (config.max_logprobs, config.image_limit) == (-1, 3)
    for bad in ('{"image": -1}', "[2]", "image=2"):
        with pytest.raises(SystemExit):
            parse([*argv(), "--limit-mm-per-prompt", bad])


async def test_metrics_follow_the_scheduler(simulator: Factory) -> None:
    client, sim = await simulator(
        "--max-num-seqs",
        "1",
        "--sim-ttft",
        "0",
        "--sim-itl",
        "0.02",
        "--num-gpu-blocks-override",
        "8",
    )
    idle = (await client.get("/metrics")).text
    assert idle.count("# TYPE vllm:") > 10
    for family in FAMILIES:
        assert family + "{" in idle, family
    assert 'engine="0"' in idle
    assert sample(idle, "vllm:num_requests_running") == 0
    body = {"model": MODEL, "prompt": "word " * 20, "max_tokens": 30, "ignore_eos": True}
    # The first request holds its slot (stalled) until the test has looked.
    await client.post("/sim/faults", json={"stall_after": 1, "count": 1})
    calls = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(2)]

    async def busy_page() -> str | None:
        page = (await client.get("/metrics")).text
        return page if sample(page, "vllm:generation_tokens_total") > 0 else None

    await eventually(lambda: sim.scheduler.waiting == 1, what="one running, one queued")
    busy = await eventually(busy_page, what="tokens generated")
    assert sample(busy, "vllm:num_requests_running") == 1
    assert sample(busy, "vllm:num_requests_waiting") == 1
    assert 0 < sample(busy, "vllm:kv_cache_usage_perc") <= 1
    assert sample(busy, "vllm:generation_tokens_total") <= 30  # the queued one has none yet
    await client.delete("/sim/faults")
    await asyncio.gather(*calls)
    done = (await client.get("/metrics")).text
    assert sample(done, "vllm:num_requests_running") == 0
    assert sample(done, "vllm:kv_cache_usage_perc") == 0
    assert sample(done, "vllm:generation_tokens_total") == 60
    assert sample(done, "vllm:request_success_total", finished_reason="length") == 2
    assert sample(done, "vllm:e2e_request_latency_seconds_count") == 2
    assert sample(done, "vllm:inter_token_latency_seconds_count") == 58
    assert sample(done, "vllm:request_queue_time_seconds_bucket", le="+Inf") == 2


async def test_server_load_tracking(simulator: Factory) -> None:
    client, sim = await simulator(
        "--enable-server-load-tracking", "--sim-ttft", "0", "--sim-itl", "0.02"
    )
    body = {"model": MODEL, "prompt": "x", "max_tokens": 10, "ignore_eos": True}
    await client.post("/sim/faults", json={"stall_after": 1})  # each holds until cleared
    calls = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(3)]

    async def load() -> int:
        return int((await client.get("/load")).json()["server_load"])

    await eventually(lambda: sim.scheduler.faults.stalled == 3, what="three requests stalled")
    assert await load() == 3
    await client.delete("/sim/faults")
    await asyncio.gather(*calls)
    assert (await client.get("/load")).json() == {"server_load": 0}


async def test_chat_stream_with_n_choices(client: httpx.AsyncClient) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "n": 2,
        "max_tokens": 3,
        "ignore_eos": True,
        "stream": True,
    }
    chunks = events((await client.post("/v1/chat/completions", json=body)).text)
    roles = [c["choices"][0]["index"] for c in chunks if "role" in c["choices"][0]["delta"]]
    assert roles == [0, 1]
    finished = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1]


async def test_tokenize_chat_counts_tools(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    plain = (await client.post("/tokenize", json={"messages": messages})).json()
    tooled = (await client.post("/tokenize", json={"messages": messages, "tools": [tool]})).json()
    assert tooled["count"] > plain["count"]  # the tool definitions are part of the prompt
