"""A loopback TCP proxy that a test can break on purpose, for faults no server fakes well.

    async with TcpProxy(upstream_port) as proxy:      # clients connect to proxy.port
        proxy.reset_next(b"POST ")   # the next request starting so: its connection is reset
        proxy.hold_new()             # connections opened from now on get no bytes through...
        proxy.release()              # ...until this

A reset is a real one: both sides' sockets are closed with SO_LINGER 0, so each peer
gets an RST ("connection reset by peer"), as when a process or a middlebox drops a
connection under a request. A held connection is accepted (the client's connect returns)
but nothing it sends reaches the server until `release`: a server slow to accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType

_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Forwards connections on a free loopback port to `upstream_port` on loopback."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._released = asyncio.Event()
        self._released.set()
        self._reset_prefix: bytes | None = None
        self._resets_left: int | None = None
        self.port = 0
        #: Connections accepted since start.
        self.accepted = 0
        #: Connections reset by `reset_next`.
        self.resets = 0
        #: Connections held now (accepted, not yet forwarded).
        self.held = 0

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset_next(self, prefix: bytes | None, count: int | None = 1) -> None:
        """Reset the connection of each of the next `count` client sends that start with
        `prefix` (every one while `count` is None) instead of forwarding it; None: stop."""
        self._reset_prefix = prefix
        self._resets_left = count

    def hold_new(self) -> None:
        """Hold connections opened from now on (see the module's docstring)."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def aclose(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            if not self._released.is_set():
                self.held += 1
                try:
                    await self._released.wait()
                finally:
                    self.held -= 1
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self._upstream_port)
            self._writers.add(upstream)
            back = asyncio.create_task(self._pipe(up_reader, writer))
            try:
                await self._forward(reader, upstream, writer)
            finally:
                back.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await back
        except OSError:
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Client to server, resetting both ends on a matching send."""
        while data := await reader.read(_CHUNK):
            if self._should_reset(data):
                self.resets += 1
                _reset(client)
                _reset(upstream)
                return
            upstream.write(data)
            await upstream.drain()

    def _should_reset(self, data: bytes) -> bool:
        prefix = self._reset_prefix
        if prefix is None or not data.startswith(prefix):
            return False
        if self._resets_left is not None:
            self._resets_left -= 1
            if self._resets_left <= 0:
                self._reset_prefix = None
        return True

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()
