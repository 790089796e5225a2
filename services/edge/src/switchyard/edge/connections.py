"""The edge's HTTP/1.1 connections: uvicorn's httptools protocol, with limits of its own.

httptools (llhttp) has no limit on the size of a request's headers, and uvicorn none on
the time they, or the body, may take: a client could hold a connection by sending
nothing, or a header byte at a time, and make the edge buffer a header of any size (a
16 MiB Authorization header was read whole). This protocol adds, per connection:

- a size limit on a request's line and headers, counted as the bytes arrive, so no more
  than one read past the limit is ever buffered: past it, 431 and the connection closes
  (after a short linger that discards what the client still sends, so the 431 is not
  lost to a TCP reset);
- a time limit for the headers, from the connection's opening (or, on a kept-alive
  connection, from the request's first byte): past it, 408 (or nothing, if nothing was
  sent) and the connection closes;
- a time limit for the body, from the end of the headers: past it the connection closes,
  and the request's handler sees its client leave;
- a limit on connections open at once in the process: past it, a new connection is
  closed as soon as it is accepted, before anything is read.

uvicorn's own `timeout_keep_alive` closes kept-alive connections left idle. None of the
limits applies to a response: a stream lasts as long as its request allows. The cost on
the hot path is about 3 µs of CPU per request (four calls, two clock reads; the base
class's methods are called directly, not through `super()`, which builds an object per
call).

The limits come from the application, through its lifespan state (`ConnectionPolicy`
under `POLICY`): every uvicorn worker gets them from its own application. The policy is
also how uvicorn's shutdown, which it announces to connections only, reaches the edge.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from switchyard.edge import metrics

#: The key of the policy in the application's lifespan state.
POLICY = "switchyard.edge.connections"
#: After a refusal (431, 408): how long the client's further bytes are read and dropped
#: before the connection closes. Closing with unread bytes would send a TCP reset, which
#: can destroy the refusal before the client reads it.
LINGER_S = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    #: Called when uvicorn begins a graceful shutdown (once per connection open then).
    on_shutdown: Callable[[], None]


def _error(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response (OpenAI's error body) that closes the connection."""
    body = orjson.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    )
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class EdgeHttpProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http="switchyard.edge.connections:EdgeHttpProtocol")`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._policy: ConnectionPolicy | None = app_state.get(POLICY)
        # One timer per connection, re-armed only when a deadline comes earlier than it:
        # a request costs two clock reads, not two timer handles.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._reason = ""
        # Between a request's first byte (or the connection's opening) and its headers:
        self._reading_head = False
        self._head_bytes = 0
        self._request_begun = False
        self._counted = False
        self._lingering = False

    # -- the connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        policy = self._policy
        if policy is None:
            return
        self._counted = True
        metrics.OPEN_CONNECTIONS.inc()
        if len(self.connections) > policy.max_connections:
            self._close("connection_limit")
            return
        self._reading_head = True
        self._arm(policy.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._cancel_timer()
        if self._counted:
            self._counted = False
            metrics.OPEN_CONNECTIONS.dec()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: dropped unread
        # Count a read toward the headers if it began while they were being read; a read
        # that starts a request on a kept-alive connection is not counted (at most one
        # read, and never a body's bytes, is missed or miscounted).
        counting = self._reading_head
        HttpToolsProtocol.data_received(self, data)
        policy = self._policy
        if not (counting and self._reading_head and policy is not None):
            return
        self._head_bytes += len(data)
        if self._head_bytes > policy.max_header_bytes and not self.transport.is_closing():
            self._refuse(
                431,
                "request_header_fields_too_large",
                f"The request's line and headers are larger than {policy.max_header_bytes} bytes.",
                "header_too_large",
            )

    def shutdown(self) -> None:
        if self._policy is not None:
            self._policy.on_shutdown()
        super().shutdown()

    # -- the request (httptools' callbacks) --------------------------------------------

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._request_begun = True
        self._reading_head = True
        self._head_bytes = 0
        if self._deadline is None and self._policy is not None:
            self._arm(self._policy.header_timeout_s, "header_timeout")

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._policy is not None:
            self._arm(self._policy.body_timeout_s, "body_timeout")
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._request_begun = False
        self._disarm()
        HttpToolsProtocol.on_message_complete(self)

    # -- limits ---------------------------------------------------------------------------

    def _arm(self, delay_s: float, reason: str) -> None:
        self._deadline = deadline = self.loop.time() + delay_s
        self._reason = reason
        if self._timer is None or deadline < self._timer.when():
            self._cancel_timer()
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _disarm(self) -> None:
        self._deadline = None  # a pending timer will find nothing to do

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:  # re-armed later since
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        self._deadline = None
        self._expired(self._reason)

    def _expired(self, reason: str) -> None:
        if self.transport.is_closing():
            return
        if reason == "header_timeout" and self._request_begun:
            assert self._policy is not None
            self._refuse(
                408,
                "request_timeout",
                f"The request's headers did not arrive within {self._policy.header_timeout_s:g} s.",
                reason,
            )
        else:
            self._close(reason)

    def _refuse(self, status: int, code: str, message: str, reason: str) -> None:
        # Only between responses: never write into another request's response.
        if not (self.cycle is None or self.cycle.response_complete):
            self._close(reason)
            return
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        self._disarm()
        self._reading_head = False
        self.transport.write(_error(status, code, message))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self._cancel_timer()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _close(self, reason: str) -> None:
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        self._disarm()
        self._reading_head = False
        self.transport.close()
