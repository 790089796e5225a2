"""The edge's errors in Anthropic's shape, so the `anthropic` SDK raises its own classes.

Body: `{"type": "error", "error": {"type", "message"}, "request_id"}`; a stream that
fails after its first byte ends with `event: error` and the same body. Statuses and types
are Anthropic's: 400 invalid_request_error, 401 authentication_error, 403
permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500
api_error, 504 timeout_error, 529 overloaded_error.

429 vs 529: Anthropic answers 429 for the caller's own limits and 529 when its servers
are overloaded. So a key past its RPM/TPM is a 429 `rate_limit_error`, and the edge
being busy (admission full, its queue's wait over, the engines saying RESOURCE_EXHAUSTED,
the checks' pool saturated) is a 529 `overloaded_error`: nothing the caller did, and the
SDK retries both (with Retry-After). 503 (no backend ready, rate limiting unavailable, a
shutdown) stays 503 as an `api_error`: the SDK retries it too, and it is not overload.
Metrics and logs keep the edge's own status (429 for both kinds of refusal).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

from switchyard.edge.errors import OpenAIError

#: Anthropic's status for "overloaded" (not an IANA status; the SDK's OverloadedError).
OVERLOADED = 529
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    OVERLOADED: "overloaded_error",
}
#: The edge's 429s that are its own load, not the key's limits (`OpenAIError.busy`).
_BUSY = "server_busy"


def status_and_type(error: OpenAIError) -> tuple[int, str]:
    status = error.status
    if status == 429 and error.type == _BUSY:
        status = OVERLOADED
    kind = _TYPES.get(status)
    if kind is None:
        kind = "invalid_request_error" if status < 500 else "api_error"
    return status, kind


def unauthorized() -> OpenAIError:
    return OpenAIError(
        401,
        "invalid x-api-key: send a valid key as 'x-api-key: <key>' or "
        "'Authorization: Bearer <key>'.",
        code="invalid_api_key",
        kind="unauthorized",
    )


class AnthropicErrors:
    """An `ErrorDialect` for one request (its bodies carry its id)."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id

    def body(self, error: OpenAIError) -> bytes:
        _, kind = status_and_type(error)
        return orjson.dumps(
            {
                "type": "error",
                "error": {"type": kind, "message": error.message},
                "request_id": self.request_id,
            }
        )

    def answer(self, error: OpenAIError) -> tuple[int, bytes, Mapping[str, str]]:
        status, _ = status_and_type(error)
        return status, self.body(error), error.headers

    def stream_event(self, error: OpenAIError) -> bytes:
        return b"event: error\ndata: " + self.body(error) + b"\n\n"

    def response(self, error: OpenAIError) -> Response:
        """A whole error answer outside a request's `Claim` (the framework's 404/405/422)."""
        status, body, headers = self.answer(error)
        return Response(
            body, status_code=status, headers=dict(headers), media_type="application/json"
        )


#: Paths answered in this dialect, the framework's own errors included.
PATH_PREFIX = "/v1/messages"


def speaks_anthropic(path: str) -> bool:
    return path == PATH_PREFIX or path.startswith(PATH_PREFIX + "/")
