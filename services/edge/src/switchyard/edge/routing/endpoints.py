"""Adapter endpoints: one gRPC channel each, their health, and the choice of one per request.

Health is followed with the standard `grpc.health.v1` Watch stream (the adapter pushes
changes, e.g. NOT_SERVING while its engine loads or on SIGTERM), so a dead or draining
adapter stops receiving requests at once. Choice is power of two choices on the requests
this process has in flight to each endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.common.grpc_tracing import client_interceptors
from switchyard.edge.routing.table import Route, RouteTable
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub

log = structlog.get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_CHANNEL_OPTIONS = (
    # Find dead connections (an adapter's node gone) within seconds, not minutes.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),  # the edge retries itself, only before the first byte
)
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class Endpoint:
    """One adapter. `in_flight` counts this process's requests to it."""

    __slots__ = ("_watch", "address", "channel", "healthy", "in_flight", "max_model_len", "stub")

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(
            address, options=_CHANNEL_OPTIONS, interceptors=client_interceptors(address)
        )
        self.stub: InferenceServiceAsyncStub = pb_grpc.InferenceServiceStub(self.channel)
        self.healthy = False
        self.in_flight = 0
        self.max_model_len = 0
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watch = asyncio.create_task(self._follow_health(), name=f"health {self.address}")

    async def _follow_health(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        failures = 0
        while True:
            try:
                async for update in health.Watch(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME)
                ):
                    failures = 0
                    await self._set_healthy(update.status == _SERVING)
            except grpc.aio.AioRpcError as exc:
                if self.healthy:
                    log.warning("endpoint_unreachable", endpoint=self.address, code=exc.code().name)
            self.healthy = False
            await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
            failures += 1

    async def _set_healthy(self, serving: bool) -> None:
        if serving and not self.max_model_len:
            with contextlib.suppress(grpc.aio.AioRpcError):
                models = await self.stub.ListModels(pb.ListModelsRequest(), timeout=5)
                self.max_model_len = max((m.max_model_len for m in models.models), default=0)
        if serving != self.healthy:
            log.info(
                "endpoint_serving" if serving else "endpoint_not_serving", endpoint=self.address
            )
        self.healthy = serving

    def unreachable(self) -> None:
        """A call found the adapter gone: stop picking it until its health stream says otherwise."""
        self.healthy = False

    async def close(self, grace_s: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.channel.close(grace_s)


class EndpointPool:
    """All adapter endpoints of the current route table."""

    def __init__(self, close_grace_s: float) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._close_grace_s = close_grace_s
        self._closing: set[asyncio.Task[None]] = set()
        self._random = random.Random()

    def sync(self, table: RouteTable) -> None:
        """Open endpoints new in `table`; close (gracefully) those no longer in it."""
        wanted = table.endpoints
        for address in wanted - self._endpoints.keys():
            endpoint = Endpoint(address)
            self._endpoints[address] = endpoint
            endpoint.start()
        for address in self._endpoints.keys() - wanted:
            task = asyncio.create_task(self._endpoints.pop(address).close(self._close_grace_s))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def get(self, address: str) -> Endpoint | None:
        return self._endpoints.get(address)

    def healthy(self, route: Route) -> list[Endpoint]:
        found = (self._endpoints.get(a) for a in route.endpoints)
        return [e for e in found if e is not None and e.healthy]

    def pick(
        self, route: Route, exclude: frozenset[str] | set[str] = frozenset()
    ) -> Endpoint | None:
        """A healthy endpoint of `route`, not in `exclude`: the less busy of two picked at random."""
        candidates = [e for e in self.healthy(route) if e.address not in exclude]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        a, b = self._random.sample(candidates, 2)
        return a if a.in_flight <= b.in_flight else b

    def max_model_len(self, route: Route) -> int:
        return max((e.max_model_len for e in self.healthy(route)), default=0)

    async def aclose(self) -> None:
        endpoints = list(self._endpoints.values())
        self._endpoints.clear()
        await asyncio.gather(
            *(e.close(0) for e in endpoints), *self._closing, return_exceptions=True
        )
