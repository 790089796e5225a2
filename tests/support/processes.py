"""Start the project's services as real processes, on loopback ports, for tests.

A service that can bind port 0 is started so (the OS picks a free port, no race with
other processes) and `listening_port` reads the port it names in its log. Each process
logs to a file; when a wait fails, the error carries the log's tail so a failing test
says why the service did not come up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.polling import NotYet, eventually_sync

SERVING = health_pb2.HealthCheckResponse.SERVING


#: How long a process may take to come up. A process that exits is noticed at once, so the
#: bound only matters for one still starting: on a shared 2-core CI machine under load, a
#: Python service's imports alone have taken over 30 s.
START_TIMEOUT_S = 90.0


def free_port() -> int:
    """A port free now; another process may take it before it is used: prefer port 0 and
    `listening_port` where the service allows it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    extra_ports: dict[str, int] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def fail(self, what: str) -> AssertionError:
        state = "running" if self.alive() else f"exited with {self.process.returncode}"
        return AssertionError(f"{self.name} ({state}): {what}\n--- log tail ---\n{self.log_tail()}")


def start(
    name: str,
    args: Sequence[str],
    log_dir: Path,
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    extra_ports: Mapping[str, int] | None = None,
) -> Service:
    """Run `python -m <args...>` with this interpreter."""
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    return Service(name, process, log_path, port, dict(extra_ports or {}))


def listening_port(
    service: Service, pattern: re.Pattern[str], timeout: float = START_TIMEOUT_S
) -> int:
    """The port that `service`, started on port 0, says it bound: group 1 of the first line
    of its log that `pattern` matches. It becomes `service.port`."""

    def named() -> int | None:
        for line in service.log_path.read_text(errors="replace").splitlines():
            if found := pattern.search(line):
                return int(found.group(1))
        if not service.alive():
            raise service.fail("exited before saying which port it listens on")
        return None

    try:
        service.port = eventually_sync(named, within_s=timeout, what="the port it listens on")
    except NotYet as exc:
        raise service.fail(str(exc)) from None
    return service.port


def wait_http(
    service: Service, url: str, timeout: float = START_TIMEOUT_S, status: int | None = 200
) -> None:
    """Poll `url` until it answers (with `status`, unless None)."""

    codes: list[int] = []

    def answered() -> bool:
        if not service.alive():
            raise service.fail(f"exited while waiting for {url}")
        codes.append(httpx.get(url, timeout=2.0).status_code)
        return status is None or codes[-1] == status

    try:
        eventually_sync(
            answered, within_s=timeout, interval=0.05, what=url, ignore=(httpx.HTTPError,)
        )
    except NotYet as exc:
        raise service.fail(f"{exc}; HTTP statuses seen: {sorted(set(codes))}") from None


def health_status(address: str, service_name: str = "", timeout: float = 2.0) -> int | None:
    """The gRPC health status of `address`, or None when it cannot be asked."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=service_name), timeout=timeout
            )
        except grpc.RpcError:
            return None
        status: int = response.status
        return status


def wait_health(
    service: Service, address: str, status: int, timeout: float = START_TIMEOUT_S
) -> None:
    """Poll the gRPC health of `address` until it answers `status`."""

    def answers() -> bool:
        if not service.alive():
            raise service.fail(f"exited while waiting for health status {status}")
        return health_status(address) == status

    try:
        eventually_sync(answers, within_s=timeout, interval=0.05, what=f"health status {status}")
    except NotYet as exc:
        raise service.fail(f"{exc}; now {health_status(address)}") from None


def wait_serving(service: Service, address: str, timeout: float = START_TIMEOUT_S) -> None:
    wait_health(service, address, SERVING, timeout)


class Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


@contextlib.asynccontextmanager
async def started_together(*starts: Callable[[], S]) -> AsyncIterator[list[S]]:
    """Start processes at once, each `start` (blocking) in a thread of its own: a start is
    mostly waiting for the process to come up. Yields them in order; stops every one that
    started when the block ends, or at once when another failed to start (its error is
    raised)."""
    started = await asyncio.gather(*(asyncio.to_thread(s) for s in starts), return_exceptions=True)
    running = [s for s in started if not isinstance(s, BaseException)]
    try:
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed
        yield running
    finally:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in running))
