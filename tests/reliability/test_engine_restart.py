"""An engine that dies and comes back: the adapter says so on its health service each time,
and the edge follows it, both ways, without anyone restarting the adapter or the edge.

The adapter publishes what its checks find (NOT_SERVING while the engine is gone, SERVING
once a check passes again); the edge stops routing on NOT_SERVING (503 "No backend", with
Retry-After) and resumes on SERVING.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from switchyard.devstack.components import served_name, sim_args
from tests.reliability.helpers import chat
from tests.support.edge import start_edge
from tests.support.polling import eventually
from tests.support.processes import SERVING, health_status, start, wait_http
from tests.support.stacks import TEST_OPTIONS, start_stack

NOT_SERVING = 2


async def test_the_edge_follows_the_adapter_through_an_engine_restart(tmp_path: Path) -> None:
    stack = await asyncio.to_thread(start_stack, "vllm", tmp_path)
    edge = None
    sim = stack.sim
    try:
        edge = await asyncio.to_thread(start_edge, tmp_path, {"vllm": [stack.address]})
        async with httpx.AsyncClient(timeout=30) as client:

            async def answers(expected: int) -> bool:
                response = await client.post(
                    f"{edge.url}/v1/chat/completions", json=chat(2), headers=edge.auth()
                )
                return response.status_code == expected

            assert await answers(200)
            sim.signal(signal.SIGKILL)
            await asyncio.to_thread(sim.process.wait)
            await eventually(
                lambda: health_status(stack.address) == NOT_SERVING,
                what="the adapter saying NOT_SERVING",
            )
            await eventually(lambda: answers(503), what="the edge refusing with 503")

            args = sim_args("vllm", "127.0.0.1", stack.sim.port, served_name("vllm"), TEST_OPTIONS)
            sim = start("sim-vllm-again", args, tmp_path, port=stack.sim.port)
            await asyncio.to_thread(wait_http, sim, f"{stack.sim_url}/sim/stats")
            await eventually(
                lambda: health_status(stack.address) == SERVING, what="the adapter SERVING"
            )
            await eventually(lambda: answers(200), what="the edge serving again")
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(stack.adapter.stop)
        await asyncio.to_thread(sim.stop)
