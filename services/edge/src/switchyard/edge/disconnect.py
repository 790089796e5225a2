"""Noticing that the client went away, so its generation is cancelled at once.

`ClientWatch` listens on the ASGI `receive` channel beside the request's own task; on
`http.disconnect` it cancels that task (which cancels the gRPC call and, through the
adapter, the engine's generation), and the `async with` block ends quietly. Once a stream
has begun (`keep_alive`: nothing may be written before the response's status), it also
sends SSE keep-alive comments while the stream is silent, so proxies do not cut idle
streams: both jobs share one helper task per request and cost nothing per token.

The same way, a shutdown's end of grace (`Drain`) ends the block quietly, with
`shut_down` set, so the caller can answer the client with an error of its own.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive, Send

from switchyard.edge.draining import Drain
from switchyard.edge.responses import KEEPALIVE


class ClientWatch:
    __slots__ = (
        "_active",
        "_drain",
        "_keepalive_s",
        "_receive",
        "_send",
        "_task",
        "_wait",
        "_watcher",
        "disconnected",
        "last_write",
        "shut_down",
    )

    def __init__(
        self,
        receive: Receive,
        send: Send | None = None,
        keepalive_s: float | None = None,
        drain: Drain | None = None,
    ) -> None:
        self._receive = receive
        self._drain = drain
        self._send = send
        self._keepalive_s = keepalive_s if send is not None else None
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: The watcher's wait for a message, while it waits (its deadline: the next keep-alive).
        self._wait: asyncio.Timeout | None = None
        self._active = False
        self.disconnected = False
        self.shut_down = False
        self.last_write = 0.0

    async def __aenter__(self) -> ClientWatch:
        self._task = asyncio.current_task()
        self._active = True
        self.last_write = asyncio.get_running_loop().time()
        self._watcher = asyncio.create_task(self._watch())
        if self._drain is not None:
            self._drain.add(self)
        return self

    def end_for_shutdown(self) -> None:
        """The shutdown's grace period is over: cancel the block (unless it is finishing)."""
        if self._active and self._task is not None and not self.disconnected:
            self.shut_down = True
            self._task.cancel()

    def keep_alive(self, send: Send, keepalive_s: float) -> None:
        """Send keep-alive comments from now on, after `keepalive_s` of silence each."""
        self._send = send
        self._keepalive_s = keepalive_s
        self.touch()
        wait = self._wait
        if wait is not None and not wait.expired():  # the watcher's wait has no deadline yet
            wait.reschedule(self.last_write + keepalive_s)

    def touch(self) -> None:
        """Something was just sent: no keep-alive needed for a while."""
        self.last_write = asyncio.get_running_loop().time()

    def stop(self) -> None:
        """Call right before the response's last message: once it is complete, ASGI servers
        report `http.disconnect`, which must not cancel the request."""
        self._active = False

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._active:
            deadline = None
            if self._keepalive_s is not None:
                deadline = self.last_write + self._keepalive_s
            try:
                async with asyncio.timeout_at(deadline) as self._wait:
                    message = await self._receive()
            except TimeoutError:
                assert self._keepalive_s is not None
                silent = loop.time() - self.last_write >= self._keepalive_s
                if silent and self._active and self._send is not None:
                    await self._send(
                        {"type": "http.response.body", "body": KEEPALIVE, "more_body": True}
                    )
                    self.touch()
                continue
            finally:
                self._wait = None
            if message["type"] == "http.disconnect":
                if self._active and self._task is not None and not self.shut_down:
                    self.disconnected = True
                    self._task.cancel()
                return

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._active = False
        if self._drain is not None:
            self._drain.discard(self)
        task, watcher = self._task, self._watcher
        assert task is not None
        assert watcher is not None
        watcher.cancel()
        ours = self.disconnected or self.shut_down
        try:
            await asyncio.wait((watcher,))
        except asyncio.CancelledError:
            if not ours:
                raise  # cancelled from outside (e.g. uvicorn's hard stop): not ours to swallow
        if not ours:
            return False
        # We cancelled the task (the client left, or the grace period is over): withdraw that
        # request, and end the block quietly unless someone else asked for cancellation too.
        task.uncancel()
        if task.cancelling():
            raise asyncio.CancelledError
        return exc_type is None or issubclass(exc_type, asyncio.CancelledError)
