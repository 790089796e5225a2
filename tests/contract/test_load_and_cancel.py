"""Overload, cancellation, deadlines and load reports, against a slow simulator.

Requests that a test needs in flight are held by the simulator's stall fault after their
first token, so none can finish early on its own (a short natural length, a slow machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest

from switchyard.inference.v1 import inference_pb2 as pb
from tests.contract.conftest import sim_stats
from tests.contract.test_errors import _failure
from tests.contract.test_generation import prompt_request
from tests.support.polling import eventually
from tests.support.stacks import Stack

if TYPE_CHECKING:
    from tests.contract.conftest import Stub


async def _idle(stack: Stack) -> None:
    async def idle() -> bool:
        stats = await sim_stats(stack)
        return bool(stats["open_streams"] == 0 and stats["in_flight"] == 0)

    await eventually(idle, what="the engine idle")


async def _read_to_the_end(call: grpc.aio.UnaryStreamCall[Any, Any]) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


async def test_cancelled_stream_aborts_in_the_engine(slow_stack: Stack, slow_stub: Stub) -> None:
    await _idle(slow_stack)
    before = (await sim_stats(slow_stack))["aborted"]
    async with slow_stack.stalled(count=1):
        call = slow_stub.GenerateStream(prompt_request(slow_stack, max_tokens=100))
        first = await call.read()
        assert isinstance(first, pb.GenerateStreamResponse)
        call.cancel()

        async def aborted() -> bool:
            return bool((await sim_stats(slow_stack))["aborted"] > before)

        await eventually(aborted, what="the engine aborted it")
    await _idle(slow_stack)
    load = await slow_stub.GetLoad(pb.GetLoadRequest())
    assert load.adapter_in_flight == 0


async def test_cancelled_unary_call_aborts_in_the_engine(
    slow_stack: Stack, slow_stub: Stub
) -> None:
    await _idle(slow_stack)
    before = (await sim_stats(slow_stack))["aborted"]
    async with slow_stack.stalled(count=1):
        call = slow_stub.Generate(prompt_request(slow_stack, max_tokens=100))

        async def running() -> bool:
            return bool((await sim_stats(slow_stack))["in_flight"] >= 1)

        await eventually(running, what="the request at the engine")
        call.cancel()

        async def aborted() -> bool:
            return bool((await sim_stats(slow_stack))["aborted"] > before)

        await eventually(aborted, what="the engine aborted it")
    await _idle(slow_stack)


async def test_deadline_is_deadline_exceeded_and_aborts(slow_stack: Stack, slow_stub: Stub) -> None:
    await _idle(slow_stack)
    before = (await sim_stats(slow_stack))["aborted"]
    async with slow_stack.stalled(count=1):
        # The deadline passes while the engine holds the request (its first token proves
        # that it has it): 5 s leaves a slow machine ample time to get that far.
        call = slow_stub.GenerateStream(prompt_request(slow_stack, max_tokens=100), timeout=5)
        assert isinstance(await call.read(), pb.GenerateStreamResponse)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _read_to_the_end(call)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        async def aborted() -> bool:
            return bool((await sim_stats(slow_stack))["aborted"] > before)

        await eventually(aborted, what="the engine aborted it")
    await _idle(slow_stack)


async def test_load_report_sees_running_requests(slow_stack: Stack, slow_stub: Stub) -> None:
    await _idle(slow_stack)
    idle = await slow_stub.GetLoad(pb.GetLoadRequest())
    assert idle.ready
    assert (idle.running, idle.waiting, idle.adapter_in_flight) == (0, 0, 0)
    async with slow_stack.stalled():
        calls = [
            slow_stub.GenerateStream(prompt_request(slow_stack, max_tokens=100)) for _ in range(2)
        ]
        try:
            for call in calls:
                await call.read()
            busy = await slow_stub.GetLoad(pb.GetLoadRequest())
            assert busy.running == 2
            assert busy.adapter_in_flight == 2
        finally:
            for call in calls:
                call.cancel()
    await _idle(slow_stack)


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_engine_overload_is_resource_exhausted(
    slow_stack: Stack, slow_stub: Stub, streamed: bool
) -> None:
    await _idle(slow_stack)
    # Two running and one queued fill the simulator (max 2 running, 1 queued; TGI: 3 admitted).
    async with slow_stack.stalled():
        calls = [
            slow_stub.GenerateStream(prompt_request(slow_stack, max_tokens=100)) for _ in range(3)
        ]
        try:

            async def full() -> bool:
                return bool((await sim_stats(slow_stack))["in_flight"] == 3)

            await eventually(full, what="the engine full")
            request = prompt_request(slow_stack, max_tokens=100)
            error = await _failure(slow_stub, request, streamed)
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert error.reason == pb.ENGINE_OVERLOADED
        finally:
            for call in calls:
                call.cancel()
    await _idle(slow_stack)
