"""Admission: bounded in flight, a bounded FIFO queue, then refusal; nothing leaks on cancel."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.edge.admission import Admission, Refused
from tests.support.polling import TIMEOUT_S

#: A queue wait that never runs out during a test, however slow the machine: only the tests
#: of the timeout itself use a short one.
NEVER = 3600.0


async def test_fast_path_takes_and_releases() -> None:
    admission = Admission(max_in_flight=2, max_per_model=2, max_queue=0, queue_timeout_s=NEVER)
    assert await admission.acquire("m") == 0.0
    assert (admission.in_flight, admission.in_flight_for("m")) == (1, 1)
    admission.release("m")
    assert (admission.in_flight, admission.in_flight_for("m")) == (0, 0)


async def test_full_queue_is_refused_at_once() -> None:
    admission = Admission(max_in_flight=1, max_per_model=1, max_queue=0, queue_timeout_s=NEVER)
    await admission.acquire("m")
    with pytest.raises(Refused) as caught:
        await admission.acquire("m")
    assert caught.value.reason == "queue_full"


async def test_waiters_are_served_in_order() -> None:
    admission = Admission(max_in_flight=1, max_per_model=1, max_queue=10, queue_timeout_s=NEVER)
    await admission.acquire("m")
    order: list[int] = []

    async def wait(i: int) -> None:
        await admission.acquire("m")
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert admission.waiting == 5
    for _ in range(5):
        admission.release("m")
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert admission.in_flight == 1


async def test_a_saturated_model_does_not_block_others() -> None:
    admission = Admission(max_in_flight=10, max_per_model=1, max_queue=10, queue_timeout_s=NEVER)
    await admission.acquire("busy")
    blocked = asyncio.create_task(admission.acquire("busy"))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(admission.acquire("other"), TIMEOUT_S) >= 0.0
    assert not blocked.done()
    admission.release("busy")
    assert await asyncio.wait_for(blocked, TIMEOUT_S) >= 0.0
    assert admission.in_flight_for("busy") == 1


async def test_wait_past_the_timeout_is_refused_and_leaves_the_queue() -> None:
    admission = Admission(max_in_flight=1, max_per_model=1, max_queue=4, queue_timeout_s=0.05)
    await admission.acquire("m")
    with pytest.raises(Refused) as caught:
        await admission.acquire("m")
    assert caught.value.reason == "queue_timeout"
    assert admission.waiting == 0
    admission.release("m")
    assert admission.in_flight == 0


async def test_cancelled_waiter_leaves_no_trace() -> None:
    admission = Admission(max_in_flight=1, max_per_model=1, max_queue=4, queue_timeout_s=NEVER)
    await admission.acquire("m")
    waiter = asyncio.create_task(admission.acquire("m"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.waiting == 0
    admission.release("m")
    assert admission.in_flight == 0


async def test_waiter_cancelled_right_after_being_granted_hands_the_slot_on() -> None:
    admission = Admission(max_in_flight=1, max_per_model=1, max_queue=4, queue_timeout_s=NEVER)
    await admission.acquire("m")
    first = asyncio.create_task(admission.acquire("m"))
    second = asyncio.create_task(admission.acquire("m"))
    await asyncio.sleep(0)
    admission.release("m")  # grants `first`...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, TIMEOUT_S) >= 0.0
    assert admission.in_flight == 1
    admission.release("m")
    assert admission.in_flight == 0


async def test_memory_stays_bounded_under_a_burst() -> None:
    admission = Admission(max_in_flight=4, max_per_model=4, max_queue=16, queue_timeout_s=0.2)
    results = await asyncio.gather(
        *(admission.acquire("m") for _ in range(1000)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, Refused)]
    admitted = [r for r in results if isinstance(r, float)]
    assert len(admitted) == 4
    assert len(refused) == 996
    assert admission.waiting == 0
    assert {r.reason for r in refused} == {"queue_full", "queue_timeout"}
