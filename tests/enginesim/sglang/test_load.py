"""Queues, overload, aborts, health while loading, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.enginesim.sglang.conftest import SLOW, asgi, engine_of, events, make_app
from tests.support.polling import eventually

FULL = ("--max-running-requests", "1", "--max-queued-requests", "1", *SLOW)
LONG = {"max_new_tokens": 100, "ignore_eos": True}


def _generate(client: httpx.AsyncClient, rid: str, **body: Any) -> asyncio.Task[httpx.Response]:
    json = {"text": "hello", "rid": rid, "sampling_params": LONG, **body}
    return asyncio.create_task(client.post("/generate", json=json))


async def test_a_full_queue_is_503_unary_and_an_abort_in_a_stream() -> None:
    app = make_app(*FULL)
    engine = engine_of(app)
    async with asgi(app) as client:
        running, queued = _generate(client, "run"), _generate(client, "wait")
        await eventually(lambda: (engine.running, engine.waiting) == (1, 1))
        response = await client.post("/generate", json={"text": "x"})
        assert response.status_code == 503
        assert response.json() == {
            "object": "error",
            "message": "The request queue is full.",
            "type": "503",
            "param": None,
            "code": 503,
        }
        response = await client.post("/generate", json={"text": "x", "stream": True})
        assert response.status_code == 200
        (out,) = events(response.text)
        assert out["meta_info"]["finish_reason"] == {
            "type": "abort",
            "status_code": 503,
            "message": "The request queue is full.",
        }
        assert out["meta_info"]["completion_tokens"] == 0
        assert "prompt_tokens" not in out["meta_info"]  # it never reached the scheduler
        # The OpenAI routes: 503 flat, and an error event in a 200 stream.
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        response = await client.post("/v1/chat/completions", json=chat)
        assert (response.status_code, response.json()["type"]) == (503, "503")
        response = await client.post("/v1/chat/completions", json={**chat, "stream": True})
        assert response.status_code == 200
        assert events(response.text) == [
            {
                "error": {
                    "object": "error",
                    "message": "The request queue is full.",
                    "type": "SERVICE_UNAVAILABLE",
                    "param": None,
                    "code": 503,
                }
            }
        ]
        for rid in ("run", "wait"):
            await client.post("/abort_request", json={"rid": rid})
        await asyncio.gather(running, queued)
    assert engine_of(app).stats.rejected == 4


async def test_abort_request_stops_running_and_queued_requests() -> None:
    app = make_app(*FULL, "--enable-metrics")
    engine = engine_of(app)
    engine.scheduler.faults.set_stall(3, count=1)  # the running one: held after three tokens
    async with asgi(app) as client:
        running = _generate(client, "run")
        queued = _generate(client, "wait", stream=True)
        await eventually(lambda: (engine.running, engine.waiting) == (1, 1))
        await eventually(lambda: engine.scheduler.faults.stalled == 1, what="three tokens out")
        for rid in ("wait", "run", "unknown"):
            response = await client.post("/abort_request", json={"rid": rid})
            assert (response.status_code, response.content) == (200, b"")
        body = (await running).json()
        finish = body["meta_info"]["finish_reason"]
        assert finish == {
            "type": "abort",
            "message": "Aborted",
            "status_code": None,
            "err_type": None,
        }
        assert body["meta_info"]["completion_tokens"] == 3
        (out,) = events((await queued).text)
        assert out["meta_info"]["finish_reason"] == {
            "type": "abort",
            "message": "Abort in waiting queue",
        }
        metrics = (await client.get("/metrics")).text
    assert engine.stats.aborted == 2
    assert engine.scheduler.running == engine.scheduler.waiting == 0
    assert (
        'sglang:num_aborted_requests_total{engine_type="unified",model_name="demo"} 2.0' in metrics
    )


async def test_abort_all() -> None:
    app = make_app(*SLOW)
    async with asgi(app) as client:
        tasks = [_generate(client, f"r{i}") for i in range(3)]
        await eventually(lambda: engine_of(app).running == 3)
        assert (await client.post("/abort_request", json={"abort_all": True})).status_code == 200
        bodies = [(await t).json() for t in tasks]
    assert all(b["meta_info"]["finish_reason"]["type"] == "abort" for b in bodies)


async def test_a_rid_in_use_is_refused() -> None:
    app = make_app(*SLOW)
    async with asgi(app) as client:
        first = _generate(client, "same")
        await eventually(lambda: engine_of(app).running == 1)
        response = await client.post("/generate", json={"text": "x", "rid": "same"})
        assert response.json() == {"error": {"message": "Duplicate request ID detected: same"}}
        await client.post("/abort_request", json={"rid": "same"})
        await first


async def test_health_is_503_while_starting_then_200() -> None:
    app = make_app("--sim-load-delay", "0.5", "--sim-ttft", "0", "--sim-itl", "0")
    async with asgi(app) as client:
        for path in ("/health", "/health_generate", "/ready", "/ping"):
            assert (await client.get(path)).status_code == 503, path
        # Generation is accepted while starting and served once the model is loaded.
        body = (
            await client.post(
                "/generate", json={"text": "x", "sampling_params": {"max_new_tokens": 2}}
            )
        ).json()
        assert body["meta_info"]["completion_tokens"] == 2
        assert engine_of(app).up
        for path in ("/health", "/ready", "/ping"):  # /health_generate is /health
            assert (await client.get(path)).status_code == 200, path


async def test_metrics_only_with_enable_metrics() -> None:
    async with asgi(make_app()) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_gauges_show_live_load() -> None:
    app = make_app("--enable-metrics", "--max-running-requests", "2", *SLOW)
    faults = engine_of(app).scheduler.faults
    faults.set_stall(2)  # every request held after two tokens: the load stays as it is
    async with asgi(app) as client:
        tasks = [_generate(client, f"r{i}") for i in range(3)]
        await eventually(lambda: engine_of(app).waiting == 1)
        await eventually(lambda: faults.stalled == 2, what="two running, two tokens each")
        text = (await client.get("/metrics")).text
        gauges = _samples(text)
        assert gauges["sglang:num_running_reqs"] == 2
        assert gauges["sglang:num_queue_reqs"] == 1
        used = gauges["sglang:num_used_tokens"]
        assert used > 2  # two prompts and their tokens so far
        assert gauges["sglang:token_usage"] == used / (1024 * 2)
        assert gauges["sglang:gen_throughput"] > 0
        assert 'tp_rank="0"' in text
        assert 'moe_ep_rank="0"' in text
        await client.post("/abort_request", json={"abort_all": True})
        await asyncio.gather(*tasks)
        faults.clear()
        done = (
            await client.post(
                "/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 3}}
            )
        ).json()
        assert done["meta_info"]["completion_tokens"] == 3
        final = (await client.get("/metrics")).text
    after = _samples(final)
    assert after["sglang:num_running_reqs"] == after["sglang:num_used_tokens"] == 0
    assert "_created" not in final
    counter = 'sglang:generation_tokens_total{engine_type="unified",is_streaming="false",model_name="demo"}'
    assert counter in final


def _samples(text: str) -> dict[str, float]:
    """The value of each unlabelled-by-test gauge (one sample each)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sglang:") and "{" in line:
            name = line[: line.index("{")]
            out.setdefault(name, float(line.rsplit(" ", 1)[1]))
    return out
