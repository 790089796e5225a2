"""The adapter's HTTP client to its engine: calls, streams, health, metrics and aborts.

One pooled aiohttp session per adapter (httpx's pool bookkeeping grew with every pooled
connection and was most of the adapter's CPU under load); every call carries the caller's
trace context (`traceparent`) to the engine — through OpenTelemetry's aiohttp
instrumentation where spans are exported, else as headers of its own
(`trace_context.outgoing`). Streams are read chunk
by chunk and never buffered (the events of one read are handed on together); leaving a
call early (the caller cancelled, or its deadline passed) closes its connection, which is
how every engine learns that the client went away, and where the engine has an abort
route, calls it with that call's own `abort_id`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import replace
from typing import Any, Final

import aiohttp
import orjson
import structlog
from opentelemetry.instrumentation.aiohttp_client import create_trace_config

from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter.translation import (
    AUTH_REFUSED,
    Completion,
    Delta,
    Embeddings,
    EngineHTTPError,
    EngineRequest,
    ModelDescription,
    StreamParser,
    Translation,
    choice_count,
)
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.servicekit import trace_context
from switchyard.servicekit.sse import EventDecoder, LineTooLong, ServerSentEvent
from switchyard.servicekit.telemetry import Tracing, tracing_mode

log = structlog.get_logger(__name__)

_JSON = {"content-type": "application/json", "accept": "application/json"}
_SSE = {"content-type": "application/json", "accept": "text/event-stream"}
_ABORT_TIMEOUT_S = 2.0
_DONE = b"[DONE]"


class EngineClient:
    """Implements `EngineHTTP` for the translation, and the generation calls for the servicer.

    Create it inside the running event loop (aiohttp binds its session to the loop).
    """

    def __init__(self, settings: AdapterSettings, translation: Translation) -> None:
        self.base_url = settings.engine_base_url
        self.translation = translation
        key = settings.engine_api_key
        mode = tracing_mode()
        #: Whether each call sets its trace headers itself (no instrumentation does).
        self._propagates = mode is Tracing.IDS
        self._session = aiohttp.ClientSession(
            base_url=self.base_url,
            # The engine's --api-key, on every call (engines ignore it where they need none).
            headers={"authorization": f"Bearer {key.get_secret_value()}"} if key else None,
            connector=aiohttp.TCPConnector(limit=settings.max_connections, limit_per_host=0),
            # No read timeout: a stream may be silent while the engine queues it; the
            # request's deadline bounds the whole call instead.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s),
            trace_configs=[create_trace_config()] if mode is Tracing.SPANS else None,
            auto_decompress=False,
        )
        self._health_timeout = aiohttp.ClientTimeout(total=settings.health_timeout_s)
        self._aborts: set[asyncio.Task[None]] = set()
        #: Whether the adapter has a key to send (for the words of a refusal).
        self.sends_api_key = key is not None and bool(key.get_secret_value())
        #: Called when the engine refuses a generation's credentials: the engine may have
        #: restarted with another key. Readiness sets it (and then re-proves the key).
        self.on_credentials_refused: Callable[[], None] = _nothing

    async def aclose(self) -> None:
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=_ABORT_TIMEOUT_S)
        await self._session.close()

    def _headers(self, headers: dict[str, str]) -> dict[str, str]:
        """A call's headers, with its trace context where no instrumentation adds it."""
        return {**headers, **trace_context.outgoing()} if self._propagates else headers

    def _unreachable(self, exc: BaseException) -> InferenceError:
        return InferenceError.unavailable(
            f"engine at {self.base_url} is not reachable: {type(exc).__name__}"
        )

    def _error(self, status: int, body: bytes) -> InferenceError:
        if status in AUTH_REFUSED:
            self.on_credentials_refused()
            return InferenceError.engine_failed(
                f"the engine at {self.base_url} refused the adapter's credentials (HTTP {status}): "
                "set ADAPTER_ENGINE_API_KEY to the engine's --api-key"
            )
        return self.translation.error(status, body)

    async def complete(self, request: pb.GenerateRequest) -> Completion:
        n = choice_count(request)
        if n == 1 or self.translation.native_n:
            return await self._complete(request)
        return await self._complete_each(request, n)

    def stream(self, request: pb.GenerateRequest) -> AsyncGenerator[list[Delta], None]:
        """The generation's deltas in batches: each batch is what had arrived together."""
        n = choice_count(request)
        if n == 1 or self.translation.native_n:
            return self._stream(request)
        return self._stream_each(request, n)

    async def _complete_each(self, request: pb.GenerateRequest, n: int) -> Completion:
        """n engine calls of one choice each, concurrently; the first failure cancels (and so
        aborts) the others."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._complete(one))
                    for one in one_choice_requests(request, n)
                ]
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None
        completions = [task.result() for task in tasks]
        choices = tuple(
            replace(choice, index=i)
            for i, completion in enumerate(completions)
            for choice in completion.choices[:1]
        )
        return Completion(
            choices=choices,
            prompt_tokens=completions[0].prompt_tokens,  # the same prompt n times: once
            completion_tokens=sum(c.completion_tokens for c in completions),
        )

    async def _stream_each(
        self, request: pb.GenerateRequest, n: int
    ) -> AsyncGenerator[list[Delta], None]:
        """n engine streams of one choice each, merged as their events arrive: each delta
        tagged with its choice, usage summed; the batches that arrived together go on as
        one. Leaving early closes (so aborts) every one."""
        streams = [self._stream(one) for one in one_choice_requests(request, n)]
        pending: dict[asyncio.Task[list[Delta] | None], int] = {}
        totals = [0] * n  # each stream's cumulative completion tokens

        def ask(i: int) -> None:
            pending[asyncio.create_task(_next(streams[i]))] = i

        try:
            for i in range(n):
                ask(i)
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                merged: list[Delta] = []
                for task in sorted(done, key=pending.__getitem__):
                    i = pending.pop(task)
                    batch = task.result()  # an engine error ends every stream (finally)
                    if batch is None:
                        continue
                    ask(i)
                    for delta in batch:
                        if delta.completion_tokens is not None:
                            totals[i] = delta.completion_tokens
                        merged.append(
                            replace(
                                delta,
                                index=i,
                                completion_tokens=sum(totals)
                                if delta.completion_tokens is not None
                                else None,
                            )
                        )
                if merged:
                    yield merged
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for task in pending:  # read, so that no failure is reported as unretrieved
                if not task.cancelled():
                    task.exception()
            for stream in streams:
                await stream.aclose()

    async def _complete(self, request: pb.GenerateRequest) -> Completion:
        body, headers = await self._unary(self.translation.request(request, stream=False))
        return self.translation.completion(request, body, headers)

    async def embed(self, request: pb.EmbedRequest) -> Embeddings:
        """All of the request's inputs in one engine call; leaving early aborts it."""
        body, _ = await self._unary(self.translation.embed_request(request))
        return self.translation.embeddings(request, body)

    async def count_tokens(self, request: pb.GenerateRequest) -> int:
        """The prompt tokens of a generation of `request`, from the engine's tokenize route."""
        body, _ = await self._unary(self.translation.count_request(request))
        return self.translation.token_count(request, body)

    async def _unary(self, call: EngineRequest) -> tuple[Any, Mapping[str, str]]:
        """One non-streaming engine call: its JSON body and headers. An error status raises
        the translation's error; leaving early (cancelled) aborts the call in the engine."""
        try:
            async with self._session.post(
                call.path, data=orjson.dumps(call.body), headers=self._headers(_JSON)
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        except BaseException:  # cancelled (the caller left, or its deadline passed)
            self._abort_left(call)
            raise
        if response.status >= 400:
            raise self._error(response.status, body)
        return _json(body), response.headers

    async def _stream(self, request: pb.GenerateRequest) -> AsyncGenerator[list[Delta], None]:
        """The engine's deltas, in batches: all those that one read of the body completes
        (what had arrived by then), so never held back for more."""
        call = self.translation.request(request, stream=True)
        parser = self.translation.stream_parser(request)
        try:
            response = await self._session.post(
                call.path, data=orjson.dumps(call.body), headers=self._headers(_SSE)
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        except BaseException:  # cancelled before the engine answered
            self._abort_left(call)
            raise
        # Whether the engine is done with this call: only a call left early is aborted
        # (never one that finished or failed in the engine; its id may be reused there).
        ended = False
        try:
            if response.status >= 400:
                ended = True
                raise self._error(response.status, await response.read())
            decoder = EventDecoder()
            content = response.content
            # `readany` hands over everything buffered at each read (what `iter_any` does,
            # without its iterator's layer on every token), then b"" at the stream's end,
            # which may complete a last event.
            while True:
                chunk = await content.readany()
                batch = _Batch(parser, decoder.feed(chunk) if chunk else decoder.end())
                if batch.deltas:
                    yield batch.deltas
                if batch.error is not None:
                    raise batch.error
                if batch.done or not chunk:
                    ended = True
                    return
        except InferenceError:
            ended = True
            raise
        except (aiohttp.ClientError, LineTooLong) as exc:
            raise InferenceError.unavailable(
                f"lost the engine at {self.base_url} mid-stream: {type(exc).__name__}"
            ) from None
        finally:
            if response.content.at_eof():
                response.release()  # finished: the connection goes back to the pool
            else:
                response.close()  # left early: drop the connection, so the engine aborts
            if not ended:
                self._abort_left(call)

    def _abort_left(self, call: EngineRequest) -> None:
        for abort_id in call.aborts:
            self.abort_in_background(abort_id)

    def abort_in_background(self, abort_id: str) -> None:
        """Ask the engine to abort now, without holding up the cancelled caller."""
        task = asyncio.create_task(self._abort(abort_id))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def _abort(self, abort_id: str) -> None:
        try:
            async with asyncio.timeout(_ABORT_TIMEOUT_S):
                await self.translation.abort(self, abort_id)
        except (EngineHTTPError, TimeoutError) as exc:
            log.warning("engine_abort_failed", abort_id=abort_id, error=type(exc).__name__)

    # -- EngineHTTP, for the translation --------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        try:
            async with self._session.request(
                method, path, data=data, headers=self._headers(_JSON), timeout=self._health_timeout
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineHTTPError(f"{method} {path}: {type(exc).__name__}") from None
        if response.status >= 400:
            raise EngineHTTPError(f"{method} {path}: HTTP {response.status}", response.status)
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise EngineHTTPError(
                f"{method} {path}: the body is not JSON", response.status
            ) from None

    async def get_json(self, path: str) -> Any:
        return await self._call("GET", path)

    async def post_json(self, path: str, body: Any) -> Any:
        return await self._call("POST", path, body)

    # -- health and load ------------------------------------------------------------------

    async def healthy(self) -> bool:
        """Whether the engine says it can generate. Refused connections (loading vLLM, TGI) are False."""
        try:
            async with self._session.get(
                self.translation.health_path, timeout=self._health_timeout
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def max_model_len(self) -> int:
        length: int = await self.translation.max_model_len(self)
        return length

    async def describe(self) -> ModelDescription:
        """What the engine serves (capabilities, context, vector size, identity)."""
        description: ModelDescription = await self.translation.describe(self)
        return description

    async def metrics_text(self) -> str:
        """The engine's Prometheus exposition; EngineHTTPError when it cannot be read."""
        try:
            async with self._session.get(
                self.translation.metrics_path, timeout=self._health_timeout
            ) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineHTTPError(
                f"GET {self.translation.metrics_path}: {type(exc).__name__}"
            ) from None
        if response.status >= 400:
            raise EngineHTTPError(
                f"GET {self.translation.metrics_path}: HTTP {response.status}", response.status
            )
        return text


def _nothing() -> None:
    pass


async def _next(stream: AsyncGenerator[list[Delta], None]) -> list[Delta] | None:
    """The stream's next batch; None at its end."""
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


_INT64_MAX: Final = 2**63 - 1


def one_choice_requests(request: pb.GenerateRequest, n: int) -> list[pb.GenerateRequest]:
    """`request` as n requests of one choice each (each engine call gets its own abort id
    from the translation). A seeded request's choice i is seeded seed + i, as vLLM seeds
    its n choices: the same seed n times would give n identical choices."""
    singles = []
    for i in range(n):
        one = pb.GenerateRequest()
        one.CopyFrom(request)
        one.n = 1
        if request.sampling.HasField("seed"):
            seed = request.sampling.seed
            one.sampling.seed = seed + i if seed <= _INT64_MAX - i else seed - i
        singles.append(one)
    return singles


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for a failed fan-out: an `InferenceError` if one is among them."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    for error in leaves:
        if isinstance(error, InferenceError):
            return error
    return leaves[0]


class _Batch:
    """What one read of the stream gave: its deltas, whether the engine said it is done
    (`[DONE]`; nothing after it is read), and the error an event stood for (raised once
    the deltas before it are relayed)."""

    __slots__ = ("deltas", "done", "error")

    def __init__(self, parser: StreamParser, events: list[ServerSentEvent]) -> None:
        self.deltas: list[Delta] = []
        self.done = False
        self.error: InferenceError | None = None
        for event in events:
            if event.data == _DONE:
                self.done = True
                return
            try:  # `_json`, inlined: this runs for every token
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                self.error = _not_json()
                return
            try:
                delta = parser.feed(event.event, data)
            except InferenceError as error:
                self.error = error
                return
            if delta is not None:
                self.deltas.append(delta)


def _not_json() -> InferenceError:
    return InferenceError.engine_failed("the engine sent a body that is not JSON")


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _not_json() from None
