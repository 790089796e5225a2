"""The admin API (`/admin/v1/...`): who may call it.

Only a key with `role: admin` in the keys file may; a normal key gets 403 on every admin
route, whatever the route (it learns nothing about what exists), and no key gets 401. An
admin key is not a model key: it calls models only if it also lists some.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from switchyard.edge.auth import ApiKey, KeyStore
from switchyard.edge.errors import OpenAIError

PREFIX = "/admin/v1"


def forbidden() -> OpenAIError:
    return OpenAIError(
        403,
        "This API key may not use the admin API (it needs role: admin in the keys file).",
        type="permission_error",
        code="admin_only",
        kind="forbidden",
    )


def admin_key(keys: KeyStore, request: Request) -> ApiKey:
    """The admin key that sent `request`; raises OpenAIError 401 (no or unknown key) or 403
    (a key that is not an admin's)."""
    key = keys.authenticate(request.headers.get("authorization"))
    if key is None:
        raise OpenAIError.unauthorized()
    if not key.is_admin:
        raise forbidden()
    return key


def router() -> APIRouter:
    """The router every admin route joins (its tag and prefix)."""
    return APIRouter(prefix=PREFIX, tags=["admin"])
