"""kmock's Kubernetes emulator with the API-server behaviour the operator relies on.

kmock stores objects and serves list/watch/get/create/patch/delete over real HTTP. On top
of it, as a real API server does:
- on create: `metadata.uid`, `creationTimestamp`, `generation`, `resourceVersion`,
  `generateName` (kopf's Events use it);
- `generation` goes up when a patch changes `spec`;
- resources with a status subresource: the main endpoint ignores `status`, the `/status`
  endpoint changes nothing else;
- ModelBackends are defaulted and validated against the committed CRD (schema and CEL
  rules): an invalid one is refused with 422 and the rule's message;
- objects whose owners are all gone are deleted (owner references), as the garbage
  collector does: the dependents of a deleted object, and a dependent written after its
  owner was deleted (a reconcile that raced the deletion).
Only `_handle` is extended; kmock's storage and watch buses are used as kmock uses them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import uuid
from typing import Any, Final

import aiohttp.web
import kmock

from switchyard.operator import api
from tests.operator.schema import defaulted, validation_errors

BACKENDS: Final = kmock.resource(api.GROUP, api.VERSION, api.PLURAL)
DEPLOYMENTS: Final = kmock.resource("apps", "v1", "deployments")
SERVICES: Final = kmock.resource("", "v1", "services")
PDBS: Final = kmock.resource("policy", "v1", "poddisruptionbudgets")
PODS: Final = kmock.resource("", "v1", "pods")
EVENTS: Final = kmock.resource("", "v1", "events")
#: Resources whose status is a subresource.
WITH_STATUS: Final = frozenset({BACKENDS, DEPLOYMENTS, PODS})


def _selects(selector: str, labels: dict[str, str]) -> bool:
    for term in selector.split(","):
        key, equals, value = term.partition("=")
        if equals and labels.get(key) != value:
            return False
        if not equals and term.startswith("!") and term[1:] in labels:
            return False
        if not equals and not term.startswith("!") and term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class ApiServer(kmock.KubernetesEmulator):
    _versions = itertools.count(1)
    #: Whether ModelBackends are checked against the CRD (off: a cluster whose CRD is older).
    validation = True
    #: Added to the wall clock for creationTimestamp: a test moves it to create objects
    #: "later" (the API server stamps whole seconds) without waiting.
    clock_offset_s = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The requests answered so far, in order: what each one did is done.
        self.handled: list[kmock.Request] = []

    def register_crd(self) -> None:
        self.resources.load_bundled()
        self.resources[BACKENDS] = kmock.ResourceInfo(
            kind=api.KIND,
            singular=api.SINGULAR,
            namespaced=True,
            shortnames=set(api.SHORT_NAMES),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"},
        )

    def live(self, resource: kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """The objects of a resource that exist now (optionally in one namespace)."""
        return [
            dict(obj.raw)
            for (res, ns, _), obj in self.objects.items()
            if res == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]

    def find(self, resource: kmock.resource, namespace: str, name: str) -> dict[str, Any] | None:
        for obj in self.live(resource, namespace):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    async def _serve_list(self, request: kmock.Request) -> Any:
        """kmock's list, narrowed by a `labelSelector` of `k=v`, `k` and `!k` terms."""
        listing = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector and isinstance(listing, dict):
            listing["items"] = [
                item
                for item in listing["items"]
                if _selects(selector, (item.get("metadata", {}).get("labels") or {}))
            ]
        return listing

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        response = await super()._render_error(exc)
        # The API server sends exactly this (clients such as lightkube compare it as is).
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._admit_create(request.resource, request.namespace, request.data)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._admit_update(request, request.data)
        response = await super()._handle(request)
        writes = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)
        if request.action in writes and request.resource is not None:
            await self._collect_garbage()
        self.handled.append(request)
        return response

    def _admit_create(
        self, resource: kmock.resource, namespace: str | None, data: dict[str, Any]
    ) -> None:
        meta = data.setdefault("metadata", {})
        if namespace:
            meta.setdefault("namespace", namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        meta["uid"] = str(uuid.uuid4())
        created = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.clock_offset_s)
        meta["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta["generation"] = 1
        meta["resourceVersion"] = str(next(self._versions))
        if resource in WITH_STATUS:
            data.pop("status", None)
        if resource == BACKENDS and self.validation:
            self._validate(data)
            data.update(defaulted(data))

    def _admit_update(self, request: kmock.Request, data: dict[str, Any]) -> None:
        assert request.resource is not None
        current = self.find(request.resource, request.namespace or "", request.name or "")
        if current is None:
            return  # kmock answers 404
        if request.resource in WITH_STATUS:
            if request.subresource == "status":
                for key in [k for k in data if k != "status"]:
                    del data[key]
            else:
                data.pop("status", None)
        meta = data.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "generation"):
            meta.pop(key, None)
        result = merge_patch(current, data)
        if result.get("spec") != current.get("spec"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = str(next(self._versions))
        if request.resource == BACKENDS and self.validation:
            self._validate(merge_patch(current, data))

    @staticmethod
    def _validate(obj: dict[str, Any]) -> None:
        errors = validation_errors(obj)
        if errors:
            name = obj.get("metadata", {}).get("name")
            raise kmock.KubernetesError(
                status=422,
                reason="Invalid",
                message=f'{api.KIND}.{api.GROUP} "{name}" is invalid: ' + "; ".join(errors),
                details={"name": name, "group": api.GROUP, "kind": api.KIND},
            )

    async def _collect_garbage(self) -> None:
        """Delete objects all of whose owners are gone, until none is left."""
        async with self._lock:
            while True:
                live = {key: obj for key, obj in self.objects.items() if not obj.deleted}
                uids = {obj.raw.get("metadata", {}).get("uid") for obj in live.values()}
                orphans = [
                    (key, obj)
                    for key, obj in live.items()
                    if (refs := obj.raw.get("metadata", {}).get("ownerReferences"))
                    and all(ref.get("uid") not in uids for ref in refs)
                ]
                if not orphans:
                    return
                for (resource, _, _), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
