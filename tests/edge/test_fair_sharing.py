"""Fair sharing through a real edge: tenants' keys, their requests' token reservations and
their keys' priority classes decide the order a saturated model admits them in.

The model admits one request at a time (`EDGE_MAX_IN_FLIGHT_PER_MODEL=1`) and the simulator
stalls every stream after its first token, so a request holds its slot until its client
leaves: the test lets them go one by one and reads the order the edge admitted them in from
which stream got its first token next. No timing is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from tests.support.edge import Edge, start_edge
from tests.support.polling import TIMEOUT_S, eventually
from tests.support.stacks import Stack

MODEL = "demo-vllm"
#: Tenant A asks for long answers, B for short ones; C's key is in the highest class.
KEYS = {"a": ("tenant-a", None), "b": ("tenant-b", None), "c": ("tenant-c", "interactive")}
LONG, SHORT = 500, 10


def _keyring(directory: Path) -> tuple[dict[str, str], Path]:
    plain = {name: generate_key() for name in KEYS}
    entries = [
        KeyEntry(
            name=name,
            tenant=tenant,
            sha256=hash_key(plain[name]),
            models=["*"],
            priority=priority,
        )
        for name, (tenant, priority) in KEYS.items()
    ]
    path = directory / "keys.yaml"
    path.write_text(render_keys(entries))
    return plain, path


@contextlib.asynccontextmanager
async def _edge(stack: Stack, directory: Path, fair: bool) -> AsyncIterator[Edge]:
    env = {"EDGE_MAX_IN_FLIGHT_PER_MODEL": "1", "EDGE_FAIR_QUEUING": "true" if fair else "false"}
    running = await asyncio.to_thread(
        start_edge,
        directory,
        {"vllm": [stack.address]},
        env=env,
        keyring=_keyring(directory),
        name=f"edge-{'fair' if fair else 'fifo'}",
    )
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


class Requests:
    """Streams that each report their first token, then hold until let go."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def queued(self) -> float:
        samples = await self.edge.metrics()
        return sum(
            v
            for (name, labels), v in samples.items()
            if name == "switchyard_edge_queued_requests" and ("model", MODEL) in labels
        )

    async def send(self, label: str, key: str, max_tokens: int, *, waits: int) -> None:
        """Send one; `waits`: how many should be queued once it is (it arrived)."""
        self.release[label] = asyncio.Event()
        self.tasks.append(asyncio.create_task(self._stream(label, key, max_tokens)))
        await eventually(lambda: self._queued_is(waits), what=f"{waits} queued after {label}")

    async def _queued_is(self, count: int) -> bool:
        return await self.queued() == count

    async def _stream(self, label: str, key: str, max_tokens: int) -> None:
        client = AsyncOpenAI(
            base_url=f"{self.edge.url}/v1", api_key=self.edge.keys[key], max_retries=0
        )
        async with client:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hello"}],
                max_tokens=max_tokens,
                stream=True,
            )
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        break
                await self.started.put(label)
                await self.release[label].wait()  # leaving frees the slot

    async def admitted_order(self, count: int) -> list[str]:
        """Let the admitted request go, `count` times: who was admitted, in order."""
        order = []
        for _ in range(count):
            label = await asyncio.wait_for(self.started.get(), TIMEOUT_S)
            order.append(label)
            self.release[label].set()
        return order

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.parametrize("fair", [True, False], ids=["fair", "fifo"])
async def test_tenants_are_admitted_by_fair_share_or_in_arrival_order(
    engines: dict[str, Stack], tmp_path: Path, fair: bool
) -> None:
    stack = engines["vllm"]
    async with _edge(stack, tmp_path, fair) as edge, stack.stalled():
        requests = Requests(edge)
        try:
            await requests.send("a0", "a", LONG, waits=0)  # admitted: it holds the slot
            assert await asyncio.wait_for(requests.started.get(), TIMEOUT_S) == "a0"
            for i in range(1, 5):
                await requests.send(f"a{i}", "a", LONG, waits=i)
            await requests.send("b0", "b", SHORT, waits=5)
            await requests.send("b1", "b", SHORT, waits=6)
            await requests.send("c0", "c", LONG, waits=7)  # the interactive class
            requests.release["a0"].set()
            order = await requests.admitted_order(7)
        finally:
            await requests.close()
    if fair:
        # C's class first; then B's short requests before A's backlog (B's tags, from the
        # virtual time A's backlog started at, are below A's first).
        assert order == ["c0", "b0", "b1", "a1", "a2", "a3", "a4"]
    else:
        assert order == ["a1", "a2", "a3", "a4", "b0", "b1", "c0"]
