"""The keys admin API: create, list, change, disable and delete keys, and set tenants' budgets,
without a restart.

Every change is a read-modify-write of the keys' source (`auth.source`: the keys file under
its lock, or the Kubernetes Secret with its resourceVersion): the request's fields merge
into the stored entry and the result is validated as the file itself is (`KeyEntry`,
`KeysDocument`), so a refusal writes nothing and the source is never invalid. This replica
applies the change at once; with a Redis, every other replica does before the call returns
(`auth.changes`), and the source's watch remains the source of truth.

A key's secret is in the response to its creation and nowhere else: never in another
response, a log line or the file (which holds its SHA-256; responses show 8 characters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from switchyard.edge.admin import admin_key, router
from switchyard.edge.auth.keys import generate_key, hash_key
from switchyard.edge.auth.keysfile import (
    KeyEntry,
    KeysDocument,
    KeysFileError,
    TenantEntry,
    parse_document,
    redact,
    render_keys,
)
from switchyard.edge.auth.source import KeysSource, KeysSourceError
from switchyard.edge.errors import OpenAIError

if TYPE_CHECKING:
    from switchyard.edge.state import EdgeState

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

CREATE_FIELDS = ("name", "tenant", "models", "rpm", "tpm", "cache", "priority", "role", "budget")
PATCH_FIELDS = ("models", "rpm", "tpm", "cache", "priority", "budget", "disabled")
#: Hex characters of a key's hash shown in responses (as `keys list` shows).
HASH_SHOWN = 8
#: Far above any real request to this API.
MAX_BODY_BYTES = 64 * 1024
#: How many replicas applied a change (`applied/subscribed`; `unknown`: Redis failed).
REPLICAS_HEADER = "x-switchyard-replicas"


def _error(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/ErrorResponse"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _doc(ok: int, description: str, *refusals: int, body: str | None = None) -> dict[str, Any]:
    """The route's OpenAPI: its answer, its refusals (OpenAI's error body), its body."""
    texts = {
        400: "Invalid field (`param` names it); nothing was written",
        401: "No or unknown API key",
        403: "Not an admin key",
        404: "No such key or tenant",
        409: "Conflicts with the keys file (a duplicate name, the last admin key, ...)",
        501: "This edge has no keys file",
        503: "The keys file cannot be read or written now",
    }
    responses: dict[int | str, dict[str, Any]] = {
        ok: {"description": description, "content": {"application/json": {}}},
        **{status: _error(texts[status]) for status in (401, 403, *refusals, 501, 503)},
    }
    extra: dict[str, Any] = {"security": [{"bearer": []}]}
    if body is not None:
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "description": body}}},
        }
    return {"responses": responses, "openapi_extra": extra}


def register(app: FastAPI, edge_of: Callable[[Request], EdgeState]) -> None:
    """Add the keys and tenants routes under /admin/v1 (admin keys only)."""

    async def create_key(request: Request) -> JSONResponse:
        """Create a key; its secret (`key`) is in this response only."""
        edge = edge_of(request)
        admin = admin_key(edge.keys, request)
        body = _fields(await _body(request), CREATE_FIELDS)
        secret = generate_key()
        entry = _entry({**body, "sha256": hash_key(secret)}, edge.settings.priority_classes)

        def add(document: KeysDocument) -> KeysDocument:
            if _find(document, entry.name) is not None:
                raise OpenAIError(
                    409,
                    f"A key named '{entry.name}' already exists.",
                    param="name",
                    code="key_exists",
                )
            return _checked(
                document.model_copy(update={"keys": [*document.keys, entry]}),
                edge.settings.priority_classes,
            )

        await _write(edge, add)
        headers = await _announce(edge, entry.name, revoked=False)
        log.info("admin_key_created", key=entry.name, tenant=entry.tenant, admin=admin.name)
        return JSONResponse({**_view(entry), "key": secret}, status_code=201, headers=headers)

    async def list_keys(request: Request) -> JSONResponse:
        """Every key in the file (disabled ones included), without secrets or hashes."""
        edge = edge_of(request)
        admin_key(edge.keys, request)
        document = await _read(edge)
        return JSONResponse({"object": "list", "data": [_view(e) for e in document.keys]})

    async def get_key(request: Request, name: str) -> JSONResponse:
        edge = edge_of(request)
        admin_key(edge.keys, request)
        document = await _read(edge)
        found = _find(document, name)
        if found is None:
            raise _no_key(name)
        return JSONResponse(_view(found[1]))

    async def change_key(request: Request, name: str) -> JSONResponse:
        """Change a key's models, limits, cache, priority, budget (null removes it) or
        `disabled`; a disabled key is refused (401) on every replica before this returns."""
        edge = edge_of(request)
        admin = admin_key(edge.keys, request)
        body = _fields(await _body(request), PATCH_FIELDS)
        classes = edge.settings.priority_classes
        changed: list[KeyEntry] = []

        def patch(document: KeysDocument) -> KeysDocument:
            found = _find(document, name)
            if found is None:
                raise _no_key(name)
            index, current = found
            entry = _entry({**current.model_dump(), **body}, classes)
            keys = [*document.keys]
            keys[index] = entry
            updated = document.model_copy(update={"keys": keys})
            _keep_an_admin(updated)
            changed.append(entry)
            return _checked(updated, classes)

        await _write(edge, patch)
        (entry,) = changed
        headers = await _announce(edge, name, revoked=entry.disabled)
        log.info("admin_key_changed", key=name, fields=sorted(body), admin=admin.name)
        return JSONResponse(_view(entry), headers=headers)

    async def delete_key(request: Request, name: str) -> JSONResponse:
        """Delete a key: refused (401) on every replica before this returns; its requests
        already running finish."""
        edge = edge_of(request)
        admin = admin_key(edge.keys, request)

        def delete(document: KeysDocument) -> KeysDocument:
            found = _find(document, name)
            if found is None:
                raise _no_key(name)
            tenant = found[1].tenant
            kept = [e for e in document.keys if e.name != name]
            if tenant in document.tenants and all(e.tenant != tenant for e in kept):
                raise OpenAIError(
                    409,
                    f"'{name}' is the last key of tenant '{tenant}', which has settings in the "
                    f"keys file (its budget): delete /admin/v1/tenants/{tenant}/budget first.",
                    code="tenant_in_use",
                )
            updated = document.model_copy(update={"keys": kept})
            _keep_an_admin(updated)
            return _checked(updated, edge.settings.priority_classes)

        await _write(edge, delete)
        headers = await _announce(edge, name, revoked=True)
        log.info("admin_key_deleted", key=name, admin=admin.name)
        return JSONResponse({"object": "key", "name": name, "deleted": True}, headers=headers)

    async def set_tenant_budget(request: Request, tenant: str) -> JSONResponse:
        """Set the budget all of a tenant's keys share (the tenant must have a key)."""
        edge = edge_of(request)
        admin = admin_key(edge.keys, request)
        budget = await _body(request)
        written = await _write(edge, lambda d: _set_budget(d, tenant, budget, edge))
        headers = await _announce(edge, None, revoked=False)
        log.info("admin_tenant_budget_set", tenant=tenant, admin=admin.name)
        return JSONResponse(_tenant_view(tenant, written.tenants[tenant]), headers=headers)

    async def delete_tenant_budget(request: Request, tenant: str) -> JSONResponse:
        edge = edge_of(request)
        admin = admin_key(edge.keys, request)

        def remove(document: KeysDocument) -> KeysDocument:
            current = document.tenants.get(tenant)
            if current is None or current.budget is None:
                raise OpenAIError(
                    404, f"Tenant '{redact(tenant[:64])}' has no budget.", code="budget_not_found"
                )
            return _set_budget(document, tenant, None, edge)

        await _write(edge, remove)
        headers = await _announce(edge, None, revoked=False)
        log.info("admin_tenant_budget_deleted", tenant=tenant, admin=admin.name)
        return JSONResponse(_tenant_view(tenant, TenantEntry()), headers=headers)

    routes: dict[str, dict[str, tuple[Callable[..., Awaitable[JSONResponse]], dict[str, Any]]]] = {
        "/keys": {
            "POST": (
                create_key,
                _doc(
                    201, "The key, with its secret (`key`)", 400, 409, body=", ".join(CREATE_FIELDS)
                ),
            ),
            "GET": (list_keys, _doc(200, "The keys (`data`)", 409)),
        },
        "/keys/{name}": {
            "GET": (get_key, _doc(200, "The key", 404, 409)),
            "PATCH": (
                change_key,
                _doc(200, "The key as changed", 400, 404, 409, body=", ".join(PATCH_FIELDS)),
            ),
            "DELETE": (delete_key, _doc(200, "The key was deleted", 404, 409)),
        },
        "/tenants/{tenant}/budget": {
            "PUT": (
                set_tenant_budget,
                _doc(
                    200,
                    "The tenant",
                    400,
                    404,
                    409,
                    body="tokens, period, input_weight, output_weight",
                ),
            ),
            "DELETE": (delete_tenant_budget, _doc(200, "The tenant", 404, 409)),
        },
    }
    api = router()
    for path, methods in routes.items():
        # One route for all of a path's methods, first, so that a 405 on the path lists
        # them all in its Allow header (Starlette answers with the first route's); the
        # routes after it only document each method.
        api.add_api_route(
            path, _dispatcher(methods), methods=list(methods), include_in_schema=False
        )
        for method, (handler, doc) in methods.items():
            status = 201 if method == "POST" else 200
            api.add_api_route(path, handler, methods=[method], status_code=status, **doc)
    app.include_router(api)


def _dispatcher(
    methods: Mapping[str, tuple[Callable[..., Awaitable[JSONResponse]], Any]],
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def dispatch(request: Request) -> JSONResponse:
        handler, _ = methods[request.method]
        return await handler(request, **request.path_params)

    return dispatch


# -- the request ---------------------------------------------------------------------------


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise OpenAIError.invalid(f"The request body is over {MAX_BODY_BYTES} bytes.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OpenAIError.invalid("The request body must be JSON.") from None


def _fields(body: Any, allowed: Collection[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise OpenAIError.invalid("The request body must be a JSON object.")
    for field in body:
        if field not in allowed:
            raise OpenAIError.invalid(
                f"Unknown or unchangeable field '{redact(str(field)[:64])}' "
                f"(allowed: {', '.join(allowed)}).",
                param=redact(str(field)[:64]),
            )
    return body


def _entry(fields: Mapping[str, Any], classes: Collection[str]) -> KeyEntry:
    return _validated(KeyEntry, fields, classes)


def _validated(model: type[M], fields: Any, classes: Collection[str]) -> M:
    """`fields` as `model`, or a 400 naming the first field at fault."""
    try:
        return model.model_validate(fields, context={"classes": classes})
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        message = "required field is missing" if error["type"] == "missing" else error["msg"]
        # `input` is never echoed: a misplaced key could be in it.
        raise OpenAIError.invalid(
            f"{param}: {message}" if param else message, param=param, code="invalid_value"
        ) from None


def _checked(document: KeysDocument, classes: Collection[str]) -> KeysDocument:
    """`document` as the file would read it back, or a 400 saying what is wrong."""
    try:
        return parse_document(render_keys(document.keys, document.tenants), "<change>", classes)
    except KeysFileError as exc:
        raise OpenAIError.invalid("; ".join(exc.problems), code="invalid_value") from None


def _set_budget(document: KeysDocument, tenant: str, budget: Any, edge: EdgeState) -> KeysDocument:
    if all(e.tenant != tenant for e in document.keys):
        raise OpenAIError(
            404, f"No key has tenant '{redact(tenant[:64])}': a tenant exists through its keys.",
            code="tenant_not_found",
        )  # fmt: skip
    current = document.tenants.get(tenant, TenantEntry())
    entry = _validated(
        TenantEntry, {**current.model_dump(), "budget": budget}, edge.settings.priority_classes
    )
    tenants = {**document.tenants, tenant: entry}
    return _checked(
        document.model_copy(update={"tenants": tenants}), edge.settings.priority_classes
    )


def _find(document: KeysDocument, name: str) -> tuple[int, KeyEntry] | None:
    return next(((i, e) for i, e in enumerate(document.keys) if e.name == name), None)


def _no_key(name: str) -> OpenAIError:
    return OpenAIError(404, f"No key named '{redact(name[:64])}'.", code="key_not_found")


def _keep_an_admin(document: KeysDocument) -> None:
    """Refuse a change that leaves no enabled admin key: nobody could undo it through this
    API. (Only an admin calls it, so that change always disables or deletes the caller.)"""
    if not any(e.role == "admin" and not e.disabled for e in document.keys):
        raise OpenAIError(
            409,
            "This would leave no enabled admin key: create another admin key first.",
            code="last_admin",
        )


# -- the source (the keys file or the Secret) ---------------------------------------------


def _source_of(edge: EdgeState) -> KeysSource:
    source = edge.keys.source
    if source is None:
        raise OpenAIError(
            501,
            "This edge has no keys file (EDGE_KEYS_FILE) nor keys Secret (EDGE_KEYS_SECRET): "
            "keys cannot be managed through the API.",
            type="server_error",
            code="no_keys_file",
        )
    return source


async def _read(edge: EdgeState) -> KeysDocument:
    try:
        return await _source_of(edge).read()
    except KeysSourceError as exc:
        raise _source_error(exc) from None


async def _write(edge: EdgeState, change: Callable[[KeysDocument], KeysDocument]) -> KeysDocument:
    try:  # `change` raises OpenAIError for a refused change
        return await _source_of(edge).update(change)
    except KeysSourceError as exc:
        raise _source_error(exc) from None


def _source_error(exc: KeysSourceError) -> OpenAIError:
    return OpenAIError(exc.status, str(exc), type="server_error", code=exc.code)


async def _announce(edge: EdgeState, name: str | None, *, revoked: bool) -> dict[str, str]:
    """Apply the change written to this replica now, then to the others (with a Redis);
    the header says how many replicas applied it."""
    if revoked and name is not None:
        await asyncio.to_thread(edge.keys.drop, name)
    await edge.keys.refresh()
    changes = edge.keys.changes
    if changes is None:
        return {}
    delivery = await changes.publish(name, revoked=revoked and name is not None)
    if delivery is None:
        return {REPLICAS_HEADER: "unknown"}
    return {REPLICAS_HEADER: f"{delivery.applied}/{delivery.replicas}"}


# -- the response --------------------------------------------------------------------------


def _view(entry: KeyEntry) -> dict[str, Any]:
    data = entry.model_dump(mode="json", exclude={"sha256"})
    return {"object": "key", **data, "hash_prefix": entry.sha256[:HASH_SHOWN]}


def _tenant_view(tenant: str, entry: TenantEntry) -> dict[str, Any]:
    return {"object": "tenant", "tenant": tenant, **entry.model_dump(mode="json")}
