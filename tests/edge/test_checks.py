"""Checks: a bounded pool of worker processes; full means refused, never an unbounded
queue. The slot accounting is the same whatever runs the checks, so most tests give it
threads they can hold (a `threading.Event` cannot cross into a process)."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import pytest

from switchyard.edge.checks import Checks, ChecksBusy, ChecksUnavailable, json_schema
from switchyard.servicekit.json_schema import InvalidJsonSchema
from tests.support.polling import eventually


def _threads(workers: int) -> Executor:
    return ThreadPoolExecutor(workers)


def _blocked(gate: threading.Event, started: threading.Event | None = None) -> str:
    if started is not None:
        started.set()
    assert gate.wait(30), "the test never opened the gate"
    return "checked"


async def test_a_check_runs_in_another_process_and_its_verdict_comes_back() -> None:
    checks = Checks(workers=1, queue=0)  # the real pool: processes
    try:
        assert await checks.run(os.getpid) != os.getpid()
        await checks.run(json_schema, {"type": "object"})  # valid: no error
        with pytest.raises(InvalidJsonSchema, match="not a valid JSON Schema at properties/a"):
            await checks.run(json_schema, {"properties": {"a": {"type": "nope"}}})
        assert checks.taken == 0
    finally:
        checks.close()


async def test_a_dead_worker_is_unavailable_and_the_next_check_gets_a_new_one() -> None:
    checks = Checks(workers=1, queue=0)
    try:
        with pytest.raises(ChecksUnavailable):
            await checks.run(os._exit, 1)
        await eventually(lambda: checks.taken == 0, what="the slot free")
        await checks.run(json_schema, {"type": "string"})  # a new worker answers
    finally:
        checks.close()


async def test_past_workers_and_queue_a_check_is_refused_at_once() -> None:
    checks = Checks(workers=1, queue=1, executor=_threads)
    gate = threading.Event()
    try:
        running = asyncio.create_task(checks.run(_blocked, gate))
        waiting = asyncio.create_task(checks.run(_blocked, gate))
        await eventually(lambda: checks.taken == 2, what="two checks taken")
        with pytest.raises(ChecksBusy):
            await checks.run(_blocked, gate)
        gate.set()
        assert list(await asyncio.gather(running, waiting)) == ["checked", "checked"]
        await eventually(lambda: checks.taken == 0, what="every slot free")
    finally:
        gate.set()
        checks.close()


async def test_a_caller_that_leaves_keeps_its_slot_until_its_thread_is_done() -> None:
    """Otherwise clients sending heavy checks and leaving would pile up work unbounded."""
    checks = Checks(workers=1, queue=0, executor=_threads)
    gate, started = threading.Event(), threading.Event()
    try:
        caller = asyncio.create_task(checks.run(_blocked, gate, started))
        await eventually(started.is_set, what="the check running")
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        with pytest.raises(ChecksBusy):  # the thread still works for the caller that left
            await checks.run(_blocked, gate)
        gate.set()
        await eventually(lambda: checks.taken == 0, what="every slot free")
        assert await checks.run(_blocked, gate) == "checked"
    finally:
        gate.set()
        checks.close()


async def test_a_waiting_check_whose_caller_left_frees_its_slot_at_once() -> None:
    checks = Checks(workers=1, queue=1, executor=_threads)
    gate, started = threading.Event(), threading.Event()
    try:
        running = asyncio.create_task(checks.run(_blocked, gate, started))
        await eventually(started.is_set, what="the check running")
        waiting = asyncio.create_task(checks.run(_blocked, gate))
        await eventually(lambda: checks.taken == 2, what="two checks taken")
        waiting.cancel()
        await eventually(lambda: checks.taken == 1, what="the waiting check's slot free")
        gate.set()
        assert await running == "checked"
    finally:
        gate.set()
        checks.close()
