"""An engine simulator with its adapter in front, started as real processes for tests.

The command lines come from `switchyard.devstack.components`, as for `make run`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from switchyard.devstack.components import (
    ENGINES,
    EngineOptions,
    adapter_args,
    adapter_env,
    served_name,
    sim_args,
)
from tests.support.processes import Service, free_port, start, wait_http, wait_serving

__all__ = ["ENGINES", "TEST_OPTIONS", "EngineOptions", "Stack", "options", "start_stack"]

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


def start_sim(engine: str, log_dir: Path, opts: EngineOptions, name: str = "") -> Service:
    port = free_port()
    args = sim_args(engine, "127.0.0.1", port, served_name(engine), opts)
    return start(f"sim-{engine}{name}", args, log_dir, port=port)


def start_adapter(
    engine: str, engine_url: str, log_dir: Path, name: str = "", **env: str
) -> Service:
    port = free_port()
    test_env = {
        "ADAPTER_HEALTH_INTERVAL_S": "0.1",
        "ADAPTER_LOAD_CACHE_S": "0",
        "ADAPTER_LOG_FORMAT": "json",
        "ADAPTER_SHUTDOWN_GRACE_S": "10",
        **env,
    }
    return start(
        f"adapter-{engine}{name}",
        adapter_args(engine),
        log_dir,
        port=port,
        env=adapter_env(engine, engine_url, "127.0.0.1", port, extra=test_env),
    )


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
    adapter = start_adapter(
        engine, f"http://127.0.0.1:{sim.port}", log_dir, name, **(adapter_env or {})
    )
    stack = Stack(engine, served_name(engine), sim, adapter, opts)
    if wait:
        try:
            wait_http(sim, f"{stack.sim_url}/sim/stats", timeout=30 + opts.load_delay_s)
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
