"""What tests do to the emulated cluster, as a user or as a controller, and what they read."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

from switchyard.operator.kube import ModelBackendResource
from tests.operator.apiserver import BACKENDS, DEPLOYMENTS, EVENTS, PDBS, SERVICES, ApiServer
from tests.operator.harness import NAMESPACE, eventually

SERVER_FIELDS = ("uid", "creationTimestamp", "generation", "resourceVersion")


async def create(client: AsyncClient, obj: dict[str, Any]) -> None:
    resource: Any = ModelBackendResource  # a dict subclass; its typed __init__ wants models
    await client.create(resource(copy.deepcopy(obj)))


async def patch_spec(client: AsyncClient, name: str, spec: dict[str, Any]) -> None:
    await client.patch(
        ModelBackendResource, name, {"spec": spec}, namespace=NAMESPACE, patch_type=PatchType.MERGE
    )


async def set_deployment_status(client: AsyncClient, name: str, **status: Any) -> None:
    """What the Deployment controller would write."""
    await client.patch(
        Deployment.Status, name, {"status": status}, namespace=NAMESPACE,
        patch_type=PatchType.MERGE,
    )  # fmt: skip


def children_of(api: ApiServer) -> dict[str, list[dict[str, Any]]]:
    return {
        "deployments": api.live(DEPLOYMENTS, NAMESPACE),
        "services": api.live(SERVICES, NAMESPACE),
        "pdbs": api.live(PDBS, NAMESPACE),
    }


async def deployment_when(
    api: ApiServer, name: str, test: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The backend's Deployment once `test` holds for it."""

    def check() -> dict[str, Any] | None:
        found = api.find(DEPLOYMENTS, NAMESPACE, name)
        return found if found is not None and test(found) else None

    return await eventually(check, what=what)


def status_of(api: ApiServer, name: str) -> dict[str, Any]:
    found = api.find(BACKENDS, NAMESPACE, name)
    return dict((found or {}).get("status") or {})


def without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out.pop("status", None)
    for key in SERVER_FIELDS:
        out["metadata"].pop(key, None)
    return out


async def settled(api: ApiServer, name: str, phase: str) -> dict[str, Any]:
    return await eventually(
        lambda: status_of(api, name) if status_of(api, name).get("phase") == phase else None,
        what=f"{name} {phase}",
    )


def events_for(api: ApiServer, name: str) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"])
        for e in api.live(EVENTS, NAMESPACE)
        if e["involvedObject"]["name"] == name
    ]
