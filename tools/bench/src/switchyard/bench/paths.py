"""The paths measured, each started from the same command lines as `make run`.

- the engine simulators, one per latency profile (`SIMS`), serve every path: the floor
  is a simulator's own OpenAI API;
- Switchyard: the edge (1 or more uvicorn workers) → one vLLM adapter per simulator; for
  the cache scenarios, a second edge in front of the same adapters with its response cache
  on (in memory with one worker; with two, in the Redis they share);
- LiteLLM: its proxy → each simulator's OpenAI API (`hosted_vllm/` provider);
- bare: the bare relay (`bare`: a do-nothing edge and adapter over Switchyard's
  transports) → the simulators of the unary and stream scenarios.

A `Deployment` says where each path serves each simulator's model and which processes
are the path's own (metered for CPU and memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import yaml

from switchyard.bench import litellm
from switchyard.bench.loadgen import Target
from switchyard.bench.procs import Proc, Processes, free_port, wait_ready
from switchyard.bench.procstats import Role
from switchyard.bench.scenarios import cache_target
from switchyard.devstack.components import (
    EngineOptions,
    adapter_args,
    adapter_env,
    edge_args,
    edge_env,
    redis_args,
    sim_args,
    write_private,
)
from switchyard.devstack.supervisor import grpc_serving, http_ok, redis_ping
from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys

HOST = "127.0.0.1"
#: The one engine measured: LiteLLM reaches its simulator with its `hosted_vllm/` provider.
ENGINE = "vllm"
#: Room for every bench request at once (and more): no engine queue, no edge refusals.
_CAPACITY = 8192

#: The simulators: no latency (overhead runs), a realistic one (streams), a slow one
#: (long-lived streams that cost little CPU, for the memory run), and an embedding model
#: without latency. Each starts only when a scenario of the run needs it.
SIMS: dict[str, EngineOptions] = {
    # With a tool-call parser (the tools scenario); plain requests never reach it.
    "zero": EngineOptions(max_running=_CAPACITY, ttft_s=0.0, itl_s=0.0, tools=True),
    "stream": EngineOptions(max_running=_CAPACITY, ttft_s=0.05, itl_s=0.01),
    "idle": EngineOptions(max_running=_CAPACITY, ttft_s=0.05, itl_s=0.5),
    # vLLM's pooling runner, as `make run`'s demo-embed (Matryoshka-capable, 384 floats).
    "embed": EngineOptions(
        max_running=_CAPACITY, ttft_s=0.0, itl_s=0.0, embedding=True, matryoshka=True
    ),
}


def model_name(sim: str) -> str:
    return f"bench-{sim}"


@dataclass
class Sim:
    kind: str
    proc: Proc
    url: str


@dataclass
class Deployment:
    name: str
    targets: dict[str, Target]  # by simulator kind
    roles: dict[str, list[Role]]  # the path's own processes, by simulator kind
    notes: list[str] = field(default_factory=list)
    startup_s: float = 0.0
    #: Why the scenarios without a target here are not run (the report's note).
    unserved: str = "no response cache here"


async def start_sims(procs: Processes, kinds: Collection[str]) -> dict[str, Sim]:
    """The simulators of `kinds` (of `SIMS`), ready."""
    sims: dict[str, Sim] = {}
    for kind, opts in SIMS.items():
        if kind not in kinds:
            continue
        port = free_port()
        args = sim_args(ENGINE, HOST, port, model_name(kind), opts)
        proc = await procs.start_python(f"sim-{kind}", args)
        sims[kind] = Sim(kind, proc, f"http://{HOST}:{port}")
    for sim in sims.values():
        await wait_ready(sim.proc, http_ok(f"{sim.url}/health"))
    return sims


def floor(sims: Mapping[str, Sim]) -> Deployment:
    """The simulators themselves; the cache scenarios reach them too (no cache: the
    engine's own answers)."""
    targets = {k: Target(s.url, model_name(k)) for k, s in sims.items()}
    roles = {k: [Role("sim", (s.proc.pid,))] for k, s in sims.items()}
    return Deployment(
        name="floor",
        targets=targets | {cache_target(k): t for k, t in targets.items()},
        roles=roles | {cache_target(k): r for k, r in roles.items()},
    )


@contextlib.asynccontextmanager
async def redis_server(procs: Processes) -> AsyncIterator[tuple[str, str | None]]:
    """A local redis-server's URL (and a note if there is none)."""
    executable = shutil.which("redis-server")
    if executable is None:
        # The bench key has no limits, so the edge never asks the store anyway.
        yield "redis://127.0.0.1:1/0", "no redis-server: the 2-worker edge ran without one"
        return
    # Short: a unix socket's path must stay under ~100 bytes, and the results folder may not.
    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as sockets:
        socket_path = Path(sockets) / "redis.sock"
        proc = await procs.start("redis", redis_args(executable, socket_path))
        try:
            await wait_ready(proc, redis_ping(socket_path))
            yield f"unix://{socket_path}", None
        finally:
            await procs.stop(proc)


def _write_keys(state_dir: Path) -> tuple[str, Path]:
    key = generate_key()
    entry = KeyEntry(name="bench", tenant="bench", sha256=hash_key(key), models=["*"])
    keys_file = state_dir / "keys.yaml"
    write_private(keys_file, render_keys([entry]))
    return key, keys_file


async def _start_adapters(
    procs: Processes, sims: Mapping[str, Sim], name: str, state_dir: Path
) -> tuple[dict[str, Proc], Path]:
    """One vLLM adapter per simulator, and the routes file serving each simulator's model."""
    adapters: dict[str, Proc] = {}
    routes = []
    for kind, sim in sims.items():
        port = free_port()
        settings = {
            "ADAPTER_SERVED_MODEL_NAME": model_name(kind),
            "ADAPTER_LOG_LEVEL": "WARNING",
            "ADAPTER_MAX_CONNECTIONS": str(_CAPACITY),
        }
        env = adapter_env(ENGINE, sim.url, HOST, port, extra=settings)
        adapter = await procs.start_python(f"{name}-adapter-{kind}", adapter_args(ENGINE), env)
        await wait_ready(adapter, grpc_serving(f"{HOST}:{port}"))
        adapters[kind] = adapter
        routes.append({"name": model_name(kind), "engine": ENGINE, "endpoints": [f"{HOST}:{port}"]})
    routes_file = state_dir / f"{name}-routes.yaml"
    routes_file.write_text(yaml.safe_dump({"models": routes}, sort_keys=False))
    return adapters, routes_file


def workers(path: str) -> int:
    """The uvicorn workers of a Switchyard path, by its name (`switchyard-2w`: 2)."""
    return int(path.removeprefix("switchyard-").removesuffix("w"))


def cache_mode(workers: int) -> str:
    """The response cache a Switchyard path's cache scenarios use (`EDGE_CACHE`): one
    process keeps it in memory; several share it in Redis, as replicas would."""
    return "memory" if workers == 1 else "redis"


@dataclass(frozen=True)
class _EdgeConfig:
    """What every edge of a path shares."""

    state_dir: Path
    keys_file: Path
    routes_file: Path
    workers: int
    redis_url: str | None
    settings: dict[str, str]


async def _start_edge(procs: Processes, label: str, config: _EdgeConfig) -> tuple[Proc, str]:
    """An edge, ready, and its URL."""
    settings = dict(config.settings)
    if config.workers > 1:
        # Where the workers share their metrics (the edge would make a temporary one).
        metrics_dir = config.state_dir / f"{label}-metrics"
        metrics_dir.mkdir(exist_ok=True)
        settings["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    port = free_port()
    env = edge_env(
        HOST,
        port,
        config.keys_file,
        config.routes_file,
        workers=config.workers,
        redis_url=config.redis_url,
        extra=settings,
    )
    edge = await procs.start_python(label, edge_args(), env)
    url = f"http://{HOST}:{port}"
    await wait_ready(edge, http_ok(f"{url}/readyz"))
    return edge, url


@contextlib.asynccontextmanager
async def switchyard(
    sims: Mapping[str, Sim], state_dir: Path, workers: int, *, cache: bool = False
) -> AsyncIterator[Deployment]:
    """The edge with `workers` uvicorn workers in front of one vLLM adapter per simulator
    (and, with `cache`, a second one with its response cache on: `cache_target`s)."""
    started = asyncio.get_running_loop().time()
    name = f"switchyard-{workers}w"
    notes: list[str] = []
    procs = Processes(state_dir)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(procs.stop_all)
        adapters, routes_file = await _start_adapters(procs, sims, name, state_dir)
        key, keys_file = _write_keys(state_dir)
        settings = {
            "EDGE_LOG_LEVEL": "WARNING",
            "EDGE_MAX_IN_FLIGHT": str(_CAPACITY),
            "EDGE_MAX_IN_FLIGHT_PER_MODEL": str(_CAPACITY),
            "EDGE_MAX_QUEUE": str(_CAPACITY),
            "EDGE_METRICS_PORT": "0",  # not read by the bench (and 9090 may be taken)
        }
        redis_url = None
        if workers > 1:
            redis_url, note = await stack.enter_async_context(redis_server(procs))
            notes += [note] if note else []
        config = _EdgeConfig(state_dir, keys_file, routes_file, workers, redis_url, settings)
        edge, url = await _start_edge(procs, f"{name}-edge", config)
        startup_s = asyncio.get_running_loop().time() - started
        targets = {k: Target(url, model_name(k), key) for k in sims}
        roles = {
            k: [Role("edge", (edge.pid,)), Role("adapter", (a.pid,))] for k, a in adapters.items()
        }
        if cache:
            # Its own process, so that no other scenario pays for (or is answered by) a cache.
            mode = cache_mode(workers)
            config = replace(config, settings=settings | {"EDGE_CACHE": mode})
            cached, cached_url = await _start_edge(procs, f"{name}-cache-edge", config)
            notes.append(f"cache scenarios: a second edge with EDGE_CACHE={mode}")
            for k, a in adapters.items():
                targets[cache_target(k)] = Target(cached_url, model_name(k), key)
                roles[cache_target(k)] = [Role("edge", (cached.pid,)), Role("adapter", (a.pid,))]
        yield Deployment(name, targets, roles, notes=notes, startup_s=startup_s)


@contextlib.asynccontextmanager
async def litellm_proxy(
    sims: Mapping[str, Sim], state_dir: Path, venv: Path
) -> AsyncIterator[Deployment]:
    """LiteLLM's proxy in front of every simulator (its virtualenv must exist)."""
    started = asyncio.get_running_loop().time()
    config = state_dir / "litellm.yaml"
    embeddings = {model_name(k) for k in sims if SIMS[k].embedding}
    litellm.write_config(config, {model_name(k): s.url for k, s in sims.items()}, embeddings)
    port = free_port()
    procs = Processes(state_dir)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(procs.stop_all)
        proxy = await procs.start("litellm", litellm.argv(venv, config, port), litellm.env())
        url = f"http://{HOST}:{port}"
        await wait_ready(proxy, http_ok(f"{url}/health/readiness"), timeout_s=180)
        yield Deployment(
            name="litellm",
            targets={k: Target(url, model_name(k), litellm.MASTER_KEY) for k in sims},
            roles={k: [Role("proxy", (proxy.pid,))] for k in sims},
            startup_s=asyncio.get_running_loop().time() - started,
        )


#: The simulators the bare relay serves: those of the unary and stream scenarios (the
#: ratios to the floor).
BARE_SIMS: Final = ("zero", "stream")


@contextlib.asynccontextmanager
async def bare(sims: Mapping[str, Sim], state_dir: Path) -> AsyncIterator[Deployment]:
    """The bare relay (`switchyard.bench.bare`) in front of the unary and stream simulators."""
    started = asyncio.get_running_loop().time()
    procs = Processes(state_dir)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(procs.stop_all)
        targets: dict[str, Target] = {}
        roles: dict[str, list[Role]] = {}
        for kind in BARE_SIMS:
            sim = sims.get(kind)
            if sim is None:
                continue
            adapter_port, edge_port = free_port(), free_port()
            module = "switchyard.bench.bare"
            adapter = await procs.start_python(
                f"bare-adapter-{kind}",
                [module, "adapter", "--port", str(adapter_port), "--engine", sim.url],
            )
            edge = await procs.start_python(
                f"bare-edge-{kind}",
                [module, "edge", "--port", str(edge_port), "--adapter", f"{HOST}:{adapter_port}"],
            )
            url = f"http://{HOST}:{edge_port}"
            await wait_ready(edge, http_ok(f"{url}/health"))
            targets[kind] = Target(url, model_name(kind))
            roles[kind] = [Role("edge", (edge.pid,)), Role("adapter", (adapter.pid,))]
        yield Deployment(
            name="bare",
            targets=targets,
            roles=roles,
            startup_s=asyncio.get_running_loop().time() - started,
            unserved="the bare relay runs the unary and stream scenarios only",
        )
