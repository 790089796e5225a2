"""`--prometheus-port`: the router's second listener, which serves only `GET /metrics`.

A minimal HTTP/1.1 responder (one request per connection, then close) is enough for a
Prometheus scrape and keeps this off the API server's event handling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

_HEAD_LIMIT: Final = 16_384
_READ_TIMEOUT_S: Final = 10.0


async def start(host: str, port: int, render: Callable[[], str]) -> asyncio.Server:
    """Listen on `host:port`; answer `GET /metrics` with `render()`, anything else 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].split(b"?", 1)[0] if len(parts) >= 2 else b""
            if parts[:1] == [b"GET"] and path == b"/metrics":
                status, body = b"200 OK", render().encode()
            else:
                status, body = b"404 Not Found", b""
            writer.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT)
