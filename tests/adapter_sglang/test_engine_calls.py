"""The adapter's engine calls against the SGLang simulator (the adapter core's engine client
with the SGLang translation): request ids, aborts, lengths, JSON mode and seeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from pydantic import AnyHttpUrl

from switchyard.adapter.engine import EngineClient
from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter_sglang.translation import SglangTranslation
from switchyard.enginesim.sglang.engine import Engine as SglangEngine
from switchyard.inference.v1 import inference_pb2 as pb
from tests.enginesim.sglang.conftest import MODEL, engine_of, live, make_app
from tests.support.canonical import generate_request
from tests.support.polling import eventually

CONTEXT = 1024  # the simulator's --context-length in these tests
#: Stopped after one token by the simulator's fault until released: still in flight.
HELD_TOKENS = 40


@dataclass
class Engine:
    sim: SglangEngine
    client: EngineClient
    http: httpx.AsyncClient

    async def stall_next(self, count: int) -> None:
        """The next `count` calls stop after one token and stay in flight until `release`."""
        response = await self.http.post("/sim/faults", json={"stall_after": 1, "count": count})
        response.raise_for_status()

    async def release(self) -> None:
        (await self.http.delete("/sim/faults")).raise_for_status()

    async def stalled(self, count: int) -> None:
        async def enough() -> bool:
            return bool((await self.http.get("/sim/faults")).json()["stalled"] == count)

        await eventually(enough, what=f"{count} calls stalled")


@asynccontextmanager
async def sglang(*flags: str) -> AsyncIterator[Engine]:
    """A simulated SGLang on a real port, and the adapter's client to it, as once ready."""
    app = make_app(*flags)
    async with live(app) as url, httpx.AsyncClient(base_url=url) as http:
        settings = AdapterSettings(engine_url=AnyHttpUrl(url), served_model_name=MODEL)
        client = EngineClient(settings, SglangTranslation(MODEL))
        try:
            assert await client.max_model_len() == CONTEXT  # what readiness asks once
            yield Engine(engine_of(app), client, http)
        finally:
            await client.aclose()


def prompt(request_id: str, **sampling: Any) -> pb.GenerateRequest:
    return generate_request(MODEL, prompt="The yard at dawn", request_id=request_id, **sampling)


def chat(request_id: str, **sampling: Any) -> pb.GenerateRequest:
    return generate_request(
        MODEL, messages=[("user", "Describe the yard.")], request_id=request_id, **sampling
    )


Make = Callable[..., pb.GenerateRequest]


def held(make: Make, request_id: str = "same") -> pb.GenerateRequest:
    """A call long enough to be held in flight by the simulator's fault."""
    return make(request_id, max_tokens=HELD_TOKENS, ignore_eos=True)


async def streamed(client: EngineClient, request: pb.GenerateRequest) -> str:
    return "".join([d.text async for batch in client.stream(request) for d in batch])


@pytest.mark.parametrize("make", [prompt, chat], ids=["generate", "chat"])
async def test_two_concurrent_calls_with_one_request_id_both_succeed(make: Make) -> None:
    """SGLang refuses a rid in flight: each call needs its own."""
    async with sglang() as engine:
        await engine.stall_next(1)
        first = asyncio.create_task(engine.client.complete(held(make)))
        await engine.stalled(1)
        second = await streamed(engine.client, held(make))  # the same caller id, meanwhile
        assert second
        await engine.release()
        completion = await first
    assert completion.finish_reason == pb.FINISH_REASON_LENGTH
    assert completion.completion_tokens == HELD_TOKENS


class Gate:
    """The simulator's clock for SGLang's abort after a stream's end: opened by the test."""

    def __init__(self, sim: SglangEngine) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0
        sim.sleep = self.sleep

    async def sleep(self, seconds: float) -> None:
        self.waiting += 1
        await self.opened.wait()


@pytest.mark.parametrize("make", [prompt, chat], ids=["generate", "chat"])
async def test_a_call_reusing_a_finished_streams_id_is_not_aborted_by_its_cleanup(
    make: Make,
) -> None:
    """SGLang aborts a finished stream's rid ~2 s later, in whatever request holds it then."""
    async with sglang("--sim-abort-delay", "2") as engine:
        gate = Gate(engine.sim)
        assert await streamed(engine.client, held(make, "again"))
        await eventually(lambda: gate.waiting == 1)
        await engine.stall_next(1)
        retry = asyncio.create_task(engine.client.complete(held(make, "again")))
        await engine.stalled(1)
        gate.opened.set()  # the first stream's cleanup runs while the retry is in flight
        await eventually(lambda: any(a.source == "stream_end" for a in engine.sim.aborts))
        await engine.release()
        completion = await retry
    assert completion.completion_tokens == HELD_TOKENS
    (cleanup,) = engine.sim.aborts
    assert cleanup.rid.startswith("again-")
    assert cleanup.ended == ()


@pytest.mark.parametrize("make", [prompt, chat], ids=["generate", "chat"])
async def test_a_cancelled_call_is_aborted_in_the_engine_by_its_own_rid(make: Make) -> None:
    """Another call with the same caller id keeps running."""
    async with sglang("--enable-metrics") as engine:
        await engine.stall_next(2)
        leaving = asyncio.create_task(streamed(engine.client, held(make)))
        staying = asyncio.create_task(engine.client.complete(held(make)))
        await engine.stalled(2)
        rids = engine.sim.live_rids
        assert len(set(rids)) == 2
        assert all(rid.startswith("same-") for rid in rids)
        leaving.cancel()

        def aborted_by_the_adapter() -> bool:
            return any(a.source == "abort_request" for a in engine.sim.aborts)

        await eventually(aborted_by_the_adapter)
        await eventually(lambda: len(engine.sim.live_rids) == 1)
        (left,) = set(rids) - set(engine.sim.live_rids)
        await engine.release()
        completion = await staying
        metrics = (await engine.http.get("/metrics")).text
    assert completion.completion_tokens == HELD_TOKENS
    assert all(a.rid == left for a in engine.sim.aborts), "aborts name only the call that left"
    assert [a.ended for a in engine.sim.aborts if a.ended] == [(left,)]
    assert (
        'sglang:num_aborted_requests_total{engine_type="unified",model_name="demo"} 1.0' in metrics
    )


@pytest.mark.parametrize("make", [prompt, chat], ids=["generate", "chat"])
async def test_without_max_tokens_a_call_runs_to_the_end_of_the_context(make: Make) -> None:
    """The project's one behaviour for a missing max_tokens (not SGLang's native 128)."""
    async with sglang() as engine:
        completion = await engine.client.complete(make("long", ignore_eos=True))
    assert completion.finish_reason == pb.FINISH_REASON_LENGTH
    assert completion.completion_tokens == CONTEXT - 2 - completion.prompt_tokens
    assert completion.completion_tokens > 128


@pytest.mark.parametrize("make", [prompt, chat], ids=["generate", "chat"])
async def test_json_object_gives_objects_with_keys(make: Make) -> None:
    """SGLang constrains json_object to the schema {"type": "object"}: any object."""
    async with sglang() as engine:
        for i in range(5):
            request = make(f"json-{i}")
            request.structured_output.json_object.SetInParent()
            text = (await engine.client.complete(request)).text
            value = orjson.loads(text)
            assert isinstance(value, dict)
            assert value, f"an object with keys, not {text}"


async def test_a_seed_a_default_engine_ignores_is_served() -> None:
    """Without --enable-deterministic-inference SGLang ignores the seed: best effort, as in
    OpenAI's contract for `seed`, so the request is served, not refused."""
    async with sglang() as engine:
        for make in (prompt, chat):
            seeded = await engine.client.complete(make("seeded", seed=3))
            assert seeded.completion_tokens > 0
        assert not engine.sim.aborts


async def test_a_seed_a_deterministic_engine_honours_decides_the_output() -> None:
    async with sglang("--enable-deterministic-inference") as engine:

        async def text(seed: int) -> str:
            request = prompt("seeded", seed=seed, max_tokens=30, ignore_eos=True)
            return (await engine.client.complete(request)).text

        assert await text(3) == await text(3)
        assert await text(3) != await text(4)
