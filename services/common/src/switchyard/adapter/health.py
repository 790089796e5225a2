"""Readiness: the adapter is SERVING only while its engine can generate.

A background task asks the engine (its health route, then its model info once) and sets
the standard `grpc.health.v1` status for the whole server and for the inference service.
A request that finds the engine unreachable wakes the checker at once, so routers learn of
it without waiting for the next tick. The adapter publishes exactly what it believes:
readiness changes only through a check, and every check's answer is published (a request
that failed once on a healthy engine, e.g. one reset connection, leaves it SERVING).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from prometheus_client import Gauge

from switchyard.adapter.engine import EngineClient
from switchyard.inference.v1 import inference_pb2

log = structlog.get_logger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(
        self, engine: EngineClient, health: HealthServicer, interval_s: float, gauge: Gauge
    ) -> None:
        self._engine = engine
        self._health = health
        self._gauge = gauge
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self.ready = False
        self.max_model_len = 0

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
        if ready and not self.max_model_len:
            try:
                self.max_model_len = await self._engine.max_model_len()
            except Exception as exc:  # the engine answers health but not its info: not ready yet
                log.warning("engine_info_failed", error=repr(exc))
                ready = False
        await self._set(ready)
        return ready

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
