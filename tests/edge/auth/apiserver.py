"""The emulated API server (`tests.operator.apiserver.ApiServer`) with what a real one does for
the keys Secret that kmock does not:

- `fieldSelector=metadata.name=<name>` narrows lists and watches (the form RBAC can
  authorize by resourceNames); any other field selector is refused (400), as a real server
  refuses fields a resource does not index;
- a list's resourceVersion is the store's current one, and a watch from a version sends
  what changed after it, including what changed before the watch was opened (kmock's
  watch starts from when it connects); one older than `compact()` made it is answered
  with the in-stream ERROR event 410 Expired ("too old resource version");
- a watch ends after its `timeoutSeconds` (and `end_watches()` ends every open one, as an
  API server restart does);
- PUT (update: replace the whole object; kmock serves only PATCH) with a resourceVersion
  that is not the object's current one is refused with 409 Conflict, atomically with the
  check; a PUT that lands gets a new resourceVersion and a MODIFIED event.

Test hooks: `gate_reads(n)` holds the first `n` GETs of Secrets until all `n` arrived (two
writers read the same version, so one PUT must conflict); `conflict_always` refuses every
PUT with 409 (a Secret that keeps changing); `fail_watches` answers that many watches 500.
`requests` is every request received, failed ones included, for the RBAC check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final, cast

import aiohttp.web
import kmock

from tests.operator.apiserver import ApiServer

SECRETS: Final = kmock.resource("", "v1", "secrets")
#: How long a gated read waits for the others before going on alone (a broken test).
GATE_WAIT_S = 10.0


class SecretsApiServer(ApiServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[kmock.Request] = []
        self.conflict_always = False
        self.conflicts = 0  # PUTs refused with 409
        self.fail_watches = 0
        self._compacted = 0  # watches from a version below this get 410
        self._writes = asyncio.Lock()
        self._ending = asyncio.Event()
        self._gate: tuple[int, asyncio.Event] | None = None
        self._gated = 0

    # -- test hooks -----------------------------------------------------------------------

    def compact(self) -> None:
        """Forget history: a watch from any version given out so far gets 410 Gone."""
        self._compacted = next(self._versions)

    def end_watches(self) -> None:
        """End every open watch now."""
        self._ending.set()
        self._ending = asyncio.Event()

    def gate_reads(self, parties: int) -> None:
        self._gate, self._gated = (parties, asyncio.Event()), 0

    def version_of(self, namespace: str, name: str) -> str:
        found = self.find(SECRETS, namespace, name)
        assert found is not None
        return str(found["metadata"]["resourceVersion"])

    # -- the API server's behaviour --------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self.requests.append(request)
        if request.resource == SECRETS:
            _name_selected(request)  # a bad selector: 400 before anything else
            if request.action == kmock.action.FETCH and self._gate is not None:
                await self._pass_gate()
            if request.method == kmock.method.PUT and request.name is not None:
                async with self._writes:  # the version check and the write, as one step
                    self._check_version(request)
                    raw = await self._replace(request)
                return aiohttp.web.json_response(raw)
            if request.action == kmock.action.WATCH and self.fail_watches > 0:
                self.fail_watches -= 1
                raise kmock.KubernetesError(status=500, reason="InternalError", message="boom")
        return await super()._handle(request)

    async def _pass_gate(self) -> None:
        assert self._gate is not None
        parties, opened = self._gate
        self._gated += 1
        if self._gated >= parties:
            opened.set()
            self._gate = None
        else:
            await asyncio.wait_for(opened.wait(), GATE_WAIT_S)

    def _check_version(self, request: kmock.Request) -> None:
        data = request.data if isinstance(request.data, dict) else {}
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        current = self.find(SECRETS, request.namespace or "", request.name or "")
        if current is None:
            raise kmock.KubernetesError(
                status=404, reason="NotFound", message=f'secrets "{request.name}" not found'
            )
        if self.conflict_always or (
            wanted is not None and str(wanted) != str(current["metadata"]["resourceVersion"])
        ):
            self.conflicts += 1
            raise kmock.KubernetesError(
                status=409,
                reason="Conflict",
                message=f'Operation cannot be fulfilled on secrets "{request.name}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )

    async def _replace(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None
        key = (request.resource, request.namespace, request.name or "")
        async with self._lock:
            obj = self.objects[key]
            current = dict(obj.raw)
            new = dict(request.data)
            meta = {**(new.get("metadata") or {})}
            for kept in ("uid", "creationTimestamp", "namespace", "name"):
                if kept in current["metadata"]:
                    meta[kept] = current["metadata"][kept]
            meta["resourceVersion"] = str(next(self._versions))
            new["metadata"] = meta
            obj.patch(_replacing(current, new))
            raw = dict(obj.raw)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return raw

    async def _serve_list(self, request: kmock.Request) -> Any:
        listing = await super()._serve_list(request)
        if request.resource == SECRETS and isinstance(listing, dict):
            name = _name_selected(request)
            if name is not None:
                listing["items"] = [i for i in listing["items"] if i["metadata"]["name"] == name]
            listing["metadata"] = {"resourceVersion": str(next(self._versions))}
        return listing

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        if request.resource != SECRETS:
            async for item in super()._serve_watch(request):
                yield item
            return
        name = _name_selected(request)
        since = int(request.params.get("resourceVersion") or 0)
        timeout = float(request.params.get("timeoutSeconds") or 3600)
        yield b""  # the headers, at once
        if since and since < self._compacted:
            yield {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {since} ({self._compacted})",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            return
        # Mark the bus first, then take the current state: a write in between is not missed
        # (kmock snapshots first and marks after, so a watch opened as a write lands may
        # never see it; a real watch sends everything after `since`).
        assert request.resource is not None
        bus = self._buses[request.resource]
        marker = await bus.mark()
        events = cast(AsyncGenerator[Any, None], bus.stream(since=marker))
        ending = asyncio.ensure_future(self._ending.wait())
        step: asyncio.Future[Any] | None = None
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            async with self._lock:
                current = [
                    dict(obj.raw)
                    for (resource, ns, obj_name), obj in self.objects.items()
                    if resource == request.resource
                    and not obj.deleted
                    and request.namespace in (None, ns)
                    and name in (None, obj_name)
                ]
            for obj in current:
                version = int(obj["metadata"].get("resourceVersion") or 0)
                if version > since:
                    # Changed since `since` (the intermediate versions collapse into this one).
                    yield {"type": "MODIFIED" if since else "ADDED", "object": obj}
            last = max([since, *(int(o["metadata"].get("resourceVersion") or 0) for o in current)])
            while True:
                step = asyncio.ensure_future(anext(events))
                left = deadline - asyncio.get_running_loop().time()
                await asyncio.wait(
                    {step, ending}, timeout=max(left, 0), return_when=asyncio.FIRST_COMPLETED
                )
                if not step.done():
                    return  # timed out, or ended
                event, step = step.result(), None
                meta = event.get("object", {}).get("metadata", {})
                if name is not None and meta.get("name") != name:
                    continue
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                version = int(meta.get("resourceVersion") or 0)
                if version <= last and event.get("type") != "DELETED":
                    continue  # already sent (the current state above)
                last = version
                yield event
        finally:
            # Also when the client went away mid-wait: nothing of this watch outlives it.
            pending = [t for t in (step, ending) if t is not None]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await events.aclose()
            await bus.unmark(marker)


def _name_selected(request: kmock.Request) -> str | None:
    selector = request.params.get("fieldSelector")
    if not selector:
        return None
    field, _, value = selector.replace("==", "=").partition("=")
    if field != "metadata.name" or "," in value:
        raise kmock.KubernetesError(
            status=400, reason="BadRequest", message=f'field label not supported: "{field}"'
        )
    return value


def _replacing(current: Any, new: Any) -> Any:
    """The merge patch (None deletes) that turns `current` into `new`: kmock stores by patches."""
    if not (isinstance(current, dict) and isinstance(new, dict)):
        return new
    patch: dict[str, Any] = {k: None for k in current if k not in new}
    for key, value in new.items():
        patch[key] = _replacing(current.get(key), value)
    return patch
