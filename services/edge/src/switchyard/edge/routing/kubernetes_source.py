"""Routes from the cluster: `ModelBackend` objects and the EndpointSlices of their adapters.

Each ModelBackend (switchyard.dev/v1alpha1) is one route: its served name and aliases, its
engine, its routing policy (spec.routing.policy). Its endpoints are the ready addresses in
the EndpointSlices of its adapter Service (labelled `switchyard.dev/model-backend=<name>` by
the operator, labels the EndpointSlice controller copies from the Service), on the port
named `grpc`: pod IPs, so the edge picks among replicas itself (by load, or by the key of
its policy) instead of hiding them behind a Service address.

A backend with no ready endpoint is a *waking* route (scaled to zero, or loading): the edge
holds its requests (`switchyard.edge.holding`; or answers 503 with Retry-After when holding
is off or full) and signals demand by stamping the annotation `switchyard.dev/demanded-at`
on the ModelBackend, which the operator reads to scale up: at most once per interval per
process, and once across edge replicas (`routing.wake`). The route carries the operator's
measure of the backend's wakes (status.lastWakeSeconds, status.wakingSince), so
Retry-After says how long the wake should still take.

A model name (served name or alias) belongs to the first ModelBackend that claimed it:
earliest metadata.creationTimestamp, ties broken by (namespace, name); a backend with any
name already taken is not routed at all. The operator applies the same rule
(`switchyard.operator.claims`) and says in the loser's status why it is not served; here a
conflict is logged once when it appears and once when it is resolved. With a namespace set,
only that namespace's backends serve names.

Both kinds are followed like an informer: list for a snapshot, watch from its resource
version, and on any failure list again and replace the state wholesale (so nothing deleted
during a gap lingers). Permissions: get/list/watch/patch on modelbackends (patch only for
the demand annotation), list/watch on endpointslices.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
import structlog
from lightkube import ALL_NS, AsyncClient, NotReadyError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from switchyard.edge import metrics
from switchyard.edge.routing.table import POLICIES, Policy, Route, RouteTable
from switchyard.edge.routing.wake import WakeSignals
from switchyard.engines import ENGINES

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
class BackendClaim:
    """What the edge reads of a ModelBackend: the names it claims and how to route them."""

    served: str
    engine: str
    aliases: tuple[str, ...]
    #: metadata.creationTimestamp (epoch seconds; unknown: after every known one).
    created: float = math.inf
    last_wake_s: int | None = None
    waking_since: float | None = None
    #: The demand annotation's time (epoch seconds): when some edge last asked for a replica.
    demanded_at: float | None = None
    #: spec.routing.policy: how the edge picks among the backend's replicas.
    policy: Policy = "load"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.served, *self.aliases)


def _epoch(raw: object) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def backend_of(obj: Any) -> BackendClaim | None:
    raw = obj if isinstance(obj, dict) else obj.to_dict()
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    engine = spec.get("engine")
    if not isinstance(engine, str) or engine not in ENGINES or meta.get("deletionTimestamp"):
        return None
    served = spec.get("servedModelName") or meta["name"]
    aliases = tuple(a for a in dict.fromkeys(spec.get("aliases") or ()) if a != served)
    created = meta.get("creationTimestamp")
    if isinstance(created, dt.datetime):  # lightkube parses it
        created = created.isoformat()
    last_wake = status.get("lastWakeSeconds")
    return BackendClaim(
        served,
        engine,
        aliases,
        created=_epoch(created) or math.inf,
        last_wake_s=last_wake if isinstance(last_wake, int) else None,
        waking_since=_epoch(status.get("wakingSince")),
        demanded_at=_epoch((meta.get("annotations") or {}).get(DEMAND_ANNOTATION)),
        policy=_policy((spec.get("routing") or {}).get("policy")),
    )


def _policy(raw: object) -> Policy:
    """The backend's routing policy; one this edge does not know (the CRD's enum forbids it,
    a newer operator's may not) routes by load."""
    for policy in POLICIES:
        if raw == policy:
            return policy
    return "load"


Conflicts = dict[Key, tuple[str, Key]]  # a backend left out → (a name of its, that name's owner)


def assign_names(backends: Mapping[Key, BackendClaim]) -> tuple[dict[str, Key], Conflicts]:
    """Who serves each name: the first claimant keeps it (earliest creation, then namespace
    and name); a backend with any name taken is left out whole. The operator's rule too."""
    owners: dict[str, Key] = {}
    conflicts: Conflicts = {}
    for key in sorted(backends, key=lambda k: (backends[k].created, *k)):
        names = backends[key].names
        taken = [n for n in names if n in owners]
        if taken:
            conflicts[key] = (taken[0], owners[taken[0]])
        else:
            owners.update(dict.fromkeys(names, key))
    return owners, conflicts


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
        wake: WakeSignals | None = None,
    ) -> None:
        self._client = client
        self._on_change = on_change
        self._namespace = namespace or ALL_NS
        self._demand_interval_s = demand_interval_s
        self._wake = wake or WakeSignals(demand_interval_s)
        self._backends: dict[Key, BackendClaim] = {}
        self._slices: dict[Key, tuple[Key, frozenset[str]]] = {}  # slice → (its backend, addresses)
        self._by_route: dict[str, Key] = {}
        #: Backends not routed because a name of theirs is taken: (the name, its owner).
        self._conflicts: Conflicts = {}
        self._demanded: dict[Key, float] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.table = RouteTable()
        self.synced = asyncio.Event()
        self._synced_kinds: set[str] = set()

    async def run(self) -> None:
        """Follow both kinds until cancelled."""
        try:
            await self._follow_both()
        finally:
            await self._wake.close()

    async def _follow_both(self) -> None:
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
            k: b for obj in objs if (b := backend_of(obj)) is not None for k in [_key(obj)]
        }
        self._publish()

    def _backend_event(self, op: str, obj: Any) -> None:
        key = _key(obj)
        backend = None if op == "DELETED" else backend_of(obj)
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
        by_route: dict[str, Key] = {}
        _, conflicts = assign_names(self._backends)
        for key, backend in sorted(self._backends.items()):
            if key in conflicts:
                continue
            ready = tuple(sorted(endpoints.get(key, ())))
            routes.append(
                Route(
                    backend.served,
                    backend.engine,
                    ready,
                    backend.aliases,
                    waking=not ready,
                    last_wake_s=backend.last_wake_s,
                    waking_since=backend.waking_since,
                    policy=backend.policy,
                )
            )
            by_route[backend.served] = key
        self._log_conflicts(conflicts)
        table = RouteTable(routes)
        self._by_route = by_route
        self._demanded = {k: t for k, t in self._demanded.items() if k in self._backends}
        if table != self.table:
            self.table = table
            self._on_change(table)

    def _log_conflicts(self, conflicts: Conflicts) -> None:
        """Once when a conflict appears (or changes), once when it is gone: not per publish."""
        for key, (name, owner) in conflicts.items():
            if self._conflicts.get(key) != (name, owner):
                log.warning(
                    "model_name_conflict",
                    backend=f"{key[0]}/{key[1]}",
                    name=name,
                    served_by=f"{owner[0]}/{owner[1]}",
                )
        for key in self._conflicts.keys() - conflicts.keys():
            log.info("model_name_conflict_resolved", backend=f"{key[0]}/{key[1]}")
        self._conflicts = conflicts

    # -- demand ---------------------------------------------------------------------------

    def demand(self, route: Route) -> None:
        """A request found no ready replica: ask for one (at most once per interval per
        backend in this process, and once across edge replicas: `WakeSignals`)."""
        key = self._by_route.get(route.name)
        now = time.monotonic()
        if key is None or now - self._demanded.get(key, -1e9) < self._demand_interval_s:
            return
        self._demanded[key] = now
        task = asyncio.create_task(self._annotate(key, route.name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _annotate(self, key: Key, model: str) -> None:
        backend = self._backends.get(key)
        if not await self._wake.first(key, backend.demanded_at if backend else None):
            log.info("demand_coalesced", backend=f"{key[0]}/{key[1]}")
            return
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        patch = {"metadata": {"annotations": {DEMAND_ANNOTATION: stamp}}}
        try:
            await self._client.patch(
                ModelBackend, key[1], patch, namespace=key[0], patch_type=PatchType.MERGE
            )
        except (httpx2.HTTPError, OSError) as exc:  # ApiError is an httpx2.HTTPStatusError
            log.warning("demand_signal_failed", backend=f"{key[0]}/{key[1]}", error=repr(exc))
            self._demanded.pop(key, None)  # let the next request try again
            await self._wake.forget(key)
        else:
            metrics.WAKES.labels(model).inc()
            log.info("demand_signalled", backend=f"{key[0]}/{key[1]}")
