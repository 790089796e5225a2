"""What the operator does for one ModelBackend: reconcile, refresh its status, scale it.

Every entry point reads the ModelBackend and its Deployment fresh and holds the backend's
lock while it writes, so the kopf handlers, the Deployment watch and the scaling pass never
interleave their writes for one backend. Everything is idempotent: running any of these
again (a replayed watch event, a restart half-way) converges on the same objects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import kopf
import structlog
from pydantic import ValidationError

from switchyard.operator import children as rendering
from switchyard.operator import naming
from switchyard.operator.api import ModelBackendSpec
from switchyard.operator.claims import Claims
from switchyard.operator.kube import Kube
from switchyard.operator.load import BackendRef, LoadSource
from switchyard.operator.scaling import Decision, Load, Policy, decide
from switchyard.operator.settings import OperatorSettings
from switchyard.operator.status import (
    ScalingView,
    WakeView,
    backend_status,
    changed,
    not_served,
    observe,
    parse_rfc3339,
)

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
Clock = Callable[[], float]


class EventSink(Protocol):
    async def event(self, obj: Obj, *, warning: bool, reason: str, message: str) -> None: ...


class ApiEvents:
    """Kubernetes Events, posted through the API; a failure to post is logged, not raised."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def event(self, obj: Obj, *, warning: bool, reason: str, message: str) -> None:
        try:
            await self._kube.post_event(obj, warning=warning, reason=reason, message=message)
        except Exception as error:  # an event is worth less than the work it reports
            log.warning("event_failed", reason=reason, error=repr(error))


class KeyedLocks:
    """One asyncio.Lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass
class Deps:
    """What the handlers need; tests swap the load source, the clock and the events."""

    settings: OperatorSettings
    kube: Kube
    load: LoadSource
    clock: Clock
    events: EventSink
    locks: KeyedLocks = field(default_factory=KeyedLocks)


class InvalidSpec(Exception):
    """The spec cannot be served; reported in status and events, not retried."""


def describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"spec.{where}: {message}" if where else f"spec: {message}")
    return "; ".join(parts)


def parse_spec(backend: Obj) -> ModelBackendSpec:
    try:
        return ModelBackendSpec.model_validate(backend.get("spec") or {})
    except ValidationError as error:
        raise InvalidSpec(describe(error)) from None


def _demanded_at(backend: Obj) -> float | None:
    annotations = (backend.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(naming.DEMAND_ANNOTATION)
    return parse_rfc3339(raw) if isinstance(raw, str) else None


def _replicas(deployment: Obj) -> int:
    return int((deployment.get("spec") or {}).get("replicas", 1))


def _deleting(backend: Obj) -> bool:
    return bool((backend.get("metadata") or {}).get("deletionTimestamp"))


def _condition(status: Obj, type_: str) -> Obj:
    found = [c for c in status.get("conditions") or () if c.get("type") == type_]
    return found[0] if found else {}


def _reconcile_pending(backend: Obj) -> bool:
    """Whether the spec changed since the last reconcile (whose status write is to come)."""
    generation = (backend.get("metadata") or {}).get("generation")
    return generation != (backend.get("status") or {}).get("observedGeneration")


class Backend:
    """Operations on one ModelBackend, each under the backend's lock."""

    def __init__(self, deps: Deps, ref: BackendRef) -> None:
        self.deps = deps
        self.ref = ref

    async def reconcile(self) -> None:
        """Create or update the children, then the status. Raises InvalidSpec."""
        async with self.deps.locks.hold(self.ref):
            backend = await self.deps.kube.get_backend(self.ref.namespace, self.ref.name)
            if backend is None or _deleting(backend):
                return
            await self._reconcile(backend)

    async def refresh_status(self) -> None:
        """Recompute the status from the Deployment (recreating it if it was deleted)."""
        async with self.deps.locks.hold(self.ref):
            backend = await self.deps.kube.get_backend(self.ref.namespace, self.ref.name)
            if backend is None or _deleting(backend):
                return
            deployment = await self.deps.kube.get_deployment(self.ref.namespace, self.ref.name)
            if deployment is None:
                log.info("deployment_missing", namespace=self.ref.namespace, name=self.ref.name)
                await self._reconcile(backend)
                return
            if _reconcile_pending(backend):
                return  # the reconcile handler publishes the status of the new spec
            try:
                spec = parse_spec(backend)
            except InvalidSpec:
                return  # reported by the reconcile handler
            view = ScalingView.from_status(backend.get("status") or {})
            await self._write_status(
                backend, spec, deployment, view, await self._claims(), reconciled=False
            )

    async def scale(self, claims: Claims | None = None) -> Decision | None:
        """Read the load, decide, move the replicas; None when there was nothing to scale.
        `claims`: the scaling pass's view of every backend's names (else listed here)."""
        load = await self.deps.load.read(self.ref)
        async with self.deps.locks.hold(self.ref):
            backend = await self.deps.kube.get_backend(self.ref.namespace, self.ref.name)
            if backend is None or _deleting(backend) or _reconcile_pending(backend):
                return None
            try:
                spec = parse_spec(backend)
            except InvalidSpec:
                return None
            deployment = await self.deps.kube.get_deployment(self.ref.namespace, self.ref.name)
            if deployment is None:
                return None  # not created yet (or being recreated): the handlers' job
            view = ScalingView.from_status(backend.get("status") or {})
            current = _replicas(deployment)
            decision = decide(
                Policy.from_spec(spec.scaling),
                current=current,
                load=load,
                demanded_at=_demanded_at(backend),
                pending=view.pending,
                now=self.deps.clock(),
            )
            if decision.desired != current:
                deployment = await self.deps.kube.scale(
                    self.ref.namespace, self.ref.name, decision.desired
                )
                await self._scaled_event(backend, current, decision, load)
            await self._write_status(
                backend,
                spec,
                deployment,
                ScalingView(decision.demand, decision.pending),
                claims or await self._claims(),
                reconciled=False,
                woke=current == 0 and decision.desired > 0,
            )
            return decision

    async def _reconcile(self, backend: Obj) -> None:
        ns, name = self.ref.namespace, self.ref.name
        status = backend.get("status") or {}
        try:
            spec = parse_spec(backend)
        except InvalidSpec as error:
            await self._write_invalid(backend, str(error))
            raise
        existing = await self.deps.kube.get_deployment(ns, name)
        view = ScalingView.from_status(status)
        current = _replicas(existing) if existing else 0
        decision = decide(
            Policy.from_spec(spec.scaling),
            current=current,
            load=None if existing else Load(in_flight=0, reporting=0),
            demanded_at=_demanded_at(backend),
            pending=view.pending,
            now=self.deps.clock(),
        )
        objs = rendering.render(name, ns, spec, self.deps.settings, decision.desired)
        kopf.adopt(objs.all(), owner=kopf.Body(cast(kopf.RawBody, backend)))
        deployment = await self.deps.kube.apply(objs.deployment)
        await self.deps.kube.apply(objs.service)
        await self.deps.kube.apply(objs.pdb)
        if existing is None:
            await self.deps.events.event(
                backend,
                warning=False,
                reason="Created",
                message=f"created Deployment {name}, Service {naming.service_name(name)} "
                f"and PodDisruptionBudget {naming.pdb_name(name)}",
            )
        else:
            old_hash = ((existing.get("metadata") or {}).get("annotations") or {}).get(
                naming.TEMPLATE_HASH_ANNOTATION
            )
            new_hash = objs.deployment["metadata"]["annotations"][naming.TEMPLATE_HASH_ANNOTATION]
            if old_hash != new_hash:
                await self.deps.events.event(
                    backend,
                    warning=False,
                    reason="RollingOut",
                    message=f"the pod template changed: rolling out Deployment {name}",
                )
            if decision.desired != current:
                await self._scaled_event(backend, current, decision, None)
        log.info(
            "reconciled", namespace=ns, name=name, engine=spec.engine, replicas=decision.desired
        )
        await self._write_status(
            backend,
            spec,
            deployment,
            ScalingView(view.demand, decision.pending),
            await self._claims(),
            reconciled=True,
            woke=existing is not None and current == 0 and decision.desired > 0,
        )

    async def _scaled_event(
        self, backend: Obj, current: int, decision: Decision, load: Load | None
    ) -> None:
        why = (
            f"{load.in_flight} requests in flight" if load is not None else "spec or demand signal"
        )
        message = (
            f"scaled Deployment {self.ref.name} from {current} to {decision.desired} replicas "
            f"({why}; demand {decision.demand}, recommended {decision.recommended})"
        )
        await self.deps.events.event(
            backend, warning=False, reason=decision.reason, message=message
        )
        log.info(
            "scaled",
            namespace=self.ref.namespace,
            name=self.ref.name,
            replicas=decision.desired,
            previous=current,
            demand=decision.demand,
        )

    async def _write_status(
        self,
        backend: Obj,
        spec: ModelBackendSpec,
        deployment: Obj,
        view: ScalingView,
        claims: Claims,
        *,
        reconciled: bool,
        woke: bool = False,
    ) -> None:
        """Publish the status; only a reconcile, which applied this spec to the children,
        moves observedGeneration forward. `woke`: this call scaled up from zero replicas."""
        previous = backend.get("status") or {}
        generation = (
            (backend.get("metadata") or {}).get("generation")
            if reconciled
            else previous.get("observedGeneration")
        )
        now = self.deps.clock()
        served = claims.verdict(backend)
        patch = backend_status(
            name=self.ref.name,
            namespace=self.ref.namespace,
            generation=generation,
            spec=spec,
            deployment=deployment,
            scaling=view,
            previous=previous,
            now=now,
            served=served,
            wake=WakeView.from_status(previous).started(now) if woke else None,
        )
        message = not_served(observe(deployment), served).message
        await self._publish(backend, previous, patch, message)

    async def _write_invalid(self, backend: Obj, message: str) -> None:
        previous = backend.get("status") or {}
        patch = backend_status(
            name=self.ref.name,
            namespace=self.ref.namespace,
            generation=(backend.get("metadata") or {}).get("generation"),
            spec=None,
            deployment=None,
            scaling=ScalingView.from_status(previous),
            previous=previous,
            now=self.deps.clock(),
            invalid=message,
        )
        if changed(patch, previous):
            await self.deps.events.event(
                backend, warning=True, reason="InvalidSpec", message=message
            )
            await self.deps.kube.patch_backend_status(self.ref.namespace, self.ref.name, patch)

    async def _claims(self) -> Claims:
        """Who serves which model name, from every backend the operator can see."""
        settings = self.deps.settings
        backends = await self.deps.kube.list_backends(settings.namespaces)
        return Claims.of(backends, settings.served_namespaces)

    async def _publish(self, backend: Obj, previous: Obj, patch: Obj, message: str) -> None:
        if not changed(patch, previous):
            return
        await self.deps.kube.patch_backend_status(self.ref.namespace, self.ref.name, patch)
        await self._served_event(backend, previous, patch)
        phase = patch["phase"]
        if phase != previous.get("phase") and phase != "NotServed":  # said by _served_event
            await self.deps.events.event(
                backend, warning=phase in ("Degraded", "Failed"), reason=phase, message=message
            )
            log.info(
                "phase", namespace=self.ref.namespace, name=self.ref.name, phase=phase,
                previous=previous.get("phase"),
            )  # fmt: skip

    async def _served_event(self, backend: Obj, previous: Obj, patch: Obj) -> None:
        """One event when the edge stops serving this backend's names (and why), one when it
        serves them again; nothing while it stays the same."""
        now, before = _condition(patch, "Served"), _condition(previous, "Served")
        if not now or now.get("status") == before.get("status"):
            return
        if now["status"] == "False":
            await self.deps.events.event(
                backend, warning=True, reason=now["reason"], message=now["message"]
            )
            log.warning(
                "not_served", namespace=self.ref.namespace, name=self.ref.name,
                reason=now["reason"], message=now["message"],
            )  # fmt: skip
        elif before:
            await self.deps.events.event(
                backend, warning=False, reason="Served", message=now["message"]
            )
