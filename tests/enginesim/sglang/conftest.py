"""In-process SGLang simulators: through httpx's ASGI transport, or a real uvicorn server
(in this event loop) where a test needs a real connection to drop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette

from switchyard.enginesim.sglang.engine import Engine
from switchyard.enginesim.sglang.flags import parse
from switchyard.enginesim.sglang.routes import create_app
from tests.support.polling import eventually

MODEL = "demo"
BASE = ("--model-path", "org/sim-model", "--served-model-name", MODEL, "--context-length", "1024")
FAST = ("--sim-ttft", "0", "--sim-itl", "0")
#: Slow enough that a request is still running while a test looks at it.
SLOW = ("--sim-ttft", "0.05", "--sim-itl", "0.05")
#: Seeds count only in SGLang's deterministic mode: tests that compare seeded outputs use it.
DETERMINISTIC = ("--enable-deterministic-inference",)

MakeApp = Callable[..., Starlette]


def make_app(*extra: str) -> Starlette:
    """A simulator with extra flags (fast unless they say otherwise). The abort after a
    stream's end comes at once unless they say otherwise: httpx's ASGI transport answers
    only once the app has returned, background task included."""
    latency = () if any(flag.startswith("--sim-itl") for flag in extra) else FAST
    delay = () if "--sim-abort-delay" in extra else ("--sim-abort-delay", "0")
    return create_app(parse([*BASE, *latency, *delay, *extra]))


def engine_of(app: Starlette) -> Engine:
    engine: Engine = app.state.engine
    return engine


def asgi(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sglang")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi(make_app("--enable-metrics", *DETERMINISTIC)) as c:
        yield c


@contextlib.asynccontextmanager
async def live(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` on a loopback port the OS picks, from this event loop; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, what="the server started")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def events(body: str) -> list[Any]:
    """The JSON of each SSE event, checking SGLang's framing and the `[DONE]` terminator."""
    frames = body.split("\n\n")
    assert frames[-1] == "", "the stream ends with a blank line"
    assert frames[-2] == "data: [DONE]", "the stream ends with [DONE]"
    out: list[Any] = []
    for frame in frames[:-2]:
        assert frame.startswith("data: "), frame
        out.append(orjson.loads(frame.removeprefix("data: ")))
    return out
