"""Running the operator: kopf's settings from ours, the dependencies, `kopf.operator`.

`serve()` is what `python -m switchyard.operator` runs; the tests call `run()` with their
own registry (an emulator login, a fake load source, a fake clock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time
from typing import Any, Final

import kopf
import structlog
from lightkube import AsyncClient, KubeConfig

from switchyard.operator import naming
from switchyard.operator.handlers import register
from switchyard.operator.kube import Kube
from switchyard.operator.load import GrpcLoadSource
from switchyard.operator.reconcile import ApiEvents, Deps
from switchyard.operator.settings import OperatorSettings

log = structlog.get_logger(__name__)

#: What kopf accepts as a stop or ready flag.
Flag = asyncio.Future[Any] | asyncio.Event | concurrent.futures.Future[Any] | threading.Event

#: kopf's own bookkeeping (handler progress, last handled spec) lives under this prefix; the
#: edge's `switchyard.dev/demanded-at` stays outside it, so a demand signal is a change kopf
#: reports to the update handler (and a backend at zero wakes up at once).
KOPF_PREFIX: Final = "operator.switchyard.dev"


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    ks = kopf.OperatorSettings()
    ks.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    ks.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    ks.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
    ks.posting.reporting_component = naming.MANAGED_BY
    ks.posting.reporting_instance = socket.gethostname()
    ks.posting.event_name_prefix = "switchyard-"
    # Resources are known up front: no watching of CRDs or namespaces (less RBAC).
    ks.scanning.disabled = True
    # Only our Deployments, filtered by the API server, not all of the cluster's.
    ks.watching.label_selectors["apps", "v1", "deployments"] = (
        f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"
    )
    ks.watching.server_timeout = 600
    ks.watching.client_timeout = 660
    ks.watching.connect_timeout = 10
    ks.networking.request_timeout = 60
    ks.networking.connect_timeout = 10
    if settings.peering:
        ks.peering.name = settings.peering
        ks.peering.mandatory = True
        ks.peering.clusterwide = not settings.namespaces
    else:
        ks.peering.standalone = True
    return ks


def liveness_endpoint(settings: OperatorSettings) -> str | None:
    if not settings.liveness_port:
        return None
    return f"http://0.0.0.0:{settings.liveness_port}/healthz"


async def run(
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    *,
    kopf_config: kopf.OperatorSettings | None = None,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
) -> None:
    """Run kopf with our handlers already in `registry`, until stopped or signalled."""
    await kopf.operator(
        registry=registry,
        settings=kopf_config or kopf_settings(settings),
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        liveness_endpoint=liveness_endpoint(settings),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


async def serve(settings: OperatorSettings) -> None:
    """The operator in a cluster (service account) or beside one (kubeconfig)."""
    config = KubeConfig.from_env()
    async with AsyncClient(config=config, field_manager=naming.FIELD_MANAGER) as client:
        kube = Kube(client)
        deps = Deps(
            settings=settings,
            kube=kube,
            load=GrpcLoadSource(
                client, timeout_s=settings.load_timeout_s, concurrency=settings.load_concurrency
            ),
            clock=time.time,
            events=ApiEvents(kube),
        )
        registry = kopf.OperatorRegistry()
        register(registry, deps)
        # kopf's own connection: the same sources lightkube read, in the same order.
        kopf.on.login(registry=registry)(kopf.login_with_service_account)
        kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
        log.info(
            "operator_starting",
            namespaces=settings.namespaces or "all",
            liveness=liveness_endpoint(settings),
            peering=settings.peering or "standalone",
        )
        await run(settings, registry)
