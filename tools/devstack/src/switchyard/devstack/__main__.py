"""`python -m switchyard.devstack` (what `make run` runs): the whole stack, in the foreground.

A simulator for every engine in the registry (vLLM, SGLang, TGI), an adapter in front of
each, and the edge serving `demo-<engine>` for each; and an embedding model on each engine
that serves embeddings (`demo-embed` on vLLM, `demo-embed-sglang`), its own simulator and
adapter; all with a local API key. Ctrl-C stops all.
`--edges 3` runs three edge processes sharing rate limits through a local redis-server.

Only the edge's port is the user's. Everything else listens where the OS says is free
(simulators and adapters on port 0, redis on a private unix socket), so a port already
taken on this machine (3000 is Grafana's, 8000 many dev servers') never stops the stack
and never wires its adapters to someone else's server.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import uvloop

from switchyard.devstack.components import (
    ADAPTER_LISTENING,
    EMBEDDING_MODELS,
    SIM_LISTENING,
    adapter_args,
    adapter_env,
    demo_models,
    edge_args,
    edge_env,
    free_port,
    port_in_use,
    redis_args,
    sim_args,
    write_model_routes,
    write_private,
)
from switchyard.devstack.supervisor import Supervisor, grpc_serving, http_ok, redis_ping
from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.atomic import write_atomic
from switchyard.edge.auth.keysfile import KeyEntry, render_keys

HOST = "127.0.0.1"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m switchyard.devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--edge-port", type=int, default=8080, help="first edge port (default 8080)"
    )
    parser.add_argument(
        "--edges", type=int, default=1, help="edge processes (more than one starts redis)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers per edge (more than one starts redis)",
    )
    parser.add_argument(
        "--ttft", type=float, default=0.05, help="simulated time to first token, seconds"
    )
    parser.add_argument(
        "--itl", type=float, default=0.02, help="simulated inter-token latency, seconds"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=Path(".devstack"), help="keys, routes (default .devstack)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not relay the processes' logs")
    return parser


def dev_key(state_dir: Path) -> tuple[str, Path]:
    """The local key (created once, kept in the state dir) and the keys file holding its hash."""
    key_path, keys_file = state_dir / "dev-key", state_dir / "keys.yaml"
    key = key_path.read_text().strip() if key_path.exists() else ""
    if not key:
        key = generate_key()
        write_private(key_path, key + "\n")
    entry = KeyEntry(
        name="dev", tenant="local", sha256=hash_key(key), models=["*"], rpm=600, tpm=2_000_000
    )
    write_atomic(keys_file, render_keys([entry]))
    return key, keys_file


def banner(key: str, edge_urls: list[str], inside: list[tuple[str, str]]) -> str:
    url = edge_urls[0]
    width = max(len(name) for name, _ in inside)
    where = "\n".join(f"    {name.ljust(width)}  {address}" for name, address in inside)
    models = ", ".join(model.name for model in demo_models())
    embed = EMBEDDING_MODELS["vllm"]
    return f"""
Switchyard is up: {", ".join(edge_urls)}   models: {models}

  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo-vllm", "messages": [{{"role": "user", "content": "Hello!"}}], "stream": true}}'

  Tools (the demo models call one when the last message is the user's, then answer its result):
  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo-tgi", "messages": [{{"role": "user", "content": "Weather in Paris?"}}],
         "tools": [{{"type": "function", "function": {{"name": "get_weather", "parameters":
           {{"type": "object", "properties": {{"city": {{"type": "string"}}}}, "required": ["city"]}}}}}}]}}'

  Embeddings (vectors may be shortened with "dimensions"):
  curl {url}/v1/embeddings \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "{embed}", "input": ["Hello!", "Hi there!"], "dimensions": 64}}'

  OpenAI's Responses API and Anthropic's Messages API, with the same key:
  curl {url}/v1/responses \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo-vllm", "input": "Hello!"}}'
  curl {url}/v1/messages \\
    -H "x-api-key: {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo-tgi", "max_tokens": 64, "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python - <<'EOF'
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{key}")
  reply = client.chat.completions.create(model="demo-sglang", messages=[{{"role": "user", "content": "Hello!"}}])
  print(reply.choices[0].message.reasoning_content, "->", reply.choices[0].message.content)
  weather = {{"type": "function", "function": {{"name": "get_weather", "parameters": {{"type": "object", "properties": {{"city": {{"type": "string"}}}}}}}}}}
  reply = client.chat.completions.create(model="demo-vllm", messages=[{{"role": "user", "content": "Weather in Paris?"}}], tools=[weather])
  print(reply.choices[0].message.tool_calls)
  vectors = client.embeddings.create(model="{embed}", input=["Hello!", "Hi there!"], dimensions=64)
  print(len(vectors.data), "vectors of", len(vectors.data[0].embedding))
  first = client.responses.create(model="demo-vllm", input="Hello!")
  later = client.responses.create(model="demo-vllm", input="And again?", previous_response_id=first.id)
  print(later.output_text, later.usage.input_tokens, "tokens read")
  from anthropic import Anthropic
  claude = Anthropic(base_url="{url}", api_key="{key}")
  message = claude.messages.create(model="demo-tgi", max_tokens=64, messages=[{{"role": "user", "content": "Hello!"}}])
  print(message.content[0].text, message.stop_reason)
  EOF

  API docs: {url}/docs
  Inside, on free ports (new each run):
{where}
  Ctrl-C stops everything.
"""


async def start_edge(
    supervisor: Supervisor, name: str, port: int, env: dict[str, str], attempts: int = 3
) -> str:
    """Start an edge on `port` (the user's) and its metrics on a free port; its metrics URL.

    The edge has no "any free port" for its metrics (0 turns them off), so the port is
    picked here and may be taken in the moment before the edge binds it: then the edge
    exits at once, and another free port is tried.
    """
    for attempt in range(1, attempts + 1):
        metrics_port = free_port(HOST)
        extra = {"EDGE_METRICS_PORT": str(metrics_port), "EDGE_DOCS": "true"}
        edge = await supervisor.start_python(name, edge_args(), {**env, **extra})
        try:
            await supervisor.wait_ready(edge, http_ok(f"http://{HOST}:{port}/readyz"))
            return f"http://{HOST}:{metrics_port}/metrics"
        except RuntimeError:
            exited = edge.process is not None and edge.process.returncode is not None
            raced = port_in_use(HOST, metrics_port) and not port_in_use(HOST, port)
            if attempt == attempts or not (exited and raced):
                raise
        await supervisor.discard(edge)
        print(f"devstack: {name}'s metrics port was taken meanwhile; trying another", flush=True)
    raise RuntimeError(f"{name} could not start")  # not reached: the last attempt raises


def taken_edge_ports(edge_port: int, edges: int) -> list[int]:
    return [p for p in range(edge_port, edge_port + edges) if port_in_use(HOST, p)]


async def run(args: argparse.Namespace, key: str, keys_file: Path) -> int:
    state_dir: Path = args.state_dir
    # The edge's port is the one the user asked for: check it before starting anything, so
    # a taken one is a clear message now, not a half-started stack.
    taken = taken_edge_ports(args.edge_port, args.edges)
    if taken:
        where = ", ".join(f"{HOST}:{p}" for p in taken)
        print(
            f"devstack: the edge's port is already in use: {where}. Stop what listens there, "
            f"or choose another: make run RUN_ARGS='--edge-port {args.edge_port + 100}'",
            file=sys.stderr,
        )
        return 1
    supervisor = Supervisor(quiet=args.quiet)
    models = demo_models(args.ttft, args.itl)
    shared_limits = args.edges > 1 or args.workers > 1
    # Short and private: a unix socket path must stay under ~100 bytes.
    sockets_dir = Path(tempfile.mkdtemp(prefix="switchyard-devstack-"))
    inside: list[tuple[str, str]] = []
    try:
        redis_url: str | None = None
        if shared_limits:
            server = shutil.which("redis-server")
            if server is None:
                print(
                    "--edges/--workers > 1 needs redis-server: run `make system-deps`",
                    file=sys.stderr,
                )
                return 2
            socket_path = sockets_dir / "redis.sock"
            redis = await supervisor.start("redis", redis_args(server, socket_path))
            await supervisor.wait_ready(redis, redis_ping(socket_path))
            redis_url = f"unix://{socket_path}"
            inside.append(("redis", str(socket_path)))

        sims = {
            m.name: await supervisor.start_python(
                f"sim-{m.component}",
                sim_args(m.engine, HOST, 0, m.name, m.options),
                listening=SIM_LISTENING,
            )
            for m in models
        }
        sim_urls = {}
        for m in models:
            sim_urls[m.name] = f"http://{HOST}:{await supervisor.port_of(sims[m.name])}"
            await supervisor.wait_ready(sims[m.name], http_ok(f"{sim_urls[m.name]}/health"))
            inside.append((f"sim-{m.component}", sim_urls[m.name]))

        adapters = {
            m.name: await supervisor.start_python(
                f"adapter-{m.component}",
                adapter_args(m.engine),
                adapter_env(m.engine, sim_urls[m.name], HOST, 0, model=m.name),
                listening=ADAPTER_LISTENING,
            )
            for m in models
        }
        routes: dict[str, tuple[str, list[str]]] = {}
        for m in models:
            address = f"{HOST}:{await supervisor.port_of(adapters[m.name])}"
            await supervisor.wait_ready(adapters[m.name], grpc_serving(address))
            routes[m.name] = (m.engine, [address])
            inside.append((f"adapter-{m.component}", address))
        routes_file = state_dir / "routes.yaml"
        write_model_routes(routes_file, routes)

        edge_urls = []
        for i in range(args.edges):
            name = "edge" if args.edges == 1 else f"edge-{i + 1}"
            port = args.edge_port + i
            env = edge_env(
                HOST, port, keys_file, routes_file, workers=args.workers, redis_url=redis_url
            )
            metrics_url = await start_edge(supervisor, name, port, env)
            edge_urls.append(f"http://{HOST}:{port}")
            inside.append((f"{name} metrics", metrics_url))

        print(banner(key, edge_urls, inside), flush=True)
        print(await supervisor.watch(), flush=True)
        return 0
    except RuntimeError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    finally:
        await supervisor.stop_all()
        shutil.rmtree(sockets_dir, ignore_errors=True)


def main() -> int:
    args = _parser().parse_args()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    key, keys_file = dev_key(args.state_dir)
    return uvloop.run(run(args, key, keys_file))


if __name__ == "__main__":
    sys.exit(main())
