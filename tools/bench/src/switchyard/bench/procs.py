"""The bench's server processes: started in their own sessions, logging to files, stopped
with SIGTERM (then SIGKILL). A process that fails to come up is reported with its log's tail."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Variables of ours that must not leak into the servers (they would change what is measured).
_SCRUBBED = ("OTEL_", "EDGE_", "ADAPTER_", "LITELLM_", "PROMETHEUS_MULTIPROC_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace_s: float = 10.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()


class Processes:
    """Starts processes (logs under `log_dir`) and stops them all, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[Proc] = []

    async def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Proc:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, process, log_path)
        self._procs.append(proc)
        return proc

    async def start_python(
        self, name: str, module_args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Proc:
        return await self.start(name, [sys.executable, "-m", *module_args], env)

    async def stop(self, proc: Proc) -> None:
        await proc.stop()
        if proc in self._procs:
            self._procs.remove(proc)

    async def stop_all(self) -> None:
        while self._procs:
            await self._procs.pop().stop()


async def wait_ready(
    proc: Proc, check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0
) -> float:
    """Poll `check` until it says yes; returns the seconds it took. Raises RuntimeError
    (with the log's tail) if the process exits or `timeout_s` passes first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.log_tail()}")
        with contextlib.suppress(Exception):
            if await check():
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready after {timeout_s:.0f}s:\n{proc.log_tail()}")
