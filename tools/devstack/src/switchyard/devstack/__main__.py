"""`python -m switchyard.devstack` (what `make run` runs): the whole stack, in the foreground.

Three engine simulators (vLLM, SGLang, TGI), an adapter in front of each, and the edge
serving `demo-vllm`, `demo-sglang` and `demo-tgi`, with a local API key. Ctrl-C stops all.
`--edges 3` runs three edge processes sharing rate limits through a local redis-server.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import uvloop

from switchyard.devstack.components import (
    ENGINES,
    EngineOptions,
    adapter_args,
    adapter_env,
    edge_args,
    edge_env,
    served_name,
    sim_args,
    write_private,
    write_routes,
)
from switchyard.devstack.supervisor import Supervisor, grpc_serving, http_ok, redis_ping
from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.atomic import write_atomic
from switchyard.edge.auth.keysfile import KeyEntry, render_keys

HOST = "127.0.0.1"
SIM_PORTS = {"vllm": 8000, "sglang": 30000, "tgi": 3000}  # each engine's own default port


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
        "--redis-port", type=int, default=6379, help="port of the local redis-server, when used"
    )
    parser.add_argument(
        "--adapter-port", type=int, default=50051, help="first adapter port (default 50051)"
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


def banner(key: str, edge_urls: list[str]) -> str:
    url = edge_urls[0]
    models = ", ".join(served_name(e) for e in ENGINES)
    return f"""
Switchyard is up: {", ".join(edge_urls)}   models: {models}

  curl {url}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo-vllm", "messages": [{{"role": "user", "content": "Hello!"}}], "stream": true}}'

  python - <<'EOF'
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="{key}")
  reply = client.chat.completions.create(model="demo-sglang", messages=[{{"role": "user", "content": "Hello!"}}])
  print(reply.choices[0].message.content)
  EOF

  API docs: {url}/docs   metrics: {url}/metrics   Ctrl-C stops everything.
"""


async def run(args: argparse.Namespace, key: str, keys_file: Path) -> int:
    state_dir: Path = args.state_dir
    supervisor = Supervisor(quiet=args.quiet)
    opts = EngineOptions(ttft_s=args.ttft, itl_s=args.itl)
    shared_limits = args.edges > 1 or args.workers > 1
    redis_url = f"redis://{HOST}:{args.redis_port}/0" if shared_limits else None
    try:
        if redis_url:
            server = shutil.which("redis-server")
            if server is None:
                print(
                    "--edges/--workers > 1 needs redis-server: run `make system-deps`",
                    file=sys.stderr,
                )
                return 2
            redis = await supervisor.start(
                "redis",
                [
                    server,
                    "--port",
                    str(args.redis_port),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            )
            await supervisor.wait_ready(redis, redis_ping(HOST, args.redis_port))

        sims = {
            e: await supervisor.start_python(
                f"sim-{e}", sim_args(e, HOST, SIM_PORTS[e], served_name(e), opts)
            )
            for e in ENGINES
        }
        for engine, sim in sims.items():
            await supervisor.wait_ready(sim, http_ok(f"http://{HOST}:{SIM_PORTS[engine]}/health"))

        endpoints: dict[str, list[str]] = {}
        for i, engine in enumerate(ENGINES):
            port = args.adapter_port + i
            env = adapter_env(engine, f"http://{HOST}:{SIM_PORTS[engine]}", HOST, port)
            adapter = await supervisor.start_python(f"adapter-{engine}", adapter_args(engine), env)
            await supervisor.wait_ready(adapter, grpc_serving(f"{HOST}:{port}"))
            endpoints[engine] = [f"{HOST}:{port}"]
        routes_file = state_dir / "routes.yaml"
        write_routes(routes_file, endpoints)

        edge_urls = []
        for i in range(args.edges):
            port = args.edge_port + i
            env = edge_env(
                HOST, port, keys_file, routes_file, workers=args.workers, redis_url=redis_url
            )
            name = "edge" if args.edges == 1 else f"edge-{i + 1}"
            edge = await supervisor.start_python(name, edge_args(), env)
            await supervisor.wait_ready(edge, http_ok(f"http://{HOST}:{port}/readyz"))
            edge_urls.append(f"http://{HOST}:{port}")

        print(banner(key, edge_urls), flush=True)
        print(await supervisor.watch(), flush=True)
        return 0
    except RuntimeError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1
    finally:
        await supervisor.stop_all()


def main() -> int:
    args = _parser().parse_args()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    key, keys_file = dev_key(args.state_dir)
    return uvloop.run(run(args, key, keys_file))


if __name__ == "__main__":
    sys.exit(main())
