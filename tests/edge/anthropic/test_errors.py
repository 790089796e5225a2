"""The edge's errors in Anthropic's dialect: statuses, types and bodies the `anthropic` SDK
reads as its own (each body validated with its `ErrorResponse` type, each status mapped to
its exception class by the SDK itself)."""

from __future__ import annotations

import anthropic
import httpx2  # the SDK's own HTTP client
import orjson
import pytest
from anthropic.types import ErrorResponse

from switchyard.edge.anthropic.errors import AnthropicErrors, speaks_anthropic, unauthorized
from switchyard.edge.errors import OpenAIError

SDK = anthropic.Anthropic(api_key="unused", base_url="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("error", "status", "kind", "raised"),
    [
        (OpenAIError.invalid("bad"), 400, "invalid_request_error", anthropic.BadRequestError),
        (unauthorized(), 401, "authentication_error", anthropic.AuthenticationError),
        (OpenAIError(403, "no"), 403, "permission_error", anthropic.PermissionDeniedError),
        (OpenAIError.model_not_found("m"), 404, "not_found_error", anthropic.NotFoundError),
        (OpenAIError.too_large(10), 413, "request_too_large", anthropic.ContentTooLargeError),
        (
            OpenAIError(429, "limit", type="requests", code="rate_limit_exceeded"),
            429,
            "rate_limit_error",
            anthropic.RateLimitError,
        ),
        # The edge's own load, not the key's limits: Anthropic's "overloaded".
        (
            OpenAIError.busy("full", 1, "queue_full"),
            529,
            "overloaded_error",
            anthropic.OverloadedError,
        ),
        (OpenAIError.internal(), 500, "api_error", anthropic.InternalServerError),
        (
            OpenAIError(502, "backend", type="server_error"),
            502,
            "api_error",
            anthropic.InternalServerError,
        ),
        (OpenAIError.unavailable("none", 2), 503, "api_error", anthropic.ServiceUnavailableError),
        (
            OpenAIError(504, "slow", type="timeout"),
            504,
            "timeout_error",
            anthropic.GatewayTimeoutError,
        ),
    ],
)
def test_statuses_types_and_the_sdks_classes(
    error: OpenAIError, status: int, kind: str, raised: type[anthropic.APIStatusError]
) -> None:
    answered, body, headers = AnthropicErrors("req-9").answer(error)
    assert answered == status
    assert headers == error.headers  # Retry-After and the like go out as they are
    data = orjson.loads(body)
    assert data == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": "req-9",
    }
    if kind != "request_too_large":  # in Anthropic's docs, not among the SDK's error types
        ErrorResponse.model_validate(data)
    response = httpx2.Response(answered, request=httpx2.Request("POST", "http://edge/v1/messages"))
    exc = SDK._make_status_error("x", body=orjson.loads(body), response=response)
    assert type(exc) is raised


def test_a_failed_stream_ends_with_an_error_event() -> None:
    event = AnthropicErrors("req-1").stream_event(OpenAIError.unavailable("gone", 1))
    name, data, end = event.decode().split("\n", 2)
    assert name == "event: error"
    assert end == "\n"
    parsed = ErrorResponse.model_validate(orjson.loads(data.removeprefix("data: ")))
    assert parsed.error.message == "gone"


@pytest.mark.parametrize(
    ("path", "anthropic_shape"),
    [
        ("/v1/messages", True),
        ("/v1/messages/count_tokens", True),
        ("/v1/messages/batches", True),
        ("/v1/messagesx", False),
        ("/v1/chat/completions", False),
    ],
)
def test_which_paths_speak_anthropic(path: str, anthropic_shape: bool) -> None:
    assert speaks_anthropic(path) is anthropic_shape
