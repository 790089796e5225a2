"""SGLang's error bodies, which differ by route and by where the error is raised.

- Request validation (malformed JSON, wrong types) on any route: HTTP 400 with the flat
  `ErrorResponse` `{"object":"error","message","type":"Bad Request","param":null,"code":400}`
  (SGLang overrides FastAPI's 422).
- OpenAI routes: the same flat body, type `BadRequestError` (or the status code as a string
  for an HTTPException such as the 503 of a full queue); inside a stream, that body under
  `error`.
- Native `/generate`: `{"error":{"message"}}` for a ValueError, `{"error":"<text>"}` for a
  body the JSON contract refuses, and the flat body for an HTTPException; inside a stream,
  `{"error": {message, type, code, retryable}}`.
- Routing (unknown path, wrong method): FastAPI's `{"detail": "Not Found"}`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from switchyard.enginesim.bodies import InvalidBody
from switchyard.enginesim.serving import OrjsonResponse

#: SGLang's `validate_json_request` refusal, as it words it.
UNSUPPORTED_MEDIA_TYPE: Final = {
    "loc": ["header", "content-type"],
    "msg": "Unsupported Media Type: Only 'application/json' is allowed",
    "type": "value_error",
}


class EngineHTTPError(Exception):
    """A fastapi.HTTPException raised by SGLang's handlers (e.g. 503 for a full queue)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail


def error_body(
    message: str, err_type: str = "BadRequestError", code: int = 400, param: str | None = None
) -> dict[str, Any]:
    """SGLang's `ErrorResponse` (the flat shape of OpenAI routes)."""
    return {"object": "error", "message": message, "type": err_type, "param": param, "code": code}


def openai_error(message: str, err_type: str = "BadRequestError", code: int = 400) -> Response:
    return OrjsonResponse(error_body(message, err_type, code), status_code=code)


def native_error(message: str) -> Response:
    """`/generate`'s answer to a ValueError (`_create_error_response`)."""
    return OrjsonResponse({"error": {"message": message}}, status_code=400)


def native_stream_error(message: str) -> bytes:
    """The JSON of the error event of a native stream (then `[DONE]` follows)."""
    error = {"message": message, "type": "invalid_request_error", "code": 400, "retryable": False}
    return orjson.dumps({"error": error})


def openai_stream_error(message: str, err_type: str, code: int) -> bytes:
    """The JSON of the error event of an OpenAI stream (`create_streaming_error_response`)."""
    return orjson.dumps({"error": error_body(message, err_type, code)})


def require_object(body: Any) -> dict[str, Any]:
    """The body as a JSON object, or the validation error of a dataclass body that is not one."""
    if not isinstance(body, dict):
        msg = "Input should be a dictionary or an instance of the dataclass"
        raise InvalidBody([{"type": "dataclass_type", "loc": ("body",), "msg": msg, "input": body}])
    return body


async def _invalid_body(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidBody)
    # FastAPI's str(exc), then SGLang appends str(exc.errors()).
    count, errors = len(exc.errors), exc.errors
    lines = "".join(f"  {e}\n" for e in errors)
    message = f"{count} validation error{'s' if count != 1 else ''}:\n{lines} {errors}"
    return openai_error(message, "Bad Request", 400)


async def _engine_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineHTTPError)
    return openai_error(exc.detail, str(exc.status_code), exc.status_code)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """FastAPI's default for routing errors: `{"detail": ...}`."""
    assert isinstance(exc, HTTPException)
    return OrjsonResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=dict(exc.headers or {})
    )


HANDLERS: Final = {
    InvalidBody: _invalid_body,
    EngineHTTPError: _engine_http_error,
    HTTPException: _http_exception,
}
