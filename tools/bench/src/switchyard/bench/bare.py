"""The bare relay: the least that an edge and an adapter built like Switchyard's can spend.

A bench path (`bare`) of two processes that only move bytes, over Switchyard's own
transports: its edge is uvicorn (httptools, uvloop) with a raw ASGI app that reads a
request's body, parses it once (orjson, for `stream`) and hands the bytes to its adapter
in one grpc.aio call; its adapter, a grpc.aio server, posts those bytes to the engine with
aiohttp and answers with the engine's body (a unary call) or with each chunk one read of
the engine's stream returns (a server stream, one message per read, as Switchyard's
adapter batches). No keys, limits, routing, validation, translation, protobuf messages,
logs, metrics or traces.

Its CPU beside Switchyard's in the same run splits Switchyard's cost into its own work
and what the transports themselves cost — which no edge and adapter written this way can
shed, and which bounds the ratios to the floor they can reach.

`python -m switchyard.bench.bare adapter --port P --engine URL` and
`python -m switchyard.bench.bare edge --port P --adapter HOST:PORT` (its `GET /health`
answers 200 once the adapter answers).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import grpc
import orjson
import uvloop

UNARY: Final = "/switchyard.bench.Bare/Unary"
STREAM: Final = "/switchyard.bench.Bare/Stream"
_JSON: Final = {"content-type": "application/json"}


class Adapter:
    """The bare adapter's two methods: the request's bytes to the engine, its answer back."""

    def __init__(self, engine_url: str) -> None:
        self._engine_url = engine_url
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made in the running loop, on the first call
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(self._engine_url, connector=connector)
        return self._session

    async def unary(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        method = "POST" if body else "GET"  # an empty body: the edge's health check
        session = self.session()
        async with session.request(method, _path(context), data=body, headers=_JSON) as response:
            answer = await response.read()
        if response.status >= 400:
            await context.abort(grpc.StatusCode.UNKNOWN, f"engine: HTTP {response.status}")
        return answer

    async def stream(
        self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        async with self.session().post(_path(context), data=body, headers=_JSON) as response:
            if response.status >= 400:
                await context.abort(grpc.StatusCode.UNKNOWN, f"engine: HTTP {response.status}")
            while chunk := await response.content.readany():
                yield chunk


def _path(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "path":
            return str(value)
    return "/v1/chat/completions"


async def serve_adapter(port: int, engine_url: str) -> None:
    adapter = Adapter(engine_url)
    server = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Unary": grpc.unary_unary_rpc_method_handler(adapter.unary),
        "Stream": grpc.unary_stream_rpc_method_handler(adapter.stream),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("switchyard.bench.Bare", handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class Edge:
    """The bare edge: a raw ASGI app relaying each POST through one call to its adapter."""

    def __init__(self, adapter: str) -> None:
        self._adapter = adapter
        self._channel: grpc.aio.Channel | None = None

    def _calls(self) -> grpc.aio.Channel:
        if self._channel is None:  # made in the running loop, on the first request
            self._channel = grpc.aio.insecure_channel(self._adapter)
        return self._channel

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to set up
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        channel: Any = self._calls()  # untyped calls: bytes in, bytes out
        metadata = (("path", scope["path"]),)
        try:
            if scope["method"] == "GET":  # /health: the adapter answers
                await channel.unary_unary(UNARY)(b"", metadata=(("path", "/health"),))
                await _answer(send, 200, b"ok", b"text/plain")
            elif orjson.loads(body).get("stream"):
                await self._stream(send, channel.unary_stream(STREAM)(body, metadata=metadata))
            else:
                answer = await channel.unary_unary(UNARY)(body, metadata=metadata)
                await _answer(send, 200, answer, b"application/json")
        except grpc.aio.AioRpcError as exc:
            await _answer(send, 502, str(exc.details()).encode(), b"text/plain")

    async def _stream(self, send: Any, call: Any) -> None:
        first = True
        async for chunk in call:
            if first:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")],
                    }
                )
                first = False
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if first:
            await _answer(send, 502, b"no answer", b"text/plain")
            return
        await send({"type": "http.response.body", "body": b""})


async def _answer(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchyard.bench.bare")
    parser.add_argument("role", choices=("edge", "adapter"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", help="the engine's base URL (adapter)")
    parser.add_argument("--adapter", help="the adapter's host:port (edge)")
    args = parser.parse_args(argv)
    if args.role == "adapter":
        if not args.engine:
            parser.error("adapter: --engine is required")
        uvloop.run(serve_adapter(args.port, args.engine))
        return 0
    if not args.adapter:
        parser.error("edge: --adapter is required")
    import uvicorn

    uvicorn.run(
        Edge(args.adapter),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
