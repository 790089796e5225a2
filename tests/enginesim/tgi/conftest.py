"""Simulated TGI routers for the tests: in-process (ASGI) and, where it matters, a real process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from switchyard.devstack.components import SIM_LISTENING
from switchyard.enginesim.tgi.engine import Engine
from switchyard.enginesim.tgi.flags import parse
from switchyard.enginesim.tgi.routes import create_app
from tests.support.processes import Service, free_port, listening_port, start, wait_http

MODEL = "switchyard/sim-1b-instruct"
BASE_ARGS = (
    "--model-id", MODEL, "--hostname", "127.0.0.1",
    "--max-input-tokens", "200", "--max-total-tokens", "256",
    "--max-concurrent-requests", "8",
    "--sim-ttft", "0", "--sim-itl", "0", "--sim-keep-alive", "0.05",
)  # fmt: skip


def make_app(*extra: str) -> Starlette:
    return create_app(parse([*BASE_ARGS, *extra]))


def engine_of(app: Starlette) -> Engine:
    engine: Engine = app.state.engine
    return engine


def asgi_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tgi")


@pytest.fixture
def app() -> Starlette:
    return make_app()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


def sse_data(body: str) -> list[str]:
    """The `data` payloads of an SSE body, asserting TGI's framing (no space after `data:`)."""
    out = []
    for block in body.split("\n\n"):
        if not block or block.startswith(":"):
            continue
        assert block.startswith("data:"), block
        assert not block.startswith("data: "), f"TGI writes no space after data: {block!r}"
        out.append(block[len("data:") :])
    return out


def sse_json(body: str) -> list[Any]:
    return [orjson.loads(d) for d in sse_data(body) if d != "[DONE]"]


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start `python -m switchyard.enginesim.tgi` processes; they are stopped after the test."""
    services: list[Service] = []

    def _start(*extra: str, wait: bool = True) -> Service:
        # Waited for: on a port the OS picks. Not: on a port known before it listens (a
        # test of a closed port while loading).
        port = 0 if wait else free_port()
        args = ["switchyard.enginesim.tgi", *BASE_ARGS, "--port", str(port), *extra]
        service = start(f"tgi-{len(services)}", args, tmp_path, port=port)
        services.append(service)
        if wait:
            port = listening_port(service, SIM_LISTENING)
            wait_http(service, f"http://127.0.0.1:{port}/health")
        return service

    yield _start
    for service in services:
        service.stop()
