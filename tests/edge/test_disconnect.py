"""ClientWatch: a disconnect, or the end of a shutdown's grace period, cancels the work and
ends the block quietly; nothing else does."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import MutableMapping
from typing import Any

import pytest

from switchyard.edge.disconnect import ClientWatch
from switchyard.edge.draining import Drain
from switchyard.edge.responses import KEEPALIVE
from tests.support.polling import eventually


class _Client:
    """An ASGI receive channel the test controls."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[MutableMapping[str, Any]] = []
        self.listening = asyncio.Event()  # someone waits on receive()

    async def receive(self) -> dict[str, Any]:
        self.listening.set()
        return await self.messages.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    def disconnect(self) -> None:
        self.messages.put_nowait({"type": "http.disconnect"})


async def test_disconnect_cancels_the_block_and_is_swallowed() -> None:
    client = _Client()
    reached_after = False
    cancelled_inside = False
    async with ClientWatch(client.receive) as watch:
        client.disconnect()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled_inside = True
            raise
    reached_after = True
    assert cancelled_inside
    assert reached_after
    assert watch.disconnected
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0


async def test_no_disconnect_changes_nothing() -> None:
    client = _Client()
    async with ClientWatch(client.receive) as watch:
        await asyncio.sleep(0.01)
    assert not watch.disconnected


async def test_disconnect_after_stop_is_ignored() -> None:
    # ASGI servers report http.disconnect once the response is complete.
    client = _Client()
    async with ClientWatch(client.receive) as watch:
        await client.listening.wait()
        watch.stop()
        client.disconnect()
        await eventually(client.messages.empty, what="the disconnect read")
    assert not watch.disconnected


async def test_outside_cancellation_propagates() -> None:
    client = _Client()
    started = asyncio.Event()

    async def work() -> None:
        async with ClientWatch(client.receive):
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_errors_inside_propagate() -> None:
    client = _Client()
    with pytest.raises(KeyError):
        async with ClientWatch(client.receive):
            raise KeyError("x")


async def test_keepalive_comments_during_silence_only() -> None:
    loop = asyncio.get_running_loop()
    client = _Client()
    keepalive_s = 0.05
    #: (when, what) of everything written to the client, in order: chunks and keep-alives.
    writes: list[tuple[float, str]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        writes.append((loop.time(), "keep-alive"))
        await client.send(message)

    async with ClientWatch(client.receive, send, keepalive_s=keepalive_s) as watch:
        writes.append((watch.last_write, "start"))
        await eventually(lambda: len(client.sent) >= 2, what="keep-alives during silence")
        for _ in range(6):  # busy: a chunk more often than the interval
            watch.touch()
            writes.append((watch.last_write, "chunk"))
            await asyncio.sleep(keepalive_s / 4)
        watch.stop()
    assert all(m["body"] == KEEPALIVE and m["more_body"] for m in client.sent)
    # However slow the machine, each keep-alive came after a whole interval with nothing
    # written (measured here, not assumed): a chunk resets the silence.
    gaps = [(what, at - before) for (before, _), (at, what) in itertools.pairwise(writes)]
    assert all(gap >= keepalive_s for what, gap in gaps if what == "keep-alive"), gaps


async def test_no_watcher_task_is_left_behind() -> None:
    client = _Client()
    for _ in range(20):
        async with ClientWatch(client.receive, client.send, keepalive_s=1):
            await asyncio.sleep(0)
    # Only the watchers: the loop may run other tests' servers meanwhile.
    assert not [t for t in asyncio.all_tasks() if _coroutine_name(t) == "ClientWatch._watch"]


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", ""))


async def test_the_end_of_a_shutdown_s_grace_ends_the_block_quietly() -> None:
    client = _Client()
    drain = Drain(grace_s=0)
    cancelled_inside = False
    async with ClientWatch(client.receive, drain=drain) as watch:
        assert drain.running == {watch}
        drain.begin()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled_inside = True
            raise
    assert cancelled_inside
    assert (watch.shut_down, watch.disconnected) == (True, False)
    assert not drain.running
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0


async def test_a_request_starting_after_the_grace_period_is_ended_at_once() -> None:
    client = _Client()
    drain = Drain(grace_s=0)
    drain.begin()
    await eventually(lambda: drain.over, what="the grace period over")
    async with ClientWatch(client.receive, drain=drain) as watch:
        await asyncio.sleep(10)
    assert watch.shut_down


async def test_the_end_of_grace_spares_a_response_that_is_finishing() -> None:
    client = _Client()
    drain = Drain(grace_s=0)
    async with ClientWatch(client.receive, drain=drain) as watch:
        watch.stop()  # its last message is being sent
        drain.begin()
        await eventually(lambda: drain.over, what="the grace period over")
    assert not watch.shut_down


async def test_no_grace_period_runs_out_before_a_shutdown_begins() -> None:
    client = _Client()
    drain = Drain(grace_s=0)
    async with ClientWatch(client.receive, drain=drain) as watch:
        await asyncio.sleep(0.01)
    assert not watch.shut_down
    drain.close()
