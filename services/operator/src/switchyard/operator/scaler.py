"""The scaling timer: every `scale_interval_s`, every ModelBackend is scaled once.

One operator-wide loop rather than a kopf timer per object: kopf puts a finalizer on every
object that has a timer, and a finalizer would block the deletion of a ModelBackend (and of
its namespace) whenever the operator is not running. Owner references clean up everything
this operator creates, so it needs no finalizer at all.
"""

from __future__ import annotations

import asyncio

import structlog

from switchyard.operator.claims import Claims
from switchyard.operator.load import BackendRef
from switchyard.operator.reconcile import Backend, Deps
from switchyard.operator.tracing import backend_span, record_decision, record_failure

log = structlog.get_logger(__name__)


class Scaler:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._limit = asyncio.Semaphore(deps.settings.scale_concurrency)

    async def run(self) -> None:
        """Scale every backend, then sleep; until cancelled."""
        while True:
            await self.scale_all()
            await asyncio.sleep(self._deps.settings.scale_interval_s)

    async def scale_all(self) -> None:
        try:
            backends = await self._deps.kube.list_backends(self._deps.settings.namespaces)
        except Exception as error:  # the API is down: try again next time
            log.warning("list_backends_failed", error=repr(error))
            return
        refs = [
            BackendRef(b["metadata"]["namespace"], b["metadata"]["name"])
            for b in backends
            if not (b.get("metadata") or {}).get("deletionTimestamp")
        ]
        # One listing judges every backend's names for the pass (a name freed by a deletion
        # goes to the next claimant within one interval).
        claims = Claims.of(backends, self._deps.settings.served_namespaces)
        await asyncio.gather(*(self._scale_one(ref, claims) for ref in refs))

    async def _scale_one(self, ref: BackendRef, claims: Claims) -> None:
        async with self._limit:
            with backend_span("scale", ref) as span:
                try:
                    record_decision(span, await Backend(self._deps, ref).scale(claims))
                except Exception as error:  # one backend's trouble must not stop the others
                    record_failure(span, error)
                    log.warning(
                        "scale_failed", namespace=ref.namespace, name=ref.name, error=repr(error)
                    )
