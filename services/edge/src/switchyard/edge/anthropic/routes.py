"""The Messages API's routes and their OpenAPI documentation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from switchyard.edge.anthropic.schemas import CountTokensRequest, MessagesRequest
from switchyard.edge.anthropic.service import handle_count_tokens, handle_messages
from switchyard.edge.state import EdgeState

#: The request schemas the OpenAPI document adds (the routes read their bodies themselves).
SCHEMAS = (MessagesRequest, CountTokensRequest)
#: `x-api-key`, Anthropic's header (a bearer token works too).
SECURITY_SCHEME = {"type": "apiKey", "in": "header", "name": "x-api-key"}

_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "request_id": {"type": ["string", "null"]},
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
    for status, text in {
        400: "invalid_request_error (also for unsupported fields and block types)",
        401: "authentication_error: missing or unknown key",
        404: "not_found_error: unknown model, or one the key may not use",
        413: "request_too_large",
        429: "rate_limit_error: the key's rate limit (see retry-after)",
        500: "api_error",
        502: "api_error: the model backend failed",
        503: "api_error: no backend is ready (see retry-after)",
        504: "timeout_error",
        529: "overloaded_error: the edge is at capacity (see retry-after)",
    }.items()
}
_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}


def _doc(model: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        },
        "security": [{"anthropic": []}, {"bearer": []}],
    }


def register(app: FastAPI, edge_of: Callable[[Request], EdgeState]) -> None:
    @app.post(
        "/v1/messages",
        openapi_extra=_doc("MessagesRequest"),
        responses={
            200: {
                "description": "A Message, or its stream of events (stream: true)",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/event-stream": {"schema": _EVENT},
                },
            },
            **_ERRORS,
        },
        tags=["anthropic"],
    )
    async def messages(request: Request) -> Response:
        """Create a message (Anthropic's Messages API; `stream: true` answers its events)."""
        return handle_messages(request, edge_of(request))

    @app.post(
        "/v1/messages/count_tokens",
        openapi_extra=_doc("CountTokensRequest"),
        responses={
            200: {
                "description": "The input's tokens, as the model's engine counts them",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["input_tokens"],
                            "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
                        }
                    }
                },
            },
            **_ERRORS,
        },
        tags=["anthropic"],
    )
    async def count_tokens(request: Request) -> Response:
        """Count a message's input tokens (Anthropic's API): one request on the key's limits."""
        return handle_count_tokens(request, edge_of(request))
