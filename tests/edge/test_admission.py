"""Admission: bounded in flight, a bounded queue (by priority class then fair across tenants,
or first come first served), then refusal; nothing leaks on cancel."""

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


@pytest.mark.parametrize("fair", [True, False])
@pytest.mark.parametrize("shared_limit", [True, False])
async def test_a_release_in_the_instant_a_waiter_is_cancelled_skips_it(
    fair: bool, shared_limit: bool
) -> None:
    # The other order: the waiter's task is cancelled (its future with it) and a slot is
    # released before that task runs again. The slot must go to the next waiter, not be
    # lost to the cancelled one, and the queue's counts must stay right. `shared_limit`:
    # the all-models limit is the full one, so the slot goes through the scan of models.
    per_model = 1 if not shared_limit else 4
    admission = Admission(
        max_in_flight=1, max_per_model=per_model, max_queue=4, queue_timeout_s=NEVER, fair=fair
    )
    await admission.acquire("m")
    first = asyncio.create_task(admission.acquire("m"))
    second = asyncio.create_task(admission.acquire("m"))
    await asyncio.sleep(0)
    first.cancel()  # cancels the future it waits on, at once
    admission.release("m")  # ...before its task runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, TIMEOUT_S) >= 0.0
    assert (admission.in_flight, admission.waiting, admission.waiting_for("m")) == (1, 0, 0)
    admission.release("m")
    assert admission.in_flight == 0
    # Nothing was left behind: the next request takes the fast path.
    assert await admission.acquire("m") == 0.0


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


# -- fair queuing across tenants, priority classes -------------------------------------------


class Queue:
    """Waiters queued one at a time (their arrival order is the order of `add`), and the
    order in which they are admitted."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.admitted: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def add(
        self, label: str, *, tenant: str, cost: int, priority: str | None = None, model: str = "m"
    ) -> None:
        async def wait() -> None:
            await self.admission.acquire(model, tenant=tenant, cost=cost, priority=priority)
            self.admitted.append(label)

        self.tasks.append(asyncio.create_task(wait()))
        await asyncio.sleep(0)  # queued before the next one arrives
        assert not self.tasks[-1].done(), "it should wait: the model is saturated"

    async def serve(self, count: int, model: str = "m") -> list[str]:
        """Let `count` requests finish one after another: each frees the slot it held, so
        the admission's next choice takes it. Returns the labels admitted meanwhile."""
        start = len(self.admitted)
        for _ in range(count):
            self.admission.release(model)
            await asyncio.sleep(0)
        return self.admitted[start:]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def saturated(
    *, fair: bool = True, classes: tuple[str, ...] = ("standard",), max_queue: int = 100
) -> Admission:
    """One slot for model "m" (the tests take it first), so every later request waits."""
    return Admission(
        max_in_flight=100,
        max_per_model=1,
        max_queue=max_queue,
        queue_timeout_s=NEVER,
        fair=fair,
        classes=classes,
    )


async def test_a_short_request_goes_before_another_tenants_backlog_in_wfq_order() -> None:
    admission = saturated()
    await admission.acquire("m", tenant="a", cost=1000, priority="standard")
    queue = Queue(admission)
    try:
        for i in range(1, 21):  # A floods: finish tags 1000, 2000, ... 20000
            await queue.add(f"a{i}", tenant="a", cost=1000)
        assert await queue.serve(1) == ["a1"]  # virtual time 1000
        # B arrives late and banked nothing while idle: its tags start at virtual time 1000.
        for i in range(1, 4):  # finish tags 1010, 1020, 1030
            await queue.add(f"b{i}", tenant="b", cost=10)
        assert await queue.serve(4) == ["b1", "b2", "b3", "a2"]
        # B's long requests share fairly rather than go first: tags from virtual time 2000
        # are 3500, 5000, 6500 against A's 3000, 4000, 5000 (a tie goes to the older), ...
        for i in range(4, 7):
            await queue.add(f"b{i}", tenant="b", cost=1500)
        assert await queue.serve(8) == ["a3", "b4", "a4", "a5", "b5", "a6", "b6", "a7"]
        assert await queue.serve(13) == [f"a{i}" for i in range(8, 21)]
        assert admission.waiting == 0
        assert admission.waiting_for("m") == 0
    finally:
        await queue.close()
    admission.release("m")
    assert admission.in_flight == 0


async def test_an_idle_tenant_banks_no_credit() -> None:
    admission = saturated()
    await admission.acquire("m")
    queue = Queue(admission)
    try:
        for i in range(1, 6):  # tags 100 ... 500
            await queue.add(f"a{i}", tenant="a", cost=100)
        assert await queue.serve(3) == ["a1", "a2", "a3"]  # virtual time 300
        # B was idle all along: its tags are 400 and 500, not 100 and 200.
        await queue.add("b1", tenant="b", cost=100)
        await queue.add("b2", tenant="b", cost=100)
        assert await queue.serve(4) == ["a4", "b1", "a5", "b2"]
    finally:
        await queue.close()


async def test_a_lone_tenant_gets_every_slot_in_its_order() -> None:
    admission = Admission(max_in_flight=100, max_per_model=3, max_queue=100, queue_timeout_s=NEVER)
    for _ in range(3):
        await admission.acquire("m", tenant="a", cost=10_000)
    queue = Queue(admission)
    try:
        for i in range(6):
            await queue.add(f"a{i}", tenant="a", cost=10_000 - i)
        # Work-conserving: every freed slot is taken at once, whatever the tenant's share.
        assert await queue.serve(3) == ["a0", "a1", "a2"]
        assert admission.in_flight_for("m") == 3
        assert await queue.serve(3) == ["a3", "a4", "a5"]
    finally:
        await queue.close()


async def test_priority_classes_are_strict_and_fair_within_a_class() -> None:
    admission = saturated(classes=("interactive", "standard", "batch"))
    await admission.acquire("m", priority="batch")
    queue = Queue(admission)
    try:
        await queue.add("batch-a", tenant="a", cost=1, priority="batch")
        await queue.add("std-a1", tenant="a", cost=1000, priority="standard")
        await queue.add("std-a2", tenant="a", cost=1000, priority="standard")
        await queue.add("std-b", tenant="b", cost=1500, priority="standard")
        await queue.add("int-c", tenant="c", cost=100_000, priority="interactive")
        assert await queue.serve(5) == ["int-c", "std-a1", "std-b", "std-a2", "batch-a"]
    finally:
        await queue.close()


async def test_a_higher_class_starves_a_lower_one_while_it_keeps_the_model_busy() -> None:
    admission = saturated(classes=("interactive", "batch"))
    await admission.acquire("m", priority="interactive")
    queue = Queue(admission)
    try:
        await queue.add("batch", tenant="b", cost=1, priority="batch")
        for round_ in range(5):  # interactive work keeps arriving before each slot frees
            await queue.add(f"int{round_}", tenant="a", cost=1000, priority="interactive")
            assert await queue.serve(1) == [f"int{round_}"]
        assert await queue.serve(1) == ["batch"]  # the first slot nobody above wants
    finally:
        await queue.close()


async def test_across_models_the_higher_class_then_the_oldest_takes_a_shared_slot() -> None:
    admission = Admission(
        max_in_flight=1,
        max_per_model=1,
        max_queue=10,
        queue_timeout_s=NEVER,
        classes=("interactive", "batch"),
    )
    await admission.acquire("x")
    queue = Queue(admission)
    try:
        await queue.add("x-batch", tenant="a", cost=1, priority="batch", model="x")
        await queue.add("y-batch", tenant="a", cost=1, priority="batch", model="y")
        await queue.add("y-int", tenant="b", cost=1, priority="interactive", model="y")
        assert await queue.serve(1, model="x") == ["y-int"]
        assert await queue.serve(1, model="y") == ["x-batch"]
        assert await queue.serve(1, model="x") == ["y-batch"]
    finally:
        await queue.close()


async def test_without_fair_queuing_the_order_is_first_come_first_served() -> None:
    admission = saturated(fair=False, classes=("interactive", "batch"))
    await admission.acquire("m")
    queue = Queue(admission)
    try:
        for i in range(5):
            await queue.add(f"a{i}", tenant="a", cost=10_000, priority="batch")
        await queue.add("b0", tenant="b", cost=1, priority="interactive")
        await queue.add("a5", tenant="a", cost=10_000, priority="batch")
        assert await queue.serve(7) == ["a0", "a1", "a2", "a3", "a4", "b0", "a5"]
    finally:
        await queue.close()


async def test_cancelled_waiters_leave_the_fair_order_and_no_state() -> None:
    admission = saturated(max_queue=200)
    await admission.acquire("m")
    queue = Queue(admission)
    try:
        for i in range(100):  # enough cancellations to rebuild the heap on the way
            await queue.add(f"a{i}", tenant="a", cost=10)
        await queue.add("b0", tenant="b", cost=10)
        await queue.add("b1", tenant="b", cost=10)
        for task in queue.tasks[1:99]:  # a1 ... a98 give up
            task.cancel()
        await asyncio.gather(*queue.tasks[1:99], return_exceptions=True)
        assert admission.waiting == 4
        # b0's tag (10) is smallest, then a0 (10, older: first), b1 (20), a99 (1000).
        assert await queue.serve(4) == ["a0", "b0", "b1", "a99"]
        assert admission.waiting == 0
        # Nothing is kept for a model or tenant without waiters.
        assert admission.waiting_for("m") == 0
        assert not admission._queues
    finally:
        await queue.close()


async def test_a_fair_waiter_past_the_timeout_is_refused_and_the_rest_still_served() -> None:
    admission = Admission(
        max_in_flight=1, max_per_model=1, max_queue=4, queue_timeout_s=0.05, classes=("s",)
    )
    await admission.acquire("m")
    with pytest.raises(Refused) as caught:
        await admission.acquire("m", tenant="a", cost=5, priority="s")
    assert caught.value.reason == "queue_timeout"
    assert admission.waiting == 0
    admission.queue_timeout_s = NEVER
    waiter = asyncio.create_task(admission.acquire("m", tenant="b", cost=5, priority="s"))
    await asyncio.sleep(0)
    admission.release("m")
    assert await asyncio.wait_for(waiter, TIMEOUT_S) >= 0.0
    assert admission.in_flight == 1


async def test_an_unknown_priority_class_is_a_callers_bug() -> None:
    admission = saturated(classes=("interactive", "batch"))
    with pytest.raises(ValueError, match="unknown priority class"):
        await admission.acquire("m", priority="urgent")
    assert admission.in_flight == 0
