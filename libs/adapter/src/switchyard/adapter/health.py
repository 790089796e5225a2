"""Readiness: the adapter is SERVING only while its engine can generate.

A background task asks the engine (its health route, then its model info: what it serves,
its context length, vector size and identity, as ListModels reports them) and sets
the standard `grpc.health.v1` status for the whole server and for the inference service.
A request that finds the engine unreachable wakes the checker at once, so routers learn of
it without waiting for the next tick. The adapter publishes exactly what it believes:
readiness changes only through a check, and every check's answer is published (a request
that failed once on a healthy engine, e.g. one reset connection, leaves it SERVING).

Health routes are open on every engine, even one started with `--api-key`, so health
alone cannot tell whether the engine takes the adapter's key. The model info is read on a
route the key guards (translations see to that), and it is read again before the adapter
serves after anything that may have changed the engine: its health failing (a restart),
or a generation whose credentials it refused (a restart with another key). While it
refuses them, each check reads the info again, so the adapter serves again as soon as
the engine takes its key. Why the adapter does not serve is logged once per change of
cause, not at every check.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from prometheus_client import Gauge

from switchyard.adapter.engine import EngineClient
from switchyard.adapter.translation import EngineHTTPError, ModelDescription
from switchyard.inference.v1 import inference_pb2

log = structlog.get_logger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(
        self,
        engine: EngineClient,
        health: health_aio.HealthServicer,
        interval_s: float,
        gauge: Gauge,
    ) -> None:
        self._engine = engine
        self._health = health
        self._gauge = gauge
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self.ready = False
        self.max_model_len = 0
        #: What the engine serves, as last read (None until the first read succeeds).
        self.model: ModelDescription | None = None
        #: Whether the next healthy check must read the engine's info (prove the key) first.
        self._reread_info = True
        #: The last cause logged for not serving (None while serving): logged once each.
        self._cause: tuple[str, str] | None = None
        engine.on_credentials_refused = self.credentials_refused

    async def _set(self, ready: bool) -> None:
        if ready != self.ready:
            log.info(
                "engine_ready" if ready else "engine_not_ready", engine_url=self._engine.base_url
            )
        self.ready = ready
        self._gauge.set(1 if ready else 0)
        status = _SERVING if ready else _NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    async def check(self) -> bool:
        """Ask the engine once and publish the answer."""
        ready = await self._engine.healthy()
        if not ready:
            self._reread_info = True  # it may come back as another engine
        elif self._reread_info or not self.max_model_len:
            ready = await self._read_info()
        if ready:
            self._cause = None
        await self._set(ready)
        return ready

    async def _read_info(self) -> bool:
        # Cleared before the call: a refusal reported while it runs asks for another read.
        self._reread_info = False
        try:
            self.model = await self._engine.describe()
            self.max_model_len = self.model.max_model_len
        except Exception as exc:  # the engine answers health but not its info: not ready yet
            self._reread_info = True
            if isinstance(exc, EngineHTTPError) and exc.credentials_refused:
                self._log_cause("engine_credentials_refused", str(exc), fix=self._key_fix())
            else:
                self._log_cause("engine_info_failed", repr(exc))
            return False
        return True

    def _key_fix(self) -> str:
        state = "is not the engine's key" if self._engine.sends_api_key else "is not set"
        return (
            f"ADAPTER_ENGINE_API_KEY {state}: set it to the engine's --api-key "
            "(the adapter serves again as soon as the engine accepts it)"
        )

    def _log_cause(self, event: str, error: str, **fields: str) -> None:
        if self._cause != (event, error):
            self._cause = (event, error)
            log.warning(event, engine_url=self._engine.base_url, error=error, **fields)

    async def run(self) -> None:
        await self._set(False)
        while True:
            self._wake.clear()  # before the check: a failure during it asks for another
            await self.check()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()

    def engine_unreachable(self) -> None:
        """Called when a request could not reach the engine: check it now. Readiness is
        not changed here; the check decides, and publishes NOT_SERVING if it fails."""
        self._wake.set()

    def credentials_refused(self) -> None:
        """Called by the engine client when the engine refused a generation's key: prove
        the key again now (on the info route), which publishes NOT_SERVING if it fails."""
        self._reread_info = True
        self._wake.set()
