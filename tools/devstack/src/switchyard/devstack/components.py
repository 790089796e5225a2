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

from switchyard.engines import (
    NAMES,
    SIM_EMBEDDING_DIMENSIONS_FLAG,
    SIM_MULTIMODAL_FLAG,
    Serving,
    engine_kind,
)

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
    #: Started as an embedding model (vLLM's pooling runner, SGLang's `--is-embedding`): it
    #: serves embeddings and no chat or completions. TGI serves none (it refuses).
    embedding: bool = False
    #: The embedding model's vectors may be shortened (`dimensions`): any size, or only
    #: `matryoshka_dimensions` when given (set in the model's config, as the engines read it).
    matryoshka: bool = False
    matryoshka_dimensions: tuple[int, ...] = ()
    #: The embedding model's vector size (its hidden size; a simulator-only flag).
    embedding_dimensions: int = 384


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
        embedding=opts.embedding,
        matryoshka=opts.matryoshka,
        matryoshka_dimensions=opts.matryoshka_dimensions,
    )
    sim = [
        "--sim-ttft", str(opts.ttft_s),
        "--sim-itl", str(opts.itl_s),
        "--sim-load-delay", str(opts.load_delay_s),
    ]  # fmt: skip
    if opts.images:
        sim.append(SIM_MULTIMODAL_FLAG)
    if opts.embedding:
        sim += [SIM_EMBEDDING_DIMENSIONS_FLAG, str(opts.embedding_dimensions)]
    return [*kind.simulator, *kind.flags(serving), *sim]


@dataclass(frozen=True)
class DemoModel:
    """One model `make run` serves, from its own simulator with its adapter in front."""

    name: str
    engine: str
    options: EngineOptions

    @property
    def component(self) -> str:
        """What its simulator and adapter are called: `sim-<this>`, `adapter-<this>`."""
        return self.name.removeprefix("demo-")


#: The embedding models `make run` serves, by engine: every engine that serves embeddings.
EMBEDDING_MODELS: Mapping[str, str] = {"vllm": "demo-embed", "sglang": "demo-embed-sglang"}


def demo_models(ttft_s: float = 0.05, itl_s: float = 0.02) -> list[DemoModel]:
    """What `make run` serves: `demo-<engine>` on every engine, with tools, images and
    reasoning where the engine has them; and the embedding models, whose vectors may be
    shortened (`dimensions`)."""
    chat = EngineOptions(ttft_s=ttft_s, itl_s=itl_s, tools=True, reasoning=True, images=True)
    embed = EngineOptions(ttft_s=ttft_s, itl_s=itl_s, embedding=True, matryoshka=True)
    return [
        *(DemoModel(served_name(engine), engine, chat) for engine in ENGINES),
        *(DemoModel(name, engine, embed) for engine, name in EMBEDDING_MODELS.items()),
    ]


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
    model: str | None = None,
) -> dict[str, str]:
    """The adapter's environment; it serves `model` (default: `demo-<engine>`)."""
    return {
        "ADAPTER_ENGINE_URL": engine_url,
        "ADAPTER_SERVED_MODEL_NAME": model or served_name(engine),
        "ADAPTER_HOST": host,
        "ADAPTER_PORT": str(port),
        "ADAPTER_METRICS_PORT": str(metrics_port),
        # The drain delay waits for routers that have not yet seen NOT_SERVING; here the
        # whole stack stops together, so it would only hold up Ctrl-C.
        "ADAPTER_DRAIN_DELAY_S": "0",
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
    write_model_routes(
        path, {served_name(engine): (engine, addresses) for engine, addresses in endpoints.items()}
    )


def write_model_routes(path: Path, routes: Mapping[str, tuple[str, Sequence[str]]]) -> None:
    """A routes file serving each model name from its engine's adapter addresses."""
    models = [
        {"name": name, "engine": engine, "endpoints": list(addresses)}
        for name, (engine, addresses) in routes.items()
    ]
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
