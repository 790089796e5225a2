"""The operator's Kubernetes calls (lightkube, async), in plain dicts.

Children are written with server-side apply under one field manager, so a field the
operator stops setting is removed and repeated applies change nothing. `apply` never
creates blindly: it applies, and creates only where the server answers 404 to an apply of a
missing object (an API server or emulator without server-side apply; kmock in the tests).
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Sequence
from typing import Any, Final

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Event, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import PatchType

from switchyard.operator import api, naming

Obj = dict[str, Any]

ModelBackendResource = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)

_CHILD_RESOURCES: Final[dict[tuple[str, str], Any]] = {
    ("apps/v1", "Deployment"): Deployment,
    ("v1", "Service"): Service,
    ("policy/v1", "PodDisruptionBudget"): PodDisruptionBudget,
}
_HOST: Final = socket.gethostname()
#: Conflicts, throttling and server trouble pass; the rest (invalid, forbidden) does not.
_TRANSIENT_CODES: Final = frozenset({409, 429, 500, 502, 503, 504})


def error_code(error: httpx2.HTTPStatusError) -> int:
    """The HTTP status of a failed call (lightkube raises ApiError, a subclass, when the
    answer is a JSON Status; anything else arrives as the plain HTTPStatusError)."""
    if isinstance(error, ApiError) and error.status is not None and error.status.code:
        return int(error.status.code)
    return error.response.status_code


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same call later may succeed."""
    if isinstance(error, httpx2.HTTPStatusError):
        return error_code(error) in _TRANSIENT_CODES
    return isinstance(error, httpx2.TransportError | TimeoutError | OSError)


def _raw(obj: Any) -> Obj:
    if isinstance(obj, dict):
        return dict(obj)
    raw: Obj = obj.to_dict()
    return raw


class Kube:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get_backend(self, namespace: str, name: str) -> Obj | None:
        try:
            return _raw(await self._client.get(ModelBackendResource, name, namespace=namespace))
        except httpx2.HTTPStatusError as error:
            if error_code(error) == 404:
                return None
            raise

    async def list_backends(self, namespaces: Sequence[str]) -> list[Obj]:
        scopes: Sequence[str] = namespaces or ("*",)  # "*": all namespaces
        out: list[Obj] = []
        for namespace in scopes:
            out.extend(
                [
                    _raw(item)
                    async for item in self._client.list(ModelBackendResource, namespace=namespace)
                ]
            )
        return out

    async def get_deployment(self, namespace: str, name: str) -> Obj | None:
        try:
            return _raw(await self._client.get(Deployment, name, namespace=namespace))
        except httpx2.HTTPStatusError as error:
            if error_code(error) == 404:
                return None
            raise

    async def apply(self, obj: Obj) -> Obj:
        """Create or update `obj` (a Deployment, Service or PodDisruptionBudget)."""
        resource = _CHILD_RESOURCES[(obj["apiVersion"], obj["kind"])]
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        try:
            result = await self._client.patch(
                resource,
                name,
                obj,
                namespace=namespace,
                patch_type=PatchType.APPLY,
                field_manager=naming.FIELD_MANAGER,
                force=True,
            )
        except httpx2.HTTPStatusError as error:
            if error_code(error) != 404:
                raise
            result = await self._client.create(
                resource.from_dict(obj), field_manager=naming.FIELD_MANAGER
            )
        return _raw(result)

    async def scale(self, namespace: str, name: str, replicas: int) -> Obj:
        result = await self._client.patch(
            Deployment,
            name,
            {"spec": {"replicas": replicas}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager=naming.FIELD_MANAGER,
        )
        return _raw(result)

    async def post_event(self, obj: Obj, *, warning: bool, reason: str, message: str) -> None:
        """A core/v1 Event about `obj` (what `kubectl describe` shows)."""
        meta = obj["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "message": message[:1024],
            "source": {"component": naming.MANAGED_BY},
            "reportingComponent": naming.MANAGED_BY,
            "reportingInstance": _HOST,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        posted: Any = Event.from_dict(event)
        await self._client.create(posted)

    async def patch_backend_status(self, namespace: str, name: str, status: Obj) -> None:
        await self._client.patch(
            ModelBackendResource.Status,
            name,
            {"status": status},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager=naming.FIELD_MANAGER,
        )
