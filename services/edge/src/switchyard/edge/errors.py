"""Errors in OpenAI's shape, so the `openai` SDK raises its own exception classes.

Body: `{"error": {"message", "type", "param", "code"}}`; the status picks the SDK class
(400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 413, 429 RateLimitError,
5xx InternalServerError ...). Messages never contain API keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import grpc
import orjson
from starlette.responses import Response

from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb


class OpenAIError(Exception):
    """An error answered to the client; `headers` go out with it (Retry-After, rate limits)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        #: A short label for metrics and logs (e.g. "rate_limited", "backend_unavailable").
        self.kind = kind or code or type

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, extra_headers: Mapping[str, str] | None = None) -> Response:
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            headers={**self.headers, **(extra_headers or {})},
            media_type="application/json",
        )

    # The cases the pipeline meets.
    @classmethod
    def invalid(
        cls, message: str, param: str | None = None, code: str | None = None
    ) -> OpenAIError:
        return cls(400, message, param=param, code=code, kind="invalid_request")

    @classmethod
    def unauthorized(cls) -> OpenAIError:
        return cls(
            401,
            "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            kind="unauthorized",
        )

    @classmethod
    def model_not_found(cls, model: str) -> OpenAIError:
        # The same answer whether the model does not exist or the key may not use it.
        return cls(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
            kind="model_not_found",
        )

    @classmethod
    def too_large(cls, limit: int) -> OpenAIError:
        return cls(
            413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large"
        )

    @classmethod
    def busy(cls, message: str, retry_after_s: int, kind: str) -> OpenAIError:
        return cls(
            429,
            message,
            type="server_busy",
            code="server_busy",
            headers={"retry-after": str(retry_after_s)},
            kind=kind,
        )

    @classmethod
    def unavailable(
        cls, message: str, retry_after_s: int, kind: str = "backend_unavailable"
    ) -> OpenAIError:
        return cls(
            503,
            message,
            type="service_unavailable",
            code="service_unavailable",
            headers={"retry-after": str(retry_after_s)},
            kind=kind,
        )

    @classmethod
    def shutting_down(cls, retry_after_s: int) -> OpenAIError:
        """The shutdown's grace period ended before the request did."""
        return cls.unavailable(
            "The server is shutting down; retry the request.", retry_after_s, kind="shutdown"
        )

    @classmethod
    def internal(
        cls, message: str = "The server had an error while processing your request."
    ) -> OpenAIError:
        return cls(500, message, type="server_error", code="internal_error", kind="internal")


def from_inference(error: InferenceError, retry_after_s: int) -> OpenAIError:
    """The client's answer for an adapter's error (DESIGN 1.2: 400 / 429 / 503 / 504)."""
    param = error.metadata.get("param")
    code = error.code
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if error.reason == pb.CONTEXT_LENGTH_EXCEEDED:
            return OpenAIError.invalid(
                error.message, param or "messages", "context_length_exceeded"
            )
        if error.reason == pb.UNSUPPORTED_CONSTRAINT:
            return OpenAIError.invalid(
                error.message, param or "response_format", "unsupported_parameter"
            )
        if error.reason == pb.UNSUPPORTED_FEATURE:
            # The engine, as started, cannot serve it (no tool parser, a text-only model...).
            return OpenAIError.invalid(error.message, param, "unsupported_parameter")
        return OpenAIError.invalid(error.message, param)
    if code == grpc.StatusCode.NOT_FOUND:
        return OpenAIError(
            404, error.message, param="model", code="model_not_found", kind="model_not_found"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return OpenAIError.busy(
            "The model is overloaded; retry after a moment.",
            retry_after_s,
            kind="backend_overloaded",
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return OpenAIError.unavailable(
            "No backend for this model could serve the request.", retry_after_s
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return OpenAIError(
            504, "The request timed out.", type="timeout", code="timeout", kind="timeout"
        )
    return OpenAIError(
        502,
        "The model backend failed while generating.",
        type="server_error",
        code="backend_error",
        kind="backend_error",
    )


def stream_error_event(error: OpenAIError) -> bytes:
    """The one SSE event that ends a stream that fails after its first byte."""
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"


class ErrorDialect(Protocol):
    """How an API answers the edge's errors (`OpenAIError` is the edge's one error type,
    named for the API it began with): its status, body and headers before the first
    byte, and the last event of a stream that fails after it. A dialect may be made per
    request (one whose stream events carry sequence numbers, say)."""

    def answer(self, error: OpenAIError) -> tuple[int, bytes, Mapping[str, str]]: ...

    def stream_event(self, error: OpenAIError) -> bytes: ...


class _OpenAIErrors:
    def answer(self, error: OpenAIError) -> tuple[int, bytes, Mapping[str, str]]:
        return error.status, orjson.dumps(error.body()), error.headers

    def stream_event(self, error: OpenAIError) -> bytes:
        return stream_error_event(error)


#: OpenAI's own error shapes (chat, completions, embeddings, responses).
OPENAI_ERRORS: ErrorDialect = _OpenAIErrors()
