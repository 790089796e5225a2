"""Adapter endpoints: one gRPC channel each, their health, and the choice of one per request.

Whether an endpoint may be picked rests on two kinds of evidence:

- Its adapter's word, the standard `grpc.health.v1` Watch stream, on which the adapter
  pushes every change (NOT_SERVING while its engine loads or cannot generate, or on
  SIGTERM). It is authoritative: a NOT_SERVING endpoint is never picked. When the stream
  breaks (a transport error: a lost connection, a GOAWAY) it is opened again at once,
  keeping the last status, since one broken connection says nothing about the adapter;
  only when that fails too is the endpoint taken as not serving, and watched again with
  backoff. A call that finds the adapter unreachable cuts that backoff short.
- Its calls, as Envoy's outlier detection judges them: `failure_threshold` consecutive
  calls failing with UNAVAILABLE eject the endpoint for `ejection_s` times the number of
  its recent ejections (at most `max_ejection_s`). It comes back on evidence: the
  ejection expires, its adapter says SERVING again, or a call to it succeeds. When every
  serving endpoint of a model is ejected they are picked anyway (Envoy's panic mode):
  ejection steers traffic between endpoints, it never takes a model offline.

Choice is power of two choices on the requests this process has in flight to each one;
for a request with an affinity key (a route with policy `prefix` or `session`), the
endpoint the key hashes to, within bounded loads (`routing.affinity`).

Keepalive: the edge pings every adapter connection every `keepalive_s` while calls are
open (the health watch always is one), so a vanished adapter is found within seconds. An
adapter accepts pings at most every ADAPTER_KEEPALIVE_MIN_PING_INTERVAL_S and answers
faster ones with GOAWAY "too_many_pings", so that setting must stay at or below
EDGE_ADAPTER_KEEPALIVE_S (the defaults: 5 s and 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter

from switchyard.edge.routing.affinity import Rings, choose
from switchyard.edge.routing.table import Route, RouteTable
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from switchyard.servicekit.grpc_tracing import call_metadata, client_interceptors
from switchyard.servicekit.telemetry import tracing_mode

if TYPE_CHECKING:
    from switchyard.edge.settings import EdgeSettings
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub

log = structlog.get_logger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
#: Pauses between watches that fail before their first answer (the adapter is not there).
_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)

WATCH_LOSSES = Counter(
    "switchyard_edge_endpoint_watch_losses",
    "Health watches of adapter endpoints broken by a transport error (connection lost, GOAWAY).",
)
EJECTIONS = Counter(
    "switchyard_edge_endpoint_ejections",
    "Adapter endpoints ejected after consecutive calls failed with UNAVAILABLE.",
)

Clock = Callable[[], float]
Capability: TypeAlias = pb.Capability.ValueType
#: What a model serves when its adapter does not say: chat and completions.
GENERATION: frozenset[Capability] = frozenset({pb.CAPABILITY_CHAT, pb.CAPABILITY_COMPLETIONS})


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """How the edge keeps adapter connections alive, ejects endpoints and closes them."""

    keepalive_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    failure_threshold: int = 5
    ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    close_grace_s: float = 30.0
    #: Bounded loads' c: an endpoint takes its keys while below c * the mean in flight.
    load_factor: float = 1.25

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> EndpointPolicy:
        return cls(
            keepalive_s=settings.adapter_keepalive_s,
            keepalive_timeout_s=settings.adapter_keepalive_timeout_s,
            failure_threshold=settings.endpoint_failure_threshold,
            ejection_s=settings.endpoint_ejection_s,
            max_ejection_s=settings.endpoint_max_ejection_s,
            close_grace_s=settings.endpoint_close_grace_s,
            load_factor=settings.affinity_load_factor,
        )

    def channel_options(self) -> tuple[tuple[str, int], ...]:
        return (
            # Find dead connections (an adapter's node gone) within seconds, not minutes.
            ("grpc.keepalive_time_ms", _ms(self.keepalive_s)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout_s)),
            ("grpc.http2.max_pings_without_data", 0),
            # gRPC's reconnect backoff grows to 2 minutes; a restarted adapter must be found
            # as soon as the health watch looks again.
            ("grpc.max_reconnect_backoff_ms", _ms(_BACKOFF_S[-1])),
            ("grpc.enable_retries", 0),  # the edge retries itself, only before the first byte
        )


class Ejection:
    """Outlier detection for one endpoint: consecutive failed calls eject it for a while.

    The length grows with repeated ejections (Envoy's multiplier: one more per ejection,
    one less per `ejection_s` spent in service since the last one ended), up to
    `max_ejection_s`. `clock` is in seconds (monotonic); tests inject their own.
    """

    __slots__ = ("_clock", "_failures", "_policy", "_times", "until")

    def __init__(self, policy: EndpointPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._failures = 0
        self._times = 0
        #: The end of the current or last ejection (clock seconds).
        self.until = float("-inf")

    def active(self) -> bool:
        return self._clock() < self.until

    def failed(self) -> float | None:
        """One more failed call; the ejection's length when this one ejects the endpoint."""
        now = self._clock()
        if now < self.until:
            return None  # already out: a panic-mode call failing again is no news
        self._failures += 1
        if self._failures < self._policy.failure_threshold:
            return None
        self._failures = 0
        if self._times:  # one less for each ejection_s in service since the last one ended
            served = now - self.until
            self._times = max(self._times - int(served // self._policy.ejection_s), 0)
        self._times += 1
        length = min(self._policy.ejection_s * self._times, self._policy.max_ejection_s)
        self.until = now + length
        return length

    def succeeded(self) -> bool:
        """A call worked, or the adapter said SERVING: the endpoint is back (True if it was out)."""
        self._failures = 0
        now = self._clock()
        if now < self.until:
            self.until = now
            return True
        return False


class Endpoint:
    """One adapter. `in_flight` counts this process's requests to it."""

    __slots__ = (
        "_rewatch",
        "_watch",
        "address",
        "capabilities",
        "channel",
        "ejection",
        "embedding_dimensions",
        "identity",
        "in_flight",
        "max_model_len",
        "on_change",
        "serving",
        "stub",
        "tracing",
    )

    def __init__(self, address: str, policy: EndpointPolicy, clock: Clock = time.monotonic) -> None:
        self.address = address
        #: Called when the endpoint starts or stops serving (the held requests wait on it).
        self.on_change: Callable[[], None] | None = None
        mode = tracing_mode()
        self.channel = grpc.aio.insecure_channel(
            address,
            options=policy.channel_options(),
            interceptors=client_interceptors(address, mode=mode),
        )
        self.tracing = mode
        self.stub: InferenceServiceAsyncStub = pb_grpc.InferenceServiceStub(self.channel)
        #: What the adapter's health watch said last (False until it has said anything).
        self.serving = False
        self.ejection = Ejection(policy, clock)
        self.in_flight = 0
        #: What the adapter's ListModels said, once it first served (see `_describe`).
        self.max_model_len = 0
        self.capabilities: frozenset[Capability] = frozenset()
        self.embedding_dimensions = 0
        self.identity = ""
        self._rewatch = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    def call_metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The metadata of a call to this endpoint: its trace context, unless an
        interceptor adds it (spans exported) or tracing is off."""
        return call_metadata(self.tracing)

    @property
    def ejected(self) -> bool:
        return self.ejection.active()

    def start(self) -> None:
        self._watch = asyncio.create_task(self._follow_health(), name=f"health {self.address}")

    async def _follow_health(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        failed = 0  # watches in a row that ended before their first answer
        while True:
            answered = False
            try:
                async for update in health.Watch(request):
                    answered = True
                    self._rewatch.clear()
                    await self._set_serving(update.status == _SERVING)
            except grpc.aio.AioRpcError as exc:
                if answered:
                    WATCH_LOSSES.inc()
                    log.warning(
                        "endpoint_watch_lost",
                        endpoint=self.address,
                        code=exc.code().name,
                        details=exc.details(),
                    )
            if answered:
                failed = 0
                continue  # watch again at once, keeping the last status
            # Not even one answer (the first watch, or the one right after a loss): the
            # adapter cannot be reached now.
            failed += 1
            await self._set_serving(False)
            await self._pause(_BACKOFF_S[min(failed - 1, len(_BACKOFF_S) - 1)])

    async def _pause(self, seconds: float) -> None:
        """Wait before watching again; a call that found the adapter unreachable ends it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._rewatch.wait()
        self._rewatch.clear()

    async def _describe(self) -> None:
        """What the adapter serves: its model's context length, capabilities and identity."""
        with contextlib.suppress(grpc.aio.AioRpcError):
            models = await self.stub.ListModels(pb.ListModelsRequest(), timeout=5)
            if not models.models:
                return
            model = models.models[0]  # an adapter serves one model (under its served name)
            self.max_model_len = model.max_model_len
            # An adapter from before capabilities: a generation model.
            self.capabilities = frozenset(model.capabilities) or GENERATION
            self.embedding_dimensions = model.embedding_dimensions
            self.identity = model.identity

    async def _set_serving(self, serving: bool) -> None:
        if serving and (not self.serving or not self.capabilities):
            # Again at every return to service: a restarted adapter may serve new weights.
            await self._describe()
        if serving != self.serving:
            if serving:
                log.info("endpoint_serving", endpoint=self.address)
            else:
                log.warning("endpoint_not_serving", endpoint=self.address)
        changed, self.serving = serving != self.serving, serving
        if changed and self.on_change is not None:
            self.on_change()
        if serving and self.ejection.succeeded():
            log.info("endpoint_returned", endpoint=self.address, evidence="health")

    def call_failed(self) -> None:
        """A call found the adapter (or its engine) unreachable: UNAVAILABLE.

        One such call is not enough to stop picking the endpoint (see `Ejection`), but it
        is a reason to look at its health again now rather than after a backoff.
        """
        self._rewatch.set()
        length = self.ejection.failed()
        if length is not None:
            EJECTIONS.inc()
            log.warning("endpoint_ejected", endpoint=self.address, seconds=length)

    def call_succeeded(self) -> None:
        """A call got its answer (its first message, for a stream)."""
        if self.ejection.succeeded():
            log.info("endpoint_returned", endpoint=self.address, evidence="call")

    async def close(self, grace_s: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.channel.close(grace_s)


class EndpointPool:
    """All adapter endpoints of the current route table."""

    def __init__(self, policy: EndpointPolicy | None = None, clock: Clock = time.monotonic) -> None:
        self._policy = policy or EndpointPolicy()
        self._clock = clock
        self._endpoints: dict[str, Endpoint] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._random = random.Random()
        self._rings = Rings()
        #: Called when an endpoint starts or stops serving (`EdgeState` wakes held requests).
        self.on_change: Callable[[], None] = lambda: None

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> EndpointPool:
        return cls(EndpointPolicy.from_settings(settings))

    def sync(self, table: RouteTable) -> None:
        """Open endpoints new in `table`; close (gracefully) those no longer in it."""
        wanted = table.endpoints
        for address in wanted - self._endpoints.keys():
            endpoint = Endpoint(address, self._policy, self._clock)
            endpoint.on_change = self._endpoint_changed
            self._endpoints[address] = endpoint
            endpoint.start()
        for address in self._endpoints.keys() - wanted:
            closing = self._endpoints.pop(address).close(self._policy.close_grace_s)
            task = asyncio.create_task(closing)
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _endpoint_changed(self) -> None:
        self.on_change()

    def get(self, address: str) -> Endpoint | None:
        return self._endpoints.get(address)

    def healthy(self, route: Route) -> list[Endpoint]:
        """The endpoints of `route` whose adapter says SERVING, ejected ones included (a
        model is ready while any of them is: `pick` falls back to ejected ones)."""
        found = (self._endpoints.get(a) for a in route.endpoints)
        return [e for e in found if e is not None and e.serving]

    def pick(
        self,
        route: Route,
        exclude: frozenset[str] | set[str] = frozenset(),
        key: int | None = None,
    ) -> Endpoint | None:
        """A serving endpoint of `route`, not in `exclude`, among those not ejected, or among
        the ejected ones when no other is left: with an affinity `key`, the one the key hashes
        to on the ring of the route's serving endpoints, within bounded loads; without, the
        less busy of two picked at random."""
        healthy = self.healthy(route)
        serving = [e for e in healthy if e.address not in exclude]
        candidates = [e for e in serving if not e.ejected] or serving
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        if key is not None:
            # The ring of every serving endpoint (the tried and ejected ones skipped on it),
            # so a retry or an ejection moves only the keys that must move.
            ring = self._rings.get(frozenset(e.address for e in healthy))
            loads = {e.address: e.in_flight for e in candidates}
            chosen = choose(ring, key, loads, self._policy.load_factor)
            return next(e for e in candidates if e.address == chosen)
        a, b = self._random.sample(candidates, 2)
        return a if a.in_flight <= b.in_flight else b

    def max_model_len(self, route: Route) -> int:
        return max((e.max_model_len for e in self.healthy(route)), default=0)

    def capabilities(self, route: Route) -> frozenset[Capability] | None:
        """What `route`'s serving endpoints can do (all of them: a rollout from a chat model
        to an embedding model under one name serves only what both serve); None while no
        serving endpoint has described itself."""
        described = [e.capabilities for e in self.healthy(route) if e.capabilities]
        return frozenset.intersection(*described) if described else None

    def identity(self, route: Route) -> str | None:
        """The identity of the weights every serving endpoint of `route` serves; None when
        unknown or when they differ (a rollout under way): nothing is cached then."""
        identities = {e.identity for e in self.healthy(route)}
        if len(identities) != 1:
            return None
        (identity,) = identities
        return identity or None

    async def aclose(self) -> None:
        endpoints = list(self._endpoints.values())
        self._endpoints.clear()
        await asyncio.gather(
            *(e.close(0) for e in endpoints), *self._closing, return_exceptions=True
        )
