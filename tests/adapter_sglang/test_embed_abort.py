"""An embedding call the caller leaves is aborted in SGLang rid by rid.

SGLang runs a batch's inputs as requests of their own, one rid each, and its tokenizer
manager forwards an `/abort_request` only for a rid it holds (no prefix match with one
tokenizer worker), so the adapter names every rid of the call. The engine here is a small
HTTP server in SGLang's shape that holds the embedding call until the test ends and records
the aborts (the simulator does not hold embedding calls yet; the contract suite checks the
same with it for vLLM).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import AnyHttpUrl

from switchyard.adapter.engine import EngineClient
from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter_sglang.translation import SglangTranslation
from tests.support.embeddings import embed_request
from tests.support.polling import eventually

MODEL = "bge"


@dataclass
class HoldingEngine:
    """Holds `/v1/embeddings` until `release`; records its bodies and the aborted rids."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def embeddings(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        await self.release.wait()
        return web.json_response({"object": "error", "message": "released"}, status=503)

    async def abort(self, request: web.Request) -> web.Response:
        self.aborted.append((await request.json())["rid"])
        return web.Response()


@asynccontextmanager
async def holding_engine() -> AsyncIterator[tuple[HoldingEngine, EngineClient]]:
    engine = HoldingEngine()
    app = web.Application()
    app.router.add_post("/v1/embeddings", engine.embeddings)
    app.router.add_post("/abort_request", engine.abort)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    settings = AdapterSettings(
        engine_url=AnyHttpUrl(f"http://{host}:{port}"), served_model_name=MODEL
    )
    client = EngineClient(settings, SglangTranslation(MODEL))
    try:
        yield engine, client
    finally:
        engine.release.set()
        await client.aclose()
        await runner.cleanup()


async def test_leaving_an_embedding_call_aborts_each_of_its_rids() -> None:
    async with holding_engine() as (engine, client):
        call = asyncio.create_task(client.embed(embed_request(MODEL, "a", "b", "c")))
        await eventually(lambda: bool(engine.bodies), what="the call at the engine")
        call.cancel()
        (body,) = engine.bodies
        rids = body["rid"]
        assert len(rids) == len(set(rids)) == 3

        def all_aborted() -> bool:
            return sorted(engine.aborted) == sorted(rids)

        await eventually(all_aborted, what="every rid aborted")
        assert call.cancelled()


async def test_a_call_that_ends_is_not_aborted() -> None:
    """A refused (finished) call is the engine's business: nothing to abort."""
    async with holding_engine() as (engine, client):
        engine.release.set()
        call = asyncio.create_task(client.embed(embed_request(MODEL, "a", "b")))
        await asyncio.wait([call])
        assert call.exception() is not None  # the engine's 503
        assert engine.aborted == []
