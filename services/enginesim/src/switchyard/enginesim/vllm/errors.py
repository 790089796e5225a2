"""vLLM's errors: the nested `{"error": {message, type, param, code}}` body and its statuses.

Mirrors `vllm/entrypoints/serve/exception_handling/`: `VLLMValidationError` → 400
`BadRequestError` with `param` (its text gains ` (parameter=…, value=…)`), not found →
404 `NotFoundError`, queue limits → 503 `Service Unavailable`, request-body validation
(FastAPI's `RequestValidationError`, including malformed JSON) → 400 `Bad Request` with
vLLM's bounded rendering of each error, anything else → 500 `InternalServerError`.
Routing errors (no such route, wrong method) are FastAPI's `{"detail": ...}`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from switchyard.enginesim.bodies import InvalidBody
from switchyard.enginesim.serving import ClientDisconnected, OrjsonResponse

log = logging.getLogger("switchyard.enginesim.vllm")

_MAX_REPORTED_ERRORS: Final = 10
_MAX_ERROR_INPUT_CHARS: Final = 200
_MAX_ERROR_CHARS: Final = 1000
#: vLLM's `validate_json_request` refusal, as it words it.
UNSUPPORTED_MEDIA_TYPE: Final = "Unsupported Media Type: Only 'application/json' is allowed"


def error_body(message: str, err_type: str, code: int, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


class VllmError(Exception):
    """An error vLLM answers with its error body (never a ValueError: pydantic must not wrap it)."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST
    err_type: str = "BadRequestError"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.err_type, self.status.value, self.param)


class InvalidRequest(VllmError):
    """`VLLMValidationError`: 400 with the parameter named, and in the text."""

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        extras = [
            f"{k}={v}" for k, v in (("parameter", parameter), ("value", value)) if v is not None
        ]
        super().__init__(f"{message} ({', '.join(extras)})" if extras else message, parameter)


class ModelNotFound(VllmError):
    status = HTTPStatus.NOT_FOUND
    err_type = "NotFoundError"

    def __init__(self, model: str, served: Sequence[str]) -> None:
        super().__init__(
            f"The model `{model}` does not exist. Valid aliases: {', '.join(served)}.", "model"
        )


class QueueOverflow(VllmError):
    """`QueueOverflowError`: more unfinished requests than `--max-num-queued-reqs`."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    err_type = HTTPStatus.SERVICE_UNAVAILABLE.phrase

    def __init__(self) -> None:
        super().__init__(
            "The engine is currently busy and cannot accept new requests. "
            "Please try again later or on a different instance."
        )


def _bounded(text: str, limit: int) -> str:
    return text[:limit] + "...[truncated]" if len(text) > limit else text


def _summarize_input(value: object) -> object:
    # Bounded like vLLM: pydantic echoes the whole input in every error.
    if isinstance(value, bytes | bytearray):
        return f"<{type(value).__name__} of {len(value)} bytes>"
    if isinstance(value, list | tuple | set | frozenset | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    return _bounded(value if isinstance(value, str) else str(value), _MAX_ERROR_INPUT_CHARS)


def _location(loc: Sequence[Any]) -> str:
    # Our models have no wrapper validators, so every segment is a field name or an index.
    return ".".join(str(part) for part in loc)


def _format_error(error: object) -> str:
    if isinstance(error, dict):
        error = dict(error)
        if "input" in error:
            error["input"] = _summarize_input(error["input"])
        if isinstance(error.get("loc"), tuple | list):
            error["loc"] = _location(error["loc"])
    return _bounded(str(error), _MAX_ERROR_CHARS)


def validation_body(errors: Sequence[Any]) -> dict[str, Any]:
    """vLLM's body for a `RequestValidationError` (its `validation_exception_handler`)."""
    param = None
    if errors and isinstance(errors[0], dict) and errors[0].get("loc"):
        param = _location(errors[0]["loc"])
    message = "Validation error"
    if errors:
        label = "error" if len(errors) == 1 else "errors"
        reported = errors[:_MAX_REPORTED_ERRORS]
        message = f"{len(errors)} validation {label}:\n"
        message += "".join(f"  {_format_error(e)}\n" for e in reported)
        if len(errors) > len(reported):
            message += f"  ...and {len(errors) - len(reported)} more {label}\n"
        message = message.rstrip()
    return error_body(message, HTTPStatus.BAD_REQUEST.phrase, HTTPStatus.BAD_REQUEST.value, param)


async def _vllm_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VllmError)
    return OrjsonResponse(exc.body(), status_code=exc.status.value)


async def _invalid_body(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidBody)
    return OrjsonResponse(validation_body(exc.errors), status_code=HTTPStatus.BAD_REQUEST.value)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route: 404, wrong method: 405): FastAPI's body.

    vLLM registers its handler for `fastapi.HTTPException`, a subclass, so Starlette's
    routing errors reach FastAPI's default handler: `{"detail": "Not Found"}`.
    """
    assert isinstance(exc, HTTPException)
    return OrjsonResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """vLLM's safety net: anything else is a 500 `InternalServerError`."""
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    return OrjsonResponse(
        error_body(str(exc), "InternalServerError", status.value), status_code=status.value
    )


async def _disconnected(request: Request, exc: Exception) -> Response:
    return Response()  # nobody reads it


HANDLERS: Final = {
    ClientDisconnected: _disconnected,
    VllmError: _vllm_error,
    InvalidBody: _invalid_body,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
