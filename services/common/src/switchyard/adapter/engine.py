"""The adapter's HTTP client to its engine: calls, streams, health, metrics and aborts.

One pooled `httpx.AsyncClient` per adapter, instrumented so every call carries the
caller's trace context (`traceparent`) to the engine. Streams are read event by event
and never buffered; leaving a stream early closes its connection, which is how every
engine learns that the client went away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson
import structlog
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter.translation import Completion, Delta, Translation
from switchyard.common.errors import InferenceError
from switchyard.common.sse import iter_events
from switchyard.inference.v1 import inference_pb2 as pb

log = structlog.get_logger(__name__)

_JSON = {"content-type": "application/json", "accept": "application/json"}
_SSE = {"content-type": "application/json", "accept": "text/event-stream"}
_ABORT_TIMEOUT_S = 2.0


class EngineClient:
    def __init__(self, settings: AdapterSettings, translation: Translation) -> None:
        self.base_url = settings.engine_base_url
        self.translation = translation
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            # No read timeout: a stream may be silent while the engine queues it; the
            # request's deadline bounds the whole call instead.
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s, read=None, write=30.0, pool=None
            ),
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
            ),
        )
        HTTPXClientInstrumentor.instrument_client(self._http)
        self._health_timeout = settings.health_timeout_s
        self._aborts: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=_ABORT_TIMEOUT_S)
        await self._http.aclose()

    def _unreachable(self, exc: httpx.TransportError) -> InferenceError:
        return InferenceError.unavailable(
            f"engine at {self.base_url} is not reachable: {type(exc).__name__}"
        )

    async def complete(self, request: pb.GenerateRequest) -> Completion:
        call = self.translation.request(request, stream=False)
        try:
            response = await self._http.post(
                call.path, content=orjson.dumps(call.body), headers=_JSON
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self.translation.error(response.status_code, response.content)
        return self.translation.completion(request, _json(response.content))

    async def stream(self, request: pb.GenerateRequest) -> AsyncGenerator[Delta, None]:
        call = self.translation.request(request, stream=True)
        parser = self.translation.stream_parser(request)
        http_request = self._http.build_request(
            "POST", call.path, content=orjson.dumps(call.body), headers=_SSE
        )
        try:
            response = await self._http.send(http_request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        try:
            if response.status_code >= 400:
                raise self.translation.error(response.status_code, await response.aread())
            async for event in iter_events(response.aiter_lines()):
                if event.data == "[DONE]":
                    return
                delta = parser.feed(event.event, _json(event.data))
                if delta is not None:
                    yield delta
        except httpx.TransportError as exc:
            raise InferenceError.unavailable(
                f"lost the engine at {self.base_url} mid-stream: {type(exc).__name__}"
            ) from None
        finally:
            # Closing an unfinished response drops its connection: the engine aborts.
            await response.aclose()

    def abort_in_background(self, request_id: str) -> None:
        """Ask the engine to abort now, without holding up the cancelled caller."""
        task = asyncio.create_task(self._abort(request_id))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def _abort(self, request_id: str) -> None:
        try:
            async with asyncio.timeout(_ABORT_TIMEOUT_S):
                await self.translation.abort(self._http, request_id)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("engine_abort_failed", request_id=request_id, error=type(exc).__name__)

    async def healthy(self) -> bool:
        """Whether the engine says it can generate. Refused connections (loading vLLM, TGI) are False."""
        try:
            response = await self._http.get(
                self.translation.health_path, timeout=self._health_timeout
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def max_model_len(self) -> int:
        length: int = await self.translation.max_model_len(self._http)
        return length

    async def metrics_text(self) -> str:
        response = await self._http.get(self.translation.metrics_path, timeout=self._health_timeout)
        response.raise_for_status()
        return response.text


def _json(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InferenceError.engine_failed("the engine sent a body that is not JSON") from None
