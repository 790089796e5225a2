"""The simulated router as one Starlette app: routes, `--api-key`, the metrics listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from switchyard.enginesim.cli import SimOptions
from switchyard.enginesim.faults import faults_route
from switchyard.enginesim.stats import SimStats, stats_route
from switchyard.enginesim.tgi import prometheus_port
from switchyard.enginesim.tgi.chat import ChatRoutes
from switchyard.enginesim.tgi.completions import CompletionRoutes
from switchyard.enginesim.tgi.config import TgiConfig
from switchyard.enginesim.tgi.engine import TgiEngine
from switchyard.enginesim.tgi.info import PIPELINE_TAG, InfoRoutes
from switchyard.enginesim.tgi.native import NativeRoutes

log = logging.getLogger("switchyard.enginesim.tgi")

#: The routes `--api-key` protects (TGI's `base_routes`); info routes stay open.
PROTECTED: Final = frozenset(
    {"/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions", "/tokenize"}
)


class ApiKey:
    """`Authorization: Bearer <key>` on the generation routes (compared case-insensitively, as TGI does)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"bearer {key}".lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in PROTECTED:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if given.decode("latin-1").lower() != self.expected:
                await Response(status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _empty(request: Request, exc: Exception) -> Response:
    # axum answers unknown routes and methods with an empty body.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return Response(status_code=status)


def build_app(config: TgiConfig, sim: SimOptions, stats: SimStats | None = None) -> Starlette:
    engine = TgiEngine(config, sim, stats or SimStats())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server: asyncio.Server | None = None
        if config.prometheus_port is not None:
            server = await prometheus_port.start(
                config.hostname, config.prometheus_port, engine.metrics.render
            )
            log.info("metrics also on port %d", config.prometheus_port)
        try:
            yield
        finally:
            if server is not None:
                server.close()
                await server.wait_closed()

    routes = [
        *InfoRoutes(engine).routes(),
        *NativeRoutes(engine, compat_return_full_text=PIPELINE_TAG == "text-generation").routes(),
        *ChatRoutes(engine).routes(),
        *CompletionRoutes(engine).routes(),
        stats_route(engine.stats),
        faults_route(engine.scheduler.faults),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _empty, 405: _empty},
    )
    app.state.engine = engine
    if config.api_key:
        app.add_middleware(ApiKey, key=config.api_key)
    return app
