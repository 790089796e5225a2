"""The response to an admitted request: call a backend, relay the result, account for it.

This is the hot path. For a stream: open the gRPC stream on an endpoint picked by load;
if it fails before its first message, try another endpoint (nothing was sent to the
client yet, so nothing is duplicated); from the first message on, commit to `200
text/event-stream` and relay each message as one SSE chunk the moment it arrives. An error
after that is one SSE error event, then the end. A unary request retries the same way.

Whatever happens — success, error, client gone — the request's admission slot is
released, its token reservation settled with the real usage (or the partial usage), and
it is recorded exactly once.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import grpc
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from switchyard.edge import metrics
from switchyard.edge.disconnect import ClientWatch
from switchyard.edge.errors import OpenAIError, from_inference, stream_error_event
from switchyard.edge.exchange import Exchange
from switchyard.edge.responses import DONE, Encoder
from switchyard.edge.routing.endpoints import Endpoint
from switchyard.edge.routing.table import Route
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb

if TYPE_CHECKING:
    from switchyard.edge.ratelimit import Limits
    from switchyard.edge.state import EdgeState

_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]

StreamCall = grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateStreamResponse]


def _body(chunk: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


class Generation(Response):
    """An ASGI response; everything it needs was decided by the pipeline.

    A `Response` subclass only so that FastAPI hands it to the server untouched; its
    status, headers and body are decided while it runs.
    """

    def __init__(
        self,
        edge: EdgeState,
        exchange: Exchange,
        route: Route,
        request: pb.GenerateRequest,
        encoder: Encoder,
        *,
        include_usage: bool,
        limiter_subject: str,
        limits: Limits,
        reserved_tokens: int,
        prompt_estimate: int,
        headers: list[tuple[bytes, bytes]],
        deadline: float,
    ) -> None:
        self.background = None
        self.edge = edge
        self.ex = exchange
        self.route = route
        self.request = request
        self.encoder = encoder
        self.include_usage = include_usage
        self.limiter_subject = limiter_subject
        self.limits = limits
        self.reserved_tokens = reserved_tokens
        self.prompt_estimate = prompt_estimate
        self.response_headers = headers
        self.deadline = deadline
        self._usage_seen = False
        self._itl = metrics.INTER_TOKEN_LATENCY.labels(route.name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self.ex.stream:
                await self._stream(receive, send)
            else:
                await self._unary(receive, send)
        finally:
            await self._finish()

    # -- the backend call, with retries before the first byte -------------------------------

    def _timeout(self) -> float:
        return max(self.deadline - asyncio.get_running_loop().time(), 0.001)

    def _next_endpoint(self, tried: set[str]) -> Endpoint | None:
        if len(tried) >= self.edge.settings.max_attempts:
            return None
        endpoint = self.edge.pool.pick(self.route, tried)
        if endpoint is not None:
            if tried:
                metrics.RETRIES.labels(self.route.name).inc()
            tried.add(endpoint.address)
            self.ex.attempts += 1
            self.ex.endpoint = endpoint.address
        return endpoint

    def _failed(self, endpoint: Endpoint, exc: grpc.aio.AioRpcError) -> tuple[OpenAIError, bool]:
        """The client's error for a failed call, and whether another endpoint may be tried."""
        error = from_rpc_error(exc)
        if error.code == grpc.StatusCode.UNAVAILABLE:
            endpoint.call_failed()
        return from_inference(error, self.edge.settings.retry_after_s), error.code in _RETRYABLE

    def _no_backend(self) -> OpenAIError:
        return OpenAIError.unavailable(
            f"No backend for model '{self.route.name}' is ready; retry after a moment.",
            self.edge.settings.retry_after_s,
        )

    async def _call_unary(self) -> pb.GenerateResponse:
        tried: set[str] = set()
        error: OpenAIError | None = None
        while (endpoint := self._next_endpoint(tried)) is not None:
            endpoint.in_flight += 1
            try:
                response = await endpoint.stub.Generate(self.request, timeout=self._timeout())
                endpoint.call_succeeded()
                return response
            except grpc.aio.AioRpcError as exc:
                error, retryable = self._failed(endpoint, exc)
                if not retryable:
                    raise error from None
            finally:
                endpoint.in_flight -= 1
        raise error or self._no_backend()

    async def _open_stream(self) -> tuple[Endpoint, StreamCall, pb.GenerateStreamResponse]:
        """An open stream and its first message (so the client's status is still ours to pick)."""
        tried: set[str] = set()
        error: OpenAIError | None = None
        while (endpoint := self._next_endpoint(tried)) is not None:
            endpoint.in_flight += 1
            call = endpoint.stub.GenerateStream(self.request, timeout=self._timeout())
            try:
                first = await call.read()
                if isinstance(first, pb.GenerateStreamResponse):
                    endpoint.call_succeeded()
                    return endpoint, call, first
                raise OpenAIError(  # EOF with an OK status but no message: an adapter bug
                    502,
                    "The backend ended the stream without output.",
                    type="server_error",
                    code="backend_error",
                )
            except grpc.aio.AioRpcError as exc:
                endpoint.in_flight -= 1
                error, retryable = self._failed(endpoint, exc)
                if not retryable:
                    raise error from None
            except BaseException:
                endpoint.in_flight -= 1
                call.cancel()
                raise
        raise error or self._no_backend()

    # -- unary --------------------------------------------------------------------------------

    async def _unary(self, receive: Receive, send: Send) -> None:
        async with ClientWatch(receive, drain=self.edge.drain) as watch:
            try:
                response = await self._call_unary()
            except OpenAIError as error:
                watch.stop()
                await self._send_error(send, error)
                return
            self.ex.first_token()
            self._account(response.usage)
            body = self.encoder.whole(response.text, response.finish_reason, response.usage)
            watch.stop()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": _JSON_HEADERS + self.response_headers,
                }
            )
            await send(_body(body, more=False))
        if watch.shut_down:  # the shutdown's grace period ended first: nothing was sent
            await self._send_error(
                send, OpenAIError.shutting_down(self.edge.settings.retry_after_s)
            )
        self.ex.client_disconnected = watch.disconnected

    # -- streams ------------------------------------------------------------------------------

    async def _stream(self, receive: Receive, send: Send) -> None:
        keepalive = self.edge.settings.stream_keepalive_s
        started = False
        async with ClientWatch(receive, send, keepalive, self.edge.drain) as watch:
            try:
                endpoint, call, message = await self._open_stream()
            except OpenAIError as error:
                watch.stop()
                await self._send_error(send, error)
                return
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": _SSE_HEADERS + self.response_headers,
                    }
                )
                started = True
                if self.encoder.kind == "chat":
                    await send(_body(self.encoder.role()))
                last = 0.0
                while True:
                    last = await self._relay(message, send, watch, last)
                    received = await call.read()
                    if not isinstance(received, pb.GenerateStreamResponse):
                        break  # EOF: the adapter ended the stream with OK
                    message = received
                watch.stop()
                await send(_body(DONE, more=False))
            except grpc.aio.AioRpcError as exc:
                failure = from_inference(from_rpc_error(exc), self.edge.settings.retry_after_s)
                self.ex.fail(failure.status, failure.kind)
                watch.stop()
                await send(_body(stream_error_event(failure), more=False))
            finally:
                endpoint.in_flight -= 1
                if not call.done():
                    call.cancel()
        if watch.shut_down:  # the shutdown's grace period ended mid-request: say so, then end
            error = OpenAIError.shutting_down(self.edge.settings.retry_after_s)
            if started:
                self.ex.fail(error.status, error.kind)
                await send(_body(stream_error_event(error), more=False))
            else:
                await self._send_error(send, error)
        self.ex.client_disconnected = watch.disconnected

    async def _relay(
        self, message: pb.GenerateStreamResponse, send: Send, watch: ClientWatch, last: float
    ) -> float:
        if message.token_count or message.text_delta:
            now = time.perf_counter()
            if last:
                self._itl.observe(now - last)
            else:
                self.ex.first_token()
            last = now
            self.ex.completion_tokens += message.token_count
            if message.text_delta:
                await send(_body(self.encoder.chunk(message.text_delta)))
                watch.touch()
        if message.finish_reason:
            await send(_body(self.encoder.finish(message.finish_reason)))
        if message.HasField("usage"):
            self._account(message.usage)
            if self.include_usage:
                await send(_body(self.encoder.usage(message.usage)))
        return last

    # -- endings ------------------------------------------------------------------------------

    def _account(self, usage: pb.Usage) -> None:
        self._usage_seen = True
        self.ex.used(usage.prompt_tokens, usage.completion_tokens)

    async def _send_error(self, send: Send, error: OpenAIError) -> None:
        self.ex.fail(error.status, error.kind)
        headers = [(k.encode(), v.encode()) for k, v in error.headers.items()]
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": _JSON_HEADERS + self.response_headers + headers,
            }
        )
        await send(_body(bytes(error.response().body), more=False))

    async def _finish(self) -> None:
        self.edge.admission.release(self.route.name)
        metrics.IN_FLIGHT.labels(self.route.name).dec()
        if not self._usage_seen and self.ex.completion_tokens:
            # Cut short (client gone, backend lost): charge what was generated, and our
            # estimate of the prompt, which the engine did process.
            self.ex.prompt_tokens = self.prompt_estimate
        used = self.ex.prompt_tokens + self.ex.completion_tokens
        # Shielded: a shutdown cancelling this task must not lose the usage correction.
        await asyncio.shield(
            self.edge.limiter.settle(self.limiter_subject, self.limits, self.reserved_tokens, used)
        )
        self.ex.record()
