"""Routes from the cluster: `ModelBackend` objects and the EndpointSlices of their adapters.

Each ModelBackend (switchyard.dev/v1alpha1) is one route: its served name and aliases, its
engine. Its endpoints are the ready addresses in the EndpointSlices of its adapter Service
(labelled `switchyard.dev/model-backend=<name>` by the operator, labels the EndpointSlice
controller copies from the Service), on the port named `grpc`: pod IPs, so the edge picks
among replicas by load instead of hiding them behind a Service address.

A backend with no ready endpoint is a *waking* route (scaled to zero, or loading): the edge
answers 503 with Retry-After at once and signals demand by stamping the annotation
`switchyard.dev/demanded-at` on the ModelBackend, which the operator reads to scale up.

Both kinds are followed like an informer: list for a snapshot, watch from its resource
version, and on any failure list again and replace the state wholesale (so nothing deleted
during a gap lingers). Permissions: get/list/watch/patch on modelbackends (patch only for
the demand annotation), list/watch on endpointslices.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import structlog
from lightkube import ALL_NS, AsyncClient, NotReadyError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from switchyard.edge.routing.table import Route, RouteTable

log = structlog.get_logger(__name__)

ModelBackend = create_namespaced_resource(
    "switchyard.dev", "v1alpha1", "ModelBackend", "modelbackends"
)
BACKEND_LABEL = "switchyard.dev/model-backend"
DEMAND_ANNOTATION = "switchyard.dev/demanded-at"
ADAPTER_PORT_NAME = "grpc"
_RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)

Key = tuple[str, str]  # (namespace, name)
Labels = dict[str, Any] | None  # lightkube label selector: None value = "the label exists"


@dataclass(frozen=True, slots=True)
class _Backend:
    served: str
    engine: str
    aliases: tuple[str, ...]


def _backend(obj: Any) -> _Backend | None:
    raw = obj if isinstance(obj, dict) else obj.to_dict()
    spec = raw.get("spec") or {}
    engine = spec.get("engine")
    if engine not in ("vllm", "sglang", "tgi"):
        return None
    served = spec.get("servedModelName") or raw["metadata"]["name"]
    return _Backend(served, engine, tuple(spec.get("aliases") or ()))


def _ready_addresses(obj: Any) -> frozenset[str]:
    raw = obj if isinstance(obj, dict) else obj.to_dict()
    ports = [p.get("port") for p in raw.get("ports") or () if p.get("name") == ADAPTER_PORT_NAME]
    if not ports or ports[0] is None:
        return frozenset()
    port = ports[0]
    found = set()
    for endpoint in raw.get("endpoints") or ():
        # Absent `ready` means ready (the API's documented default).
        if (endpoint.get("conditions") or {}).get("ready") is False:
            continue
        for address in endpoint.get("addresses") or ():
            found.add(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    return frozenset(found)


def _key(obj: Any) -> Key:
    meta = obj.metadata
    return (meta.namespace or "", meta.name or "")


class KubernetesRoutes:
    def __init__(
        self,
        client: AsyncClient,
        on_change: Callable[[RouteTable], None],
        *,
        namespace: str | None = None,
        demand_interval_s: float = 10.0,
    ) -> None:
        self._client = client
        self._on_change = on_change
        self._namespace = namespace or ALL_NS
        self._demand_interval_s = demand_interval_s
        self._backends: dict[Key, _Backend] = {}
        self._slices: dict[Key, tuple[Key, frozenset[str]]] = {}  # slice → (its backend, addresses)
        self._by_route: dict[str, Key] = {}
        self._demanded: dict[Key, float] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.table = RouteTable()
        self.synced = asyncio.Event()
        self._synced_kinds: set[str] = set()

    async def run(self) -> None:
        """Follow both kinds until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(
                self._follow(
                    "backends", ModelBackend, None, self._reset_backends, self._backend_event
                )
            )
            group.create_task(
                self._follow(
                    "slices",
                    EndpointSlice,
                    {BACKEND_LABEL: None},
                    self._reset_slices,
                    self._slice_event,
                )
            )

    # -- following one kind ---------------------------------------------------------------

    async def _follow(
        self,
        kind: str,
        resource: Any,
        labels: Labels,
        reset: Callable[[list[Any]], None],
        event: Callable[[str, Any], None],
    ) -> None:
        failures = 0
        while True:
            try:
                listing = self._client.list(resource, namespace=self._namespace, labels=labels)
                reset([obj async for obj in listing])
                try:
                    version: str | None = listing.resourceVersion
                except NotReadyError:
                    version = None
                self._mark_synced(kind)
                failures = 0
                async for op, obj in self._watch(resource, labels, version):
                    event(op, obj)
            except Exception as exc:  # any failure (API, network, a closed watch): list again
                delay = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                failures += 1
                log.warning("kubernetes_watch_failed", kind=kind, error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    def _watch(
        self, resource: Any, labels: Labels, version: str | None
    ) -> AsyncIterable[tuple[str, Any]]:
        watch: AsyncIterable[tuple[str, Any]] = self._client.watch(
            resource, namespace=self._namespace, labels=labels, resource_version=version
        )
        return watch

    def _mark_synced(self, kind: str) -> None:
        self._synced_kinds.add(kind)
        if self._synced_kinds == {"backends", "slices"}:
            self.synced.set()

    # -- state ----------------------------------------------------------------------------

    def _reset_backends(self, objs: list[Any]) -> None:
        self._backends = {
            k: b for obj in objs if (b := _backend(obj)) is not None for k in [_key(obj)]
        }
        self._publish()

    def _backend_event(self, op: str, obj: Any) -> None:
        key = _key(obj)
        backend = None if op == "DELETED" else _backend(obj)
        if backend is None:
            self._backends.pop(key, None)
        else:
            self._backends[key] = backend
        self._publish()

    def _slice_entry(self, obj: Any) -> tuple[Key, frozenset[str]] | None:
        labels = obj.metadata.labels or {}
        owner = labels.get(BACKEND_LABEL)
        if not owner:
            return None
        return ((obj.metadata.namespace or "", owner), _ready_addresses(obj))

    def _reset_slices(self, objs: list[Any]) -> None:
        self._slices = {
            _key(obj): entry for obj in objs if (entry := self._slice_entry(obj)) is not None
        }
        self._publish()

    def _slice_event(self, op: str, obj: Any) -> None:
        entry = None if op == "DELETED" else self._slice_entry(obj)
        if entry is None:
            self._slices.pop(_key(obj), None)
        else:
            self._slices[_key(obj)] = entry
        self._publish()

    def _publish(self) -> None:
        endpoints: dict[Key, set[str]] = {}
        for backend_key, addresses in self._slices.values():
            endpoints.setdefault(backend_key, set()).update(addresses)
        routes: list[Route] = []
        taken: set[str] = set()
        by_route: dict[str, Key] = {}
        for key in sorted(
            self._backends
        ):  # deterministic: the first in (namespace, name) order wins
            backend = self._backends[key]
            names = [backend.served, *backend.aliases]
            clash = [n for n in names if n in taken]
            if clash:
                log.error("model_name_clash", backend=f"{key[0]}/{key[1]}", names=clash)
                continue
            taken.update(names)
            ready = tuple(sorted(endpoints.get(key, ())))
            routes.append(
                Route(backend.served, backend.engine, ready, backend.aliases, waking=not ready)
            )
            by_route[backend.served] = key
        table = RouteTable(routes)
        self._by_route = by_route
        self._demanded = {k: t for k, t in self._demanded.items() if k in self._backends}
        if table != self.table:
            self.table = table
            self._on_change(table)

    # -- demand ---------------------------------------------------------------------------

    def demand(self, route: Route) -> None:
        """A request found no ready replica: ask for one (at most once per interval per backend)."""
        key = self._by_route.get(route.name)
        now = time.monotonic()
        if key is None or now - self._demanded.get(key, -1e9) < self._demand_interval_s:
            return
        self._demanded[key] = now
        task = asyncio.create_task(self._annotate(key))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _annotate(self, key: Key) -> None:
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        patch = {"metadata": {"annotations": {DEMAND_ANNOTATION: stamp}}}
        try:
            await self._client.patch(
                ModelBackend, key[1], patch, namespace=key[0], patch_type=PatchType.MERGE
            )
        except (httpx2.HTTPError, OSError) as exc:  # ApiError is an httpx2.HTTPStatusError
            log.warning("demand_signal_failed", backend=f"{key[0]}/{key[1]}", error=repr(exc))
            self._demanded.pop(key, None)  # let the next request try again
        else:
            log.info("demand_signalled", backend=f"{key[0]}/{key[1]}")
