"""How each process of the local stack is started: the one place that knows the command lines.

The simulators take their engine's own flags, from the engine registry (`switchyard.engines`)
as the operator's engines do; the adapters and the edge are configured by environment.
`make run` and the test suite both start processes from here.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from switchyard.engines import NAMES, SIM_MULTIMODAL_FLAG, Serving, engine_kind

#: The engines the stack runs, one simulator and one adapter each: every engine there is.
ENGINES = NAMES
#: What the simulators say they serve (they load nothing).
SIM_MODEL = "switchyard/sim-1b-instruct"


#: The parsers the simulators run when asked for tools or reasoning: each engine's own name
#: for the format of the model the simulators stand in for (a Qwen-style instruct model).
#: TGI has neither: it always serves tools, and has no reasoning parser.
TOOL_CALL_PARSERS: Mapping[str, str] = {"vllm": "hermes", "sglang": "qwen"}
REASONING_PARSERS: Mapping[str, str] = {"vllm": "qwen3", "sglang": "qwen3"}


def served_name(engine: str) -> str:
    return f"demo-{engine}"


# Started on port 0, a process binds a port the OS picks, free by construction (no "find a
# free port, then start" race), and names it in one line of its output:
#: a simulator: "<name> listening on http://127.0.0.1:40123" (any engine);
SIM_LISTENING = re.compile(r"listening on http://[^\s/]*:(\d+)")
#: an adapter: its `adapter_started` log line, JSON or console, with address=host:port.
ADAPTER_LISTENING = re.compile(r"^(?=.*adapter_started).*?\baddress\W+[^\s\"']*:(\d+)")


def free_port(host: str) -> int:
    """A port free now (the OS's pick); someone may take it before it is used."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something holds it (bound as uvicorn
    binds, with SO_REUSEADDR, so a port merely in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


@dataclass(frozen=True)
class EngineOptions:
    """A simulator's set-up; the same meaning for every engine."""

    max_model_len: int = 4096
    #: Requests generating at once, then a queue.
    max_running: int | None = None
    #: Requests that may wait; past that the engine refuses (TGI: running + waiting).
    max_queued: int | None = None
    ttft_s: float = 0.02
    itl_s: float = 0.01
    load_delay_s: float = 0.0
    #: Tool calls parsed (and `tool_choice: auto` served) where the engine needs a parser.
    tools: bool = False
    #: Reasoning kept apart from the answer, on the engines that have a reasoning parser.
    reasoning: bool = False
    #: The model takes images.
    images: bool = False


def sim_args(
    engine: str, host: str, port: int, served_model_name: str, opts: EngineOptions
) -> list[str]:
    """`python -m` arguments of `engine`'s simulator."""
    kind = engine_kind(engine)
    serving = Serving(
        model=SIM_MODEL,
        host=host,
        port=port,
        served_name=served_model_name,
        max_model_len=opts.max_model_len,
        max_running=opts.max_running,
        max_queued=opts.max_queued,
        # The demo models then behave alike under a seed, on every engine.
        seeded=True,
        tool_call_parser=TOOL_CALL_PARSERS.get(engine) if opts.tools else None,
        reasoning_parser=REASONING_PARSERS.get(engine) if opts.reasoning else None,
    )
    sim = [
        "--sim-ttft", str(opts.ttft_s),
        "--sim-itl", str(opts.itl_s),
        "--sim-load-delay", str(opts.load_delay_s),
    ]  # fmt: skip
    if opts.images:
        sim.append(SIM_MULTIMODAL_FLAG)
    return [*kind.simulator, *kind.flags(serving), *sim]


def adapter_args(engine: str) -> list[str]:
    return [engine_kind(engine).adapter_module]


def adapter_env(
    engine: str,
    engine_url: str,
    host: str,
    port: int,
    *,
    metrics_port: int = 0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    return {
        "ADAPTER_ENGINE_URL": engine_url,
        "ADAPTER_SERVED_MODEL_NAME": served_name(engine),
        "ADAPTER_HOST": host,
        "ADAPTER_PORT": str(port),
        "ADAPTER_METRICS_PORT": str(metrics_port),
        **(extra or {}),
    }


def redis_args(server: str, socket_path: Path) -> list[str]:
    """A throwaway redis-server on a private unix socket: no TCP port to collide with, no
    persistence."""
    return [
        server,
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip


def edge_args() -> list[str]:
    return ["switchyard.edge"]


def edge_env(
    host: str,
    port: int,
    keys_file: Path,
    routes_file: Path,
    *,
    workers: int = 1,
    redis_url: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    env = {
        "EDGE_HOST": host,
        "EDGE_PORT": str(port),
        "EDGE_KEYS_FILE": str(keys_file),
        "EDGE_ROUTES_FILE": str(routes_file),
        "EDGE_WORKERS": str(workers),
    }
    if redis_url:
        env |= {"EDGE_RATE_LIMIT_BACKEND": "redis", "EDGE_REDIS_URL": redis_url}
    return env | dict(extra or {})


def write_routes(path: Path, endpoints: Mapping[str, Sequence[str]]) -> None:
    """A routes file serving `demo-<engine>` from the given adapter addresses."""
    models = [
        {"name": served_name(engine), "engine": engine, "endpoints": list(addresses)}
        for engine, addresses in endpoints.items()
    ]
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
