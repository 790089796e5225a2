"""An in-process vLLM simulator per test, reached through httpx's ASGI transport."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import httpx2
import openai
import orjson
import pytest
from PIL import Image

from switchyard.enginesim.vllm.engine import Engine
from switchyard.enginesim.vllm.flags import parse
from switchyard.enginesim.vllm.routes import create_app

MODEL = "demo"
FAST = ("--sim-ttft", "0", "--sim-itl", "0")

Factory = Callable[..., Awaitable[tuple[httpx.AsyncClient, Engine]]]


def argv(*extra: str) -> list[str]:
    return [
        "serve",
        "org/sim-model",
        "--served-model-name",
        MODEL,
        "--max-model-len",
        "1024",
        *extra,
    ]


@pytest.fixture
async def simulator() -> AsyncIterator[Factory]:
    """Start a simulator with extra flags (fast by default); closed after the test."""
    clients: list[httpx.AsyncClient] = []

    async def make(*extra: str) -> tuple[httpx.AsyncClient, Engine]:
        # No environment: a VLLM_API_KEY in the caller's would guard every test's routes.
        app = create_app(parse(argv(*(extra or FAST)), environ={}))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")
        clients.append(client)
        return client, app.state.engine

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(simulator: Factory) -> httpx.AsyncClient:
    c, _ = await simulator()
    return c


def events(body: str) -> list[Any]:
    """The data of each SSE event, checking vLLM's exact framing on the way."""
    assert body.endswith("data: [DONE]\n\n")
    frames = body.split("\n\n")
    assert frames[-1] == ""
    out: list[Any] = []
    for frame in frames[:-1]:
        assert frame.startswith("data: "), frame
        payload = frame.removeprefix("data: ")
        out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    assert out[-1] == "[DONE]"
    return out[:-1]


def piece(chunk: dict[str, Any]) -> str:
    """The text a chunk adds (completions `text`, chat `delta.content`)."""
    choice = chunk["choices"][0]
    if "text" in choice:
        return str(choice["text"])
    return str(choice["delta"].get("content") or "")


SdkFactory = Callable[..., Awaitable[openai.AsyncOpenAI]]


@pytest.fixture
async def sdk() -> AsyncIterator[SdkFactory]:
    """The official SDK (no retries) on an in-process simulator started with extra flags."""
    clients: list[httpx2.AsyncClient] = []

    async def make(*extra: str) -> openai.AsyncOpenAI:
        app = create_app(parse(argv(*(extra or FAST)), environ={}))
        # The SDK's own HTTP client library, on the app in process.
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
        clients.append(http)
        return openai.AsyncOpenAI(
            base_url="http://sim/v1", api_key="unused", http_client=http, max_retries=0
        )

    yield make
    for client in clients:
        await client.aclose()


def image_url(width: int, height: int) -> str:
    """A PNG of that size, as a data URL."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(out, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}"
