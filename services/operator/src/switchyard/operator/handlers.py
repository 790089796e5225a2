"""The kopf handlers: thin, typed wrappers around `reconcile.Backend`.

- ModelBackend created, changed (spec, labels or the edge's demand annotation) or found at
  start-up: reconcile its children and status.
- A managed Deployment changed (its status, mostly) or vanished: refresh the owner's status
  (and recreate the Deployment if the owner still exists).
- Start-up and clean-up: start and stop the scaling timer (`scaler.Scaler`).

Return values are never used: handlers write the status themselves. Transient API errors
become `kopf.TemporaryError` (kopf retries after a delay); an invalid spec becomes a
`kopf.PermanentError` after it is reported in the status and as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf
import structlog

from switchyard.operator import api, naming
from switchyard.operator.kube import is_transient
from switchyard.operator.load import BackendRef
from switchyard.operator.reconcile import Backend, Deps, InvalidSpec
from switchyard.operator.scaler import Scaler
from switchyard.operator.tracing import backend_span

log = structlog.get_logger(__name__)


def owner_of(deployment: kopf.Body) -> str | None:
    """The ModelBackend that controls a Deployment, from its owner references."""
    for ref in deployment.metadata.get("ownerReferences") or ():
        if ref.get("kind") == api.KIND and ref.get("apiVersion") == api.API_VERSION:
            name = ref.get("name")
            return str(name) if name else None
    return None


def register(registry: kopf.OperatorRegistry, deps: Deps) -> None:
    """Register the operator's handlers in `registry`, bound to `deps`."""
    tasks: list[asyncio.Task[None]] = []
    retry = deps.settings.retry_delay_s

    @kopf.on.startup(registry=registry)
    async def start_scaler(**_: Any) -> None:
        tasks.append(asyncio.create_task(Scaler(deps).run(), name="scaler"))

    @kopf.on.cleanup(registry=registry)
    async def stop_scaler(**_: Any) -> None:
        while tasks:
            task = tasks.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @kopf.on.create(api.GROUP, api.VERSION, api.PLURAL, registry=registry, backoff=retry)
    @kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, registry=registry, backoff=retry)
    @kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL, registry=registry, backoff=retry)
    async def reconcile_backend(name: str | None, namespace: str | None, **_: Any) -> None:
        if not name or not namespace:
            return
        ref = BackendRef(namespace, name)
        with backend_span("reconcile", ref):
            try:
                await Backend(deps, ref).reconcile()
            except InvalidSpec as error:
                raise kopf.PermanentError(f"invalid spec: {error}") from None
            except Exception as error:
                if is_transient(error):
                    raise kopf.TemporaryError(f"will retry: {error!r}", delay=retry) from error
                raise

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={naming.LABEL_MANAGED_BY: naming.MANAGED_BY},
        registry=registry,
    )
    async def deployment_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
        owner = owner_of(body)
        if owner is None or not namespace:
            return
        try:
            await Backend(deps, BackendRef(namespace, owner)).refresh_status()
        except Exception as error:
            # Events are not retried; the next event or scaling pass catches up.
            log.warning("status_refresh_failed", namespace=namespace, name=owner, error=repr(error))
