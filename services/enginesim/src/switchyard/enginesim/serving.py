"""HTTP plumbing every engine's routes share: disconnects, SSE, JSON, API keys, uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, Final, TypeVar

import orjson
import uvicorn
import uvloop
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from switchyard.servicekit.uvicorn_server import GracefulServer

T = TypeVar("T")
log = logging.getLogger("switchyard.enginesim")

SSE_KEEPALIVE: Final = b":\n\n"
"""A comment line: TGI (axum) sends these to keep idle streams open."""


class ClientDisconnected(Exception):
    """The client went away before the response was ready."""


class OrjsonResponse(Response):
    """A JSON response serialized with orjson (compact, fast)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first.

    Raises ClientDisconnected in that case. Listens for the ASGI `http.disconnect` message
    (as vLLM's `with_cancellation` does), so call it after the request body was read.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Whether one finished or we were cancelled ourselves: stop the other, leave no task.
        for pending in (task, watch):
            pending.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    if task.cancelled() and watch.done() and not watch.cancelled():
        raise ClientDisconnected("the client disconnected")
    return task.result()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def sse_event(payload: bytes, *, space: bool = True) -> bytes:
    """One server-sent event: `data: <payload>` (vLLM, SGLang) or `data:<payload>` (TGI)."""
    return (b"data: " if space else b"data:") + payload + b"\n\n"


def sse_done(*, space: bool = True) -> bytes:
    """The `[DONE]` terminator, framed like `sse_event`."""
    return sse_event(b"[DONE]", space=space)


Endpoint = Callable[[Request], Awaitable[Response]]


def route_table(table: Mapping[str, Endpoint]) -> list[BaseRoute]:
    """Starlette routes from `{"GET POST /a /b": endpoint}`: each path, with those methods."""
    routes: list[BaseRoute] = []
    for spec, endpoint in table.items():
        methods = [word for word in spec.split() if not word.startswith("/")]
        paths = [word for word in spec.split() if word.startswith("/")]
        routes += [Route(path, endpoint, methods=methods) for path in paths]
    return routes


def event_stream(
    events: AsyncIterator[bytes],
    *,
    background: BackgroundTask | None = None,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """An SSE response of `events`, sent as they come (never buffered)."""
    return StreamingResponse(
        events, media_type="text/event-stream", background=background, headers=headers
    )


class BearerAuth:
    """`Authorization: Bearer <key>` where `keys_for(method, path)` names keys, else `refusal`.

    The scheme is matched in any case, the token exactly (`fold_case`: in any case too) and
    in constant time, against every key.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys_for: Callable[[str, str], Collection[str]],
        refusal: Response,
        fold_case: bool = False,
    ) -> None:
        self.app, self._keys_for, self._refusal, self._fold = app, keys_for, refusal, fold_case

    def _digest(self, token: str, encoding: str) -> bytes:
        return hashlib.sha256((token.lower() if self._fold else token).encode(encoding)).digest()

    def _authorized(self, authorization: str, keys: Collection[str]) -> bool:
        scheme, _, token = authorization.partition(" ")
        given = self._digest(token, "latin-1")  # a header's bytes, as Starlette decoded them
        match = False
        for key in keys:  # every one: no early exit, no timing leak
            match |= secrets.compare_digest(given, self._digest(key, "utf-8"))
        return match and scheme.lower() == "bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            keys = self._keys_for(scope["method"], scope["path"])
            authorization = Headers(scope=scope).get("authorization", "")
            if keys and not self._authorized(authorization, keys):
                await self._refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    delay_listen_s: float = 0.0,
    name: str = "enginesim",
    graceful_timeout_s: int = 5,
) -> None:
    """Run `app` with uvicorn (uvloop, httptools, no access log) until SIGTERM or SIGINT.

    `delay_listen_s` keeps the port closed that long first, as vLLM and TGI do not listen
    while loading the model. Logs one line when listening.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",  # uvicorn's own start-up lines; we log one of ours
        timeout_graceful_shutdown=graceful_timeout_s,
    )
    server = _Server(config, name)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT once stopped
        uvloop.run(_serve(server, delay_listen_s))


async def _serve(server: uvicorn.Server, delay_listen_s: float) -> None:
    if delay_listen_s > 0 and await _signalled_within(delay_listen_s):
        return
    await server.serve()


async def _signalled_within(seconds: float) -> bool:
    """Sleep `seconds`, or less if SIGTERM/SIGINT arrives; True if one did."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Only now: whoever waits for this line to send SIGTERM must find it handled.
    log.info("loading: not listening for %.1f s", seconds)
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return True


class _Server(GracefulServer):
    def __init__(self, config: uvicorn.Config, name: str) -> None:
        super().__init__(config)
        self._name = name

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            addresses = [s.getsockname() for srv in self.servers for s in srv.sockets]
            where = ", ".join(f"http://{a[0]}:{a[1]}" for a in addresses)
            log.info("%s listening on %s", self._name, where)
