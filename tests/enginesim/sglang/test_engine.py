"""The engine's output streams: coalescing for slow readers, counts, aborts."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.enginesim.generation import Prompt
from switchyard.enginesim.sglang.engine import Engine, Job, Sampling
from switchyard.enginesim.sglang.flags import parse
from tests.support.polling import eventually


def _engine(itl_s: float = 0.0) -> Engine:
    flags = ["--model-path", "m", "--max-running-requests", "4", "--max-total-tokens", "4096"]
    latency = ["--sim-ttft", "0", "--sim-itl", str(itl_s), "--enable-deterministic-inference"]
    engine = Engine(parse([*flags, *latency]))
    engine.scheduler.start()
    return engine


def _job(rid: str = "r", max_new_tokens: int = 20) -> Job:
    sampling = Sampling(max_new_tokens=max_new_tokens, ignore_eos=True, seed=1)
    return Job(rid, Prompt("hello", 1), sampling, max_new_tokens, stream=True)


async def test_a_slow_reader_gets_coalesced_updates() -> None:
    engine = _engine()
    handle = engine.submit(_job())
    # The whole output is ready before the first read.
    await eventually(lambda: not engine.live_rids, what="the request finished")
    updates = [u async for u in handle.steps()]
    assert len(updates) == 1
    (update,) = updates
    assert len(update.ids) == update.completion_tokens == 20
    assert update.first
    assert update.finish_reason == {"type": "length", "length": 20}


async def test_a_fast_reader_gets_one_update_per_token() -> None:
    engine = _engine(itl_s=0.002)
    handle = engine.submit(_job(max_new_tokens=5))
    updates = [u async for u in handle.steps()]
    assert [u.completion_tokens for u in updates] == [1, 2, 3, 4, 5]
    assert [u.first for u in updates] == [True, False, False, False, False]
    assert "".join(u.text for u in updates) == (await _whole())


async def _whole() -> str:
    engine = _engine()
    return (await engine.submit(_job(max_new_tokens=5)).result()).text


async def test_abort_ends_a_running_request_with_what_it_made() -> None:
    engine = _engine(itl_s=0.01)
    engine.scheduler.faults.set_stall(5, count=1)  # held after five tokens until aborted
    handle = engine.submit(_job(max_new_tokens=100))
    await eventually(lambda: engine.scheduler.faults.stalled == 1, what="five tokens out")
    assert engine.abort("r")
    update = await handle.result()
    assert update.finish_reason == {
        "type": "abort",
        "message": "Aborted",
        "status_code": None,
        "err_type": None,
    }
    assert update.completion_tokens == 5
    assert not engine.abort("r"), "a finished request cannot be aborted"
    assert engine.stats.aborted == 1
    await asyncio.sleep(0)
    assert engine.used_tokens == 0


async def test_duplicate_rids_are_refused_while_live() -> None:
    engine = _engine(itl_s=0.01)
    engine.submit(_job())
    with pytest.raises(ValueError, match="Duplicate request ID detected: r"):
        engine.submit(_job())
    engine.abort_all()


async def test_an_abort_before_the_request_ran_still_ends_it() -> None:
    engine = _engine()
    handle = engine.submit(_job())
    assert engine.abort("r")  # its task has not had a step yet
    update = await handle.result()
    assert update.finish_reason == {"type": "abort", "message": "Abort in waiting queue"}
    assert not update.scheduled
    assert engine.stats.aborted == 1
    assert engine.stats.in_flight == 0
