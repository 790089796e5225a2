"""An engine simulator with its adapter in front, started as real processes for tests.

The command lines come from `switchyard.devstack.components`, as for `make run`; both
processes bind ports the OS picks and say which (`SIM_LISTENING`, `ADAPTER_LISTENING`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from switchyard.devstack.components import (
    ADAPTER_LISTENING,
    ENGINES,
    SIM_LISTENING,
    EngineOptions,
    adapter_args,
    adapter_env,
    served_name,
    sim_args,
)
from tests.support.polling import TIMEOUT_S
from tests.support.processes import Service, listening_port, start, wait_http, wait_serving

__all__ = [
    "ENGINES",
    "TEST_OPTIONS",
    "EngineOptions",
    "Stack",
    "options",
    "stalled",
    "start_stack",
]

#: Fast simulators with a small context: what most tests want.
TEST_OPTIONS = EngineOptions(max_model_len=1024, ttft_s=0.005, itl_s=0.001)


def options(**changes: float | int | None) -> EngineOptions:
    """`TEST_OPTIONS` with some fields changed."""
    return replace(TEST_OPTIONS, **changes)  # type: ignore[arg-type]


@dataclass
class Stack:
    engine: str
    model: str
    sim: Service
    adapter: Service
    options: EngineOptions

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.adapter.port}"

    def stop(self) -> None:
        self.adapter.stop()
        self.sim.stop()

    def stalled(
        self, count: int | None = None, after: int = 1
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """`stalled` for this stack's simulator."""
        return stalled(self.sim_url, count, after)


@contextlib.asynccontextmanager
async def stalled(sim_url: str, count: int | None = None, after: int = 1) -> AsyncIterator[None]:
    """The simulator's next `count` requests (None: all) stop after `after` tokens until the
    block ends (its stall fault): they stay in flight however slow the machine is, until
    their caller leaves."""
    async with httpx.AsyncClient(base_url=sim_url, timeout=30) as client:
        fault = {"stall_after": after, "count": count}
        (await client.post("/sim/faults", json=fault)).raise_for_status()
        try:
            yield
        finally:
            (await client.delete("/sim/faults")).raise_for_status()


def start_sim(engine: str, log_dir: Path, opts: EngineOptions, name: str = "") -> Service:
    """A simulator on a port the OS picks; returns once it listens (after its load)."""
    args = sim_args(engine, "127.0.0.1", 0, served_name(engine), opts)
    sim = start(f"sim-{engine}{name}", args, log_dir, port=0)
    try:
        listening_port(sim, SIM_LISTENING, timeout=TIMEOUT_S + opts.load_delay_s)
    except BaseException:
        sim.stop()
        raise
    return sim


def start_adapter(
    engine: str, engine_url: str, log_dir: Path, name: str = "", **env: str
) -> Service:
    """An adapter on a port the OS picks; returns once it listens (SERVING comes later)."""
    test_env = {
        "ADAPTER_HEALTH_INTERVAL_S": "0.1",
        "ADAPTER_LOAD_CACHE_S": "0",
        "ADAPTER_LOG_FORMAT": "json",
        "ADAPTER_SHUTDOWN_GRACE_S": "10",
        "ADAPTER_DRAIN_DELAY_S": "0",  # tests that drain set their own
        **env,
    }
    adapter = start(
        f"adapter-{engine}{name}",
        adapter_args(engine),
        log_dir,
        port=0,
        env=adapter_env(engine, engine_url, "127.0.0.1", 0, extra=test_env),
    )
    try:
        listening_port(adapter, ADAPTER_LISTENING)
    except BaseException:
        adapter.stop()
        raise
    return adapter


def start_stack(
    engine: str,
    log_dir: Path,
    opts: EngineOptions | None = None,
    name: str = "",
    wait: bool = True,
    adapter_env: dict[str, str] | None = None,
) -> Stack:
    opts = opts or TEST_OPTIONS
    sim = start_sim(engine, log_dir, opts, name)
    try:
        adapter = start_adapter(
            engine, f"http://127.0.0.1:{sim.port}", log_dir, name, **(adapter_env or {})
        )
    except BaseException:
        sim.stop()
        raise
    stack = Stack(engine, served_name(engine), sim, adapter, opts)
    if wait:
        try:
            wait_http(sim, f"{stack.sim_url}/sim/stats")
            wait_serving(adapter, stack.address)
        except BaseException:
            stack.stop()
            raise
    return stack


@contextlib.contextmanager
def running_stack(
    engine: str, log_dir: Path, opts: EngineOptions | None = None, name: str = ""
) -> Iterator[Stack]:
    stack = start_stack(engine, log_dir, opts, name)
    try:
        yield stack
    finally:
        stack.stop()
