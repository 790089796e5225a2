"""Start processes, wait until each is ready, relay their output, stop them all cleanly.

Children run in their own sessions, so Ctrl-C reaches only the supervisor, which stops
them in reverse order (edge first, engines last) with SIGTERM, then SIGKILL after a grace
period. If any child dies, the whole stack stops: a half-running stack only confuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

_COLORS = ("36", "33", "35", "32", "34", "31", "96", "93", "95")


#: How long, once every child has exited, their output may take to end.
RELAY_END_S = 5.0


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    relay: asyncio.Task[None] | None = None
    #: Matches the line in which the child says which port it bound (group 1).
    listening: re.Pattern[str] | None = None
    port: asyncio.Future[int] | None = None


class Supervisor:
    def __init__(self, *, color: bool | None = None, quiet: bool = False) -> None:
        self.children: list[Child] = []
        self._color = sys.stdout.isatty() if color is None else color
        self._quiet = quiet
        self._width = 10

    def _prefix(self, child: Child) -> str:
        label = child.name.ljust(self._width)
        if not self._color:
            return f"{label} | "
        code = _COLORS[self.children.index(child) % len(_COLORS)]
        return f"\033[{code}m{label}\033[0m | "

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        listening: re.Pattern[str] | None = None,
    ) -> Child:
        """Start `argv` (a program and its arguments) with `env` added to ours.

        `listening`: the child binds a port the OS chose (port 0) and names it in a line of
        its output that this pattern matches; `port_of` returns it.
        """
        child = Child(name, argv, dict(env or {}), listening=listening)
        if listening is not None:
            child.port = asyncio.get_running_loop().create_future()
        self.children.append(child)
        self._width = max(self._width, len(name))
        child.process = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **child.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        child.relay = asyncio.create_task(self._relay(child))
        return child

    async def start_python(
        self,
        name: str,
        module_args: Sequence[str],
        env: Mapping[str, str] | None = None,
        listening: re.Pattern[str] | None = None,
    ) -> Child:
        return await self.start(name, [sys.executable, "-m", *module_args], env, listening)

    async def _relay(self, child: Child) -> None:
        assert child.process is not None
        assert child.process.stdout is not None
        prefix = self._prefix(child)
        async for raw in child.process.stdout:
            line = raw.decode(errors="replace")
            if child.port is not None and not child.port.done():
                assert child.listening is not None
                if found := child.listening.search(line):
                    child.port.set_result(int(found.group(1)))
            if not self._quiet:
                sys.stdout.write(prefix + line)
                sys.stdout.flush()

    async def port_of(self, child: Child, timeout_s: float = 60.0) -> int:
        """The port `child` reports having bound (it was started with `listening`)."""
        assert child.port is not None, f"{child.name} was started without `listening`"
        assert child.process is not None
        exited = asyncio.create_task(child.process.wait())
        try:
            done, _ = await asyncio.wait(
                {child.port, exited}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            exited.cancel()
        if child.port.done():
            return child.port.result()
        if exited in done:
            raise RuntimeError(f"{child.name} exited while starting (see its output above)")
        raise RuntimeError(
            f"{child.name} did not say which port it listens on in {timeout_s:.0f}s"
            " (is its log level above INFO?)"
        )

    async def discard(self, child: Child) -> None:
        """Forget a child that exited while starting (to start another in its place)."""
        assert child.process is not None
        assert child.process.returncode is not None
        if child.relay is not None:
            await child.relay
        self.children.remove(child)

    async def wait_ready(
        self, child: Child, check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.process is None or child.process.returncode is not None:
                raise RuntimeError(f"{child.name} exited while starting (see its output above)")
            with contextlib.suppress(Exception):
                if await check():
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{child.name} was not ready after {timeout_s:.0f}s")

    async def watch(self) -> str:
        """Wait for Ctrl-C / SIGTERM or for a child to exit; says which."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waits = {asyncio.create_task(c.process.wait()): c for c in self.children if c.process}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopper, *waits}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopper, *waits):
            task.cancel()
        if stopper in done:
            return "stopping (Ctrl-C)"
        exited = next(waits[t] for t in done if t in waits)
        return f"{exited.name} exited with {exited.process.returncode if exited.process else '?'}; stopping"

    async def stop_all(self, grace_s: float = 10.0) -> None:
        for child in reversed(self.children):
            process = child.process
            if process is None or process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        # A child's output ends when every process holding its pipe is gone: one it started
        # and left behind (a helper process outliving its parent) must not keep Ctrl-C
        # from returning. Say which, and stop relaying it.
        relays = {c.relay: c for c in self.children if c.relay is not None}
        if relays:
            _, open_ = await asyncio.wait(relays, timeout=RELAY_END_S)
            for relay in open_:
                relay.cancel()
                sys.stderr.write(
                    f"{relays[relay].name}: its output is still open after it exited "
                    "(a process it started is still running); not waiting for it\n"
                )
            await asyncio.gather(*relays, return_exceptions=True)


def http_ok(url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(url)).status_code == 200

    return check


def grpc_serving(address: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2.0
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check


def redis_ping(socket_path: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await reader.readline()).startswith(b"+PONG")
        finally:
            writer.close()

    return check
