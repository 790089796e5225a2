"""Slots, the FIFO queue, overload answers, cancellation and pacing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from switchyard.enginesim.scheduler import (
    LatencyModel,
    Overloaded,
    QueueFull,
    Scheduler,
)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro)


async def _hold(
    s: Scheduler, release: asyncio.Event, log: list[str] | None = None, name: str = ""
) -> None:
    async with s.admit():
        if log is not None:
            log.append(name)
        await release.wait()


async def test_runs_immediately_while_slots_are_free() -> None:
    s = Scheduler(max_running=2)
    async with s.admit(10) as a, s.admit(10) as b:
        assert (s.running, s.waiting) == (2, 0)
        assert a.queued_s == b.queued_s == 0
    assert (s.running, s.waiting) == (0, 0)


async def test_waiters_are_served_in_arrival_order() -> None:
    s = Scheduler(max_running=1)
    gate, log = asyncio.Event(), list[str]()
    holder = _spawn(_hold(s, gate))
    await _settle()
    releases = [asyncio.Event() for _ in range(5)]
    waiters = [_spawn(_hold(s, r, log, str(i))) for i, r in enumerate(releases)]
    await _settle()
    assert (s.running, s.waiting) == (1, 5)
    gate.set()
    for r in releases:
        await _settle()
        r.set()
    await asyncio.gather(holder, *waiters)
    assert log == ["0", "1", "2", "3", "4"]
    assert (s.running, s.waiting) == (0, 0)


async def test_a_full_queue_refuses_at_once() -> None:
    s = Scheduler(max_running=1, max_queued=2)
    gate = asyncio.Event()
    tasks = [_spawn(_hold(s, gate)) for _ in range(3)]
    await _settle()
    assert (s.running, s.waiting) == (1, 2)
    with pytest.raises(QueueFull, match="queue is full"):
        async with s.admit():
            pass
    gate.set()
    await asyncio.gather(*tasks)
    assert (s.running, s.waiting) == (0, 0)


async def test_no_queue_at_all() -> None:
    s = Scheduler(max_running=1, max_queued=0)
    async with s.admit():
        with pytest.raises(QueueFull):
            async with s.admit():
                pass


async def test_queued_prompt_tokens_are_bounded_too() -> None:
    s = Scheduler(max_running=1, max_queued_tokens=100)
    gate = asyncio.Event()
    holder = _spawn(_hold(s, gate))
    await _settle()

    async def wait_with(tokens: int) -> None:
        async with s.admit(tokens):
            pass

    queued = _spawn(wait_with(80))
    await _settle()
    assert s.queued_tokens == 80
    with pytest.raises(QueueFull, match="prompt tokens"):
        await wait_with(30)
    gate.set()
    await asyncio.gather(holder, queued)
    assert s.queued_tokens == 0


async def test_try_admit_refuses_when_running_plus_waiting_reach_the_limit() -> None:
    s = Scheduler(max_running=1)
    gate = asyncio.Event()

    async def hold_tgi() -> None:
        async with s.try_admit(limit=2):
            await gate.wait()

    tasks = [_spawn(hold_tgi()) for _ in range(2)]
    await _settle()
    assert (s.running, s.waiting) == (1, 1)
    with pytest.raises(Overloaded):
        async with s.try_admit(limit=2):
            pass
    gate.set()
    await asyncio.gather(*tasks)
    assert (s.running, s.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    s = Scheduler(max_running=1, max_queued_tokens=1000)
    gate = asyncio.Event()
    holder = _spawn(_hold(s, gate))
    await _settle()

    async def queued() -> None:
        async with s.admit(50):
            pass

    waiter = _spawn(queued())
    await _settle()
    assert (s.waiting, s.queued_tokens) == (1, 50)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (s.running, s.waiting, s.queued_tokens) == (1, 0, 0)
    gate.set()
    await holder
    assert s.running == 0


async def test_a_cancelled_runner_frees_its_slot_for_the_next() -> None:
    s = Scheduler(max_running=1)
    never, gate, log = asyncio.Event(), asyncio.Event(), list[str]()
    runner = _spawn(_hold(s, never))
    await _settle()
    waiter = _spawn(_hold(s, gate, log, "next"))
    await _settle()
    runner.cancel()
    await _settle()
    assert log == ["next"]
    assert (s.running, s.waiting) == (1, 0)
    gate.set()
    await waiter
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert (s.running, s.waiting) == (0, 0)


async def test_a_waiter_cancelled_just_after_being_handed_a_slot_passes_it_on() -> None:
    s = Scheduler(max_running=1)
    log: list[str] = []
    last_gate = asyncio.Event()
    async with s.admit():
        handed = _spawn(_hold(s, asyncio.Event(), log, "handed"))
        last = _spawn(_hold(s, last_gate, log, "last"))
        await _settle()
    # Leaving the block handed the slot to `handed`; it is cancelled before it could run.
    handed.cancel()
    await _settle()
    assert log == ["last"]
    assert (s.running, s.waiting) == (1, 0)
    last_gate.set()
    await last
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert (s.running, s.waiting) == (0, 0)


class Sleeps(list[float]):
    """The delays asked of asyncio.sleep, and (`at`) the loop's time when each was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """The delays asked of asyncio.sleep during the test (still really sleeping)."""
    calls = Sleeps()
    real: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep

    async def record(delay: float) -> None:
        calls.append(delay)
        calls.at.append(asyncio.get_running_loop().time())
        await real(delay)

    monkeypatch.setattr(asyncio, "sleep", record)
    return calls


async def test_zero_latency_never_sleeps_but_yields_per_token(sleeps: Sleeps) -> None:
    s = Scheduler(max_running=1)
    assert [t async for t in s.pace(["a", "b", "c"], prompt_tokens=100)] == ["a", "b", "c"]
    await s.sleep_generation(3, 100)
    assert sleeps == [0, 0, 0, 0]


async def test_pacing_waits_ttft_with_prefill_then_itl(sleeps: Sleeps) -> None:
    latency = LatencyModel(ttft_s=0.003, prefill_s_per_token=0.0001, itl_s=0.002)
    s = Scheduler(max_running=1, latency=latency)
    before = asyncio.get_running_loop().time()
    assert [t async for t in s.pace(["a", "b", "c"], prompt_tokens=10)] == ["a", "b", "c"]
    first, *rest = sleeps
    # ttft + 10 * prefill, less the time already spent (all of it, on a slow machine).
    spent = sleeps.at[0] - before
    assert max(0.0, 0.004 - spent) - 1e-9 <= first <= 0.004
    assert len(rest) == 2
    assert all(0 <= d <= 0.002 for d in rest)
    sleeps.clear()
    await s.sleep_generation(3, prompt_tokens=10)
    assert list(sleeps) == [pytest.approx(0.004 + 2 * 0.002)]


async def test_loading_state() -> None:
    s = Scheduler(max_running=1, latency=LatencyModel(load_delay_s=0.01))
    assert not s.is_loaded()
    assert s.load_remaining_s() == float("inf")
    with pytest.raises(RuntimeError, match="start"):
        await s.wait_loaded()
    s.start()
    await s.wait_loaded()
    assert s.is_loaded()
    assert s.load_remaining_s() == 0
    slow = Scheduler(max_running=1, latency=LatencyModel(load_delay_s=60))
    slow.start()
    assert not slow.is_loaded()
    assert 0 < slow.load_remaining_s() <= 60


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_running"):
        Scheduler(max_running=0)
    with pytest.raises(ValueError, match="max_queued"):
        Scheduler(max_running=1, max_queued=-1)
    with pytest.raises(ValueError, match="itl_s"):
        LatencyModel(itl_s=-1)
