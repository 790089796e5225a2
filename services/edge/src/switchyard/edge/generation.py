"""The generation of an admitted request: call a backend and relay its result.

This is the hot path. For a stream: open the gRPC stream on an endpoint picked by load;
if it fails before its first message, try another endpoint (nothing was sent to the
client yet, so nothing is duplicated); from the first message on, commit to `200
text/event-stream` and relay each message the moment it arrives, all it gives in one
socket write (the adapter joins the deltas that reached it together into one message).
A unary request retries the same way.

Everything the request holds (endpoints, slot, reservation, record) belongs to its
`Claim`, which also answers the errors raised here: before the first byte as a JSON
error, after it as the stream's last SSE event.

With the response cache, a miss records what it relays (`cache.generations`) and keeps
it once the answer went out whole; a hit is replayed here too (`replay_whole`,
`replay_stream`), through the same encoding as a live answer.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

import grpc
from starlette.types import Send

from switchyard.edge import metrics
from switchyard.edge.cache import CacheKey
from switchyard.edge.cache.generations import StreamRecording, whole_entry
from switchyard.edge.claim import body_message
from switchyard.edge.errors import OpenAIError, from_inference
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb

if TYPE_CHECKING:
    from switchyard.edge.claim import Claim
    from switchyard.edge.disconnect import ClientWatch
    from switchyard.edge.encoding import GenerationEncoder

_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_JSON_HEADERS = [(b"content-type", b"application/json")]

StreamCall = grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateStreamResponse]


class _Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _Unmeasured:
    """A replayed stream's gaps are not the engine's: they are kept out of the histogram."""

    def observe(self, amount: float) -> None:
        return None


def _bad_backend(message: str) -> OpenAIError:
    """An answer the contract does not allow: an adapter bug, never passed on as it is."""
    return OpenAIError(502, message, type="server_error", code="backend_error")


class Generation:
    """One request's call to a backend and the client's response, under its `Claim`."""

    __slots__ = ("_itl", "_recording", "cache_key", "claim", "deadline", "encoder", "ex", "request")

    _itl: _Observer  # streams: the gaps between chunks

    def __init__(
        self,
        claim: Claim,
        request: pb.GenerateRequest,
        encoder: GenerationEncoder,
        deadline: float,
        cache_key: CacheKey | None = None,
    ) -> None:
        self.claim = claim
        self.ex = claim.exchange
        self.request = request
        self.encoder = encoder
        self.deadline = deadline  # event loop time
        #: A cache miss's entry: the answer is kept under it if it goes out whole.
        self.cache_key = cache_key
        self._recording: StreamRecording | None = None

    async def run(self) -> None:
        if self.ex.stream:
            await self._stream()
        else:
            await self._unary()

    # -- the backend call, with retries before the first byte -------------------------------

    def _timeout(self) -> float:
        return max(self.deadline - asyncio.get_running_loop().time(), 0.001)

    def _failed(self, exc: grpc.aio.AioRpcError) -> tuple[OpenAIError, bool]:
        """The client's error for a failed attempt, and whether another endpoint may be tried."""
        error = self.claim.endpoint_failed(exc)
        retry_after_s = self.claim.edge.settings.retry_after_s
        return from_inference(error, retry_after_s), error.code in _RETRYABLE

    def _no_backend(self) -> OpenAIError:
        return OpenAIError.unavailable(
            f"No backend for model '{self.ex.model}' is ready; retry after a moment.",
            self.claim.edge.settings.retry_after_s,
        )

    async def _call_unary(self) -> pb.GenerateResponse:
        error: OpenAIError | None = None
        while (endpoint := self.claim.next_endpoint()) is not None:
            try:
                response = await endpoint.stub.Generate(
                    self.request, timeout=self._timeout(), metadata=endpoint.call_metadata()
                )
            except grpc.aio.AioRpcError as exc:
                error, retryable = self._failed(exc)
                if not retryable:
                    raise error from None
                continue
            self.claim.endpoint_answered()
            return response
        raise error or self._no_backend()

    async def _open_stream(self) -> tuple[StreamCall, pb.GenerateStreamResponse]:
        """An open stream and its first message (so the client's status is still ours to pick)."""
        error: OpenAIError | None = None
        while (endpoint := self.claim.next_endpoint()) is not None:
            call = endpoint.stub.GenerateStream(
                self.request, timeout=self._timeout(), metadata=endpoint.call_metadata()
            )
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as exc:
                error, retryable = self._failed(exc)
                if not retryable:
                    raise error from None
                continue
            except BaseException:
                call.cancel()
                raise
            if not isinstance(first, pb.GenerateStreamResponse):
                # EOF with an OK status but no message: an adapter bug
                raise _bad_backend("The backend ended the stream without output.")
            self.claim.endpoint_answered()
            return call, first
        raise error or self._no_backend()

    # -- unary --------------------------------------------------------------------------------

    async def _unary(self) -> None:
        response = await self._call_unary()
        self.ex.first_token()
        self.ex.used(response.usage.prompt_tokens, response.usage.completion_tokens)
        if any(c.index >= self.encoder.choices for c in response.choices):
            raise _bad_backend("The backend answered more choices than asked for.")
        body = self.encoder.whole(response)
        await self.claim.respond(_JSON_HEADERS, body)
        if self.cache_key is not None:
            entry = whole_entry(response, self.encoder.choices)
            if entry is not None:  # the store skips one over its entry limit
                await self.claim.edge.cache.put(self.cache_key, entry)

    async def replay_whole(self, response: pb.GenerateResponse) -> None:
        """A cache hit's answer (its usage is the exchange's already)."""
        self.ex.first_token()
        await self.claim.respond(_JSON_HEADERS, self.encoder.whole(response))

    # -- streams ------------------------------------------------------------------------------

    async def _stream(self) -> None:
        call, message = await self._open_stream()
        claim, send = self.claim, self.claim.send
        self._itl = metrics.INTER_TOKEN_LATENCY.labels(self.ex.model)
        if self.cache_key is not None:
            limit = claim.edge.settings.cache_max_entry_bytes
            self._recording = StreamRecording(limit, self.encoder.choices)
        try:
            await self._start_stream()
            watch = claim.watch
            last = 0.0
            while True:
                last = await self._relay(message, send, watch, last)
                received = await call.read()
                if not isinstance(received, pb.GenerateStreamResponse):
                    break  # EOF: the adapter ended the stream with OK
                message = received
        except grpc.aio.AioRpcError as exc:  # after the first byte: the claim ends the stream
            retry_after_s = claim.edge.settings.retry_after_s
            raise from_inference(from_rpc_error(exc), retry_after_s) from None
        finally:
            if not call.done():
                call.cancel()
        await claim.end_stream(self.encoder.closing())
        # Only here is the stream whole: an error, the deadline or the client leaving
        # raised above, and what was recorded is dropped with this object.
        if self._recording is not None and self.cache_key is not None:
            entry = self._recording.entry()
            if entry is not None:
                await claim.edge.cache.put(self.cache_key, entry)

    async def replay_stream(self, messages: list[pb.GenerateStreamResponse]) -> None:
        """A cache hit's stream: its messages relayed as a live stream's are."""
        self._itl = _Unmeasured()
        send, watch = self.claim.send, self.claim.watch
        await self._start_stream()
        last = 0.0
        for message in messages:
            last = await self._relay(message, send, watch, last)
        await self.claim.end_stream(self.encoder.closing())

    async def _start_stream(self) -> None:
        await self.claim.start_stream(SSE_HEADERS)
        opening = self.encoder.opening()
        if opening:
            await self.claim.send(body_message(opening))

    async def _relay(
        self, message: pb.GenerateStreamResponse, send: Send, watch: ClientWatch, last: float
    ) -> float:
        ex, encoder = self.ex, self.encoder
        if message.index >= encoder.choices:
            raise _bad_backend("The backend streamed more choices than asked for.")
        if self._recording is not None:
            self._recording.add(message)
        # Everything the message gives (its delta, a choice's finish, the usage) goes in
        # one socket write.
        chunk = encoder.delta(message)
        if message.token_count or chunk:
            now = time.perf_counter()
            if last:
                self._itl.observe(now - last)
            else:
                ex.first_token()
            last = now
            ex.completion_tokens += message.token_count
        if message.finish_reason:
            chunk += encoder.finish(message)
        if message.HasField("usage"):
            ex.used(message.usage.prompt_tokens, message.usage.completion_tokens)
            chunk += encoder.usage(message.usage)
        if chunk:
            await send(body_message(chunk))
            watch.touch()
        return last
