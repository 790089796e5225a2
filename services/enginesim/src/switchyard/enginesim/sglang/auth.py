"""`--api-key` and `--admin-api-key`: SGLang's bearer-token middleware (`srt/utils/auth.py`).

SGLang installs it when either key is set, in front of routing, so it decides before a
route is even matched:
- `OPTIONS` and paths starting with `/health`, `/ready` or `/metrics` are always open
  (probes and scrapers carry no secret);
- every other path needs `Authorization: Bearer <--api-key>` when that key is set,
  unknown paths included (they get 401, not 404);
- admin routes (here only `POST /abort_request`) take `--admin-api-key` when it is set
  (and then not `--api-key`), else `--api-key`, else nothing.
A refusal is 401 `{"error":"Unauthorized"}`. The scheme is matched case-insensitively,
the token exactly, in constant time. There is no environment variable for either key.

The simulator's own `/sim/*` routes are not SGLang's and stay open, so tests and
`make run` can read a keyed simulator's state.
"""

from __future__ import annotations

import secrets
from typing import Final

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from switchyard.enginesim.serving import OrjsonResponse

#: Never guarded, by prefix (so `/health_generate` too).
OPEN_PREFIXES: Final = ("/health", "/ready", "/metrics")
#: The simulator's own routes.
SIM_PREFIX: Final = "/sim/"
#: Routes SGLang marks `AuthLevel.ADMIN_OPTIONAL`, as (method, path).
ADMIN_ROUTES: Final = frozenset({("POST", "/abort_request")})


def bearer_matches(authorization: str | None, token: str) -> bool:
    """SGLang's `_check_bearer_token`: `<scheme> <token>`, scheme `bearer` in any case."""
    if not authorization:
        return False
    scheme, space, given = authorization.partition(" ")
    if not space or scheme.lower() != "bearer":
        return False
    # Bytes: SGLang compares str, which raises (a 500) for non-ASCII; a refusal is kinder.
    return secrets.compare_digest(given.encode("latin-1"), token.encode())


def allowed(
    method: str,
    path: str,
    authorization: str | None,
    api_key: str | None,
    admin_api_key: str | None,
) -> bool:
    """Whether SGLang lets this request through (`decide_request_auth`)."""
    if method == "OPTIONS" or path.startswith(OPEN_PREFIXES) or path.startswith(SIM_PREFIX):
        return True
    # Ordinary routes take only --api-key: an admin key alone leaves them open.
    key = (admin_api_key or api_key) if (method, path) in ADMIN_ROUTES else api_key
    return not key or bearer_matches(authorization, key)


class ApiKeyMiddleware:
    """401 `{"error": "Unauthorized"}` for a request `allowed` refuses."""

    def __init__(self, app: ASGIApp, api_key: str | None, admin_api_key: str | None) -> None:
        self.app = app
        self._api_key = api_key
        self._admin_api_key = admin_api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not allowed(
            scope["method"],
            scope["path"],
            Headers(scope=scope).get("authorization"),
            self._api_key,
            self._admin_api_key,
        ):
            await OrjsonResponse({"error": "Unauthorized"}, status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)
