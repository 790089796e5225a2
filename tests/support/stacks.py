"""An engine simulator with its adapter in front, started as real processes for tests.

The command lines are each simulator's own (they mirror the real engines' flags), so
these helpers also document how to start each pair by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import Service, free_port, start, wait_http, wait_serving

ENGINES = ("vllm", "sglang", "tgi")
SIM_MODEL = "switchyard/sim-1b-instruct"


@dataclass(frozen=True)
class EngineOptions:
    """What differs between simulator set-ups; the same meaning for every engine."""

    max_model_len: int = 1024
    #: Requests generating at once; then a queue.
    max_running: int | None = None
    #: Requests that may wait; past that the engine refuses (TGI: running + waiting).
    max_queued: int | None = None
    ttft_s: float = 0.005
    itl_s: float = 0.001
    load_delay_s: float = 0.0


def sim_args(engine: str, port: int, served_model_name: str, opts: EngineOptions) -> list[str]:
    sim = [
        "--sim-ttft", str(opts.ttft_s),
        "--sim-itl", str(opts.itl_s),
        "--sim-load-delay", str(opts.load_delay_s),
    ]  # fmt: skip
    if engine == "vllm":
        args = [
            "switchyard.enginesim.vllm", "serve", SIM_MODEL,
            "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", served_model_name,
            "--max-model-len", str(opts.max_model_len),
        ]  # fmt: skip
        if opts.max_running:
            args += ["--max-num-seqs", str(opts.max_running)]
        if opts.max_queued is not None:
            args += ["--max-num-queued-reqs", str(opts.max_queued)]
    elif engine == "sglang":
        args = [
            "switchyard.enginesim.sglang", "--model-path", SIM_MODEL,
            "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", served_model_name,
            "--context-length", str(opts.max_model_len),
            "--enable-metrics",
        ]  # fmt: skip
        if opts.max_running:
            args += ["--max-running-requests", str(opts.max_running)]
        if opts.max_queued is not None:
            args += ["--max-queued-requests", str(opts.max_queued)]
    elif engine == "tgi":
        args = [
            "switchyard.enginesim.tgi", "--model-id", SIM_MODEL,
            "--hostname", "127.0.0.1", "--port", str(port),
            "--max-input-tokens", str(opts.max_model_len - 1),
            "--max-total-tokens", str(opts.max_model_len),
        ]  # fmt: skip
        if opts.max_running or opts.max_queued is not None:
            # TGI has one limit: requests admitted at all (running or queued).
            args += [
                "--max-concurrent-requests",
                str((opts.max_running or 0) + (opts.max_queued or 0)),
            ]
    else:
        raise ValueError(engine)
    return args + sim


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
    return start(
        f"sim-{engine}{name}", sim_args(engine, port, f"demo-{engine}", opts), log_dir, port=port
    )


def start_adapter(
    engine: str, engine_url: str, log_dir: Path, name: str = "", **env: str
) -> Service:
    port = free_port()
    return start(
        f"adapter-{engine}{name}",
        [f"switchyard.adapter_{engine}"],
        log_dir,
        port=port,
        env={
            "ADAPTER_ENGINE_URL": engine_url,
            "ADAPTER_SERVED_MODEL_NAME": f"demo-{engine}",
            "ADAPTER_HOST": "127.0.0.1",
            "ADAPTER_PORT": str(port),
            "ADAPTER_METRICS_PORT": "0",
            "ADAPTER_HEALTH_INTERVAL_S": "0.1",
            "ADAPTER_LOAD_CACHE_S": "0",
            "ADAPTER_LOG_FORMAT": "json",
            "ADAPTER_SHUTDOWN_GRACE_S": "10",
            **env,
        },
    )


def start_stack(
    engine: str, log_dir: Path, opts: EngineOptions | None = None, name: str = "", wait: bool = True
) -> Stack:
    opts = opts or EngineOptions()
    sim = start_sim(engine, log_dir, opts, name)
    adapter = start_adapter(engine, f"http://127.0.0.1:{sim.port}", log_dir, name)
    stack = Stack(engine, f"demo-{engine}", sim, adapter, opts)
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
