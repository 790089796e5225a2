"""vLLM's two ASGI middlewares: `--api-key` on its API prefixes, `X-Request-Id` echoing."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Final

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

GUARDED_PREFIXES: Final = ("/v1", "/v2", "/inference", "/cohere")
_UNAUTHORIZED: Final = orjson.dumps({"error": "Unauthorized"})


class ApiKeyMiddleware:
    """401 `{"error": "Unauthorized"}` without the right bearer token on the API prefixes."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self._hashes = [hashlib.sha256(t.encode()).digest() for t in tokens]

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        digest = hashlib.sha256(token.encode()).digest()
        match = False
        for known in self._hashes:  # compare with every key: no early exit, no timing leak
            match |= secrets.compare_digest(digest, known)
        return match

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and scope["path"].startswith(GUARDED_PREFIXES)
            and not self._authorized(Headers(scope=scope))
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        await self.app(scope, receive, send)


class RequestIdHeaderMiddleware:
    """`--enable-request-id-headers`: answer with the caller's `X-Request-Id`, or a new one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(raw=message["headers"]).append("X-Request-Id", request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)
