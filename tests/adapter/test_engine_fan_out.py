"""The engine client's `n` for translations whose engine generates one choice per call
(`native_n = False`, as TGI's): n concurrent calls, merged, and every one of them aborted
when the caller leaves.

The engine is the SGLang simulator (it shows each call's own rid, its aborts and its open
streams), behind the SGLang translation told to act as a one-choice engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import AnyHttpUrl

from switchyard.adapter.engine import EngineClient, one_choice_requests
from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter.translation import Delta
from switchyard.adapter_sglang.translation import SglangTranslation
from switchyard.enginesim.sglang.engine import Engine as SglangEngine
from switchyard.inference.v1 import inference_pb2 as pb
from tests.enginesim.sglang.conftest import MODEL, engine_of, live, make_app
from tests.support.canonical import generate_request
from tests.support.polling import eventually

HELD_TOKENS = 40


class OneChoicePerCall(SglangTranslation):
    native_n = False


@dataclass
class Engine:
    sim: SglangEngine
    client: EngineClient
    http: httpx.AsyncClient

    async def stats(self) -> dict[str, Any]:
        response = await self.http.get("/sim/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def stall_next(self, count: int) -> None:
        fault = {"stall_after": 1, "count": count}
        (await self.http.post("/sim/faults", json=fault)).raise_for_status()

    async def stalled(self, count: int) -> None:
        async def enough() -> bool:
            return bool((await self.http.get("/sim/faults")).json()["stalled"] == count)

        await eventually(enough, what=f"{count} calls stalled")


@asynccontextmanager
async def one_choice_engine() -> AsyncIterator[Engine]:
    app = make_app()
    async with live(app) as url, httpx.AsyncClient(base_url=url) as http:
        settings = AdapterSettings(engine_url=AnyHttpUrl(url), served_model_name=MODEL)
        client = EngineClient(settings, OneChoicePerCall(MODEL))
        try:
            yield Engine(engine_of(app), client, http)
        finally:
            await client.aclose()


def request(n: int, *, kind: str = "chat", **sampling: Any) -> pb.GenerateRequest:
    if kind == "chat":
        made = generate_request(MODEL, messages=[("user", "Describe the yard.")], **sampling)
    else:
        made = generate_request(MODEL, prompt="The yard at dawn", **sampling)
    made.request_id = "fan"
    made.n = n
    return made


@pytest.mark.parametrize("kind", ["chat", "prompt"])
async def test_n_unary_choices_from_n_calls(kind: str) -> None:
    async with one_choice_engine() as engine:
        single = await engine.client.complete(request(1, kind=kind, max_tokens=5))
        completion = await engine.client.complete(request(3, kind=kind, max_tokens=5))
        stats = await engine.stats()
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.finish_reason == pb.FINISH_REASON_LENGTH for c in completion.choices)
    assert completion.prompt_tokens == single.prompt_tokens  # the prompt, once
    assert completion.completion_tokens == 15  # summed over the choices
    assert stats["requests"] == 4  # one call per choice


async def test_n_streams_merged_as_they_come() -> None:
    async with one_choice_engine() as engine:
        stream = engine.client.stream(request(2, max_tokens=6))
        deltas: list[Delta] = [d async for batch in stream for d in batch]
        stats = await engine.stats()
    assert {d.index for d in deltas} == {0, 1}
    finishes = {d.index: d.finish_reason for d in deltas if d.finish_reason}
    assert finishes == {0: pb.FINISH_REASON_LENGTH, 1: pb.FINISH_REASON_LENGTH}
    for index in (0, 1):
        assert sum(d.token_count for d in deltas if d.index == index) == 6
    counted = [d.completion_tokens for d in deltas if d.completion_tokens is not None]
    assert counted == sorted(counted)  # one running total over both
    assert counted[-1] == 12
    assert stats["requests"] == 2


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_caller_leaving_aborts_every_call(streamed: bool) -> None:
    async with one_choice_engine() as engine:
        await engine.stall_next(3)
        held = request(3, max_tokens=HELD_TOKENS, ignore_eos=True)

        async def consume() -> None:
            if streamed:
                async for _ in engine.client.stream(held):
                    pass
            else:
                await engine.client.complete(held)

        leaving = asyncio.create_task(consume())
        await engine.stalled(3)
        rids = set(engine.sim.live_rids)
        assert len(rids) == 3, "each call has its own rid"
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving

        async def all_aborted() -> bool:
            stats = await engine.stats()
            return bool(stats["aborted"] == 3 and stats["in_flight"] == 0)

        await eventually(all_aborted, what="every call aborted")
        stats = await engine.stats()
        await eventually(lambda: {a.rid for a in engine.sim.aborts} >= rids)
    assert stats["open_streams"] == 0
    assert stats["completed"] == 0


def test_seeded_choices_get_seeds_of_their_own() -> None:
    """n calls with one seed would give n identical choices: choice i is seeded seed + i."""
    calls = one_choice_requests(request(3, seed=41, temperature=1.0), 3)
    assert [c.sampling.seed for c in calls] == [41, 42, 43]
    assert all(c.n == 1 and c.request_id == "fan" for c in calls)
    top = one_choice_requests(request(2, seed=2**63 - 1), 2)  # no overflow at the top
    assert [c.sampling.seed for c in top] == [2**63 - 1, 2**63 - 2]
    unseeded = one_choice_requests(request(2), 2)
    assert not any(c.sampling.HasField("seed") for c in unseeded)
