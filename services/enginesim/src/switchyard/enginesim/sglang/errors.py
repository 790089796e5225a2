"""SGLang's error bodies, which differ by route and by where the error is raised.

- Request validation (malformed JSON, wrong types) on any route: HTTP 400 with the flat
  `ErrorResponse` `{"object":"error","message","type":"Bad Request","param":null,"code":400}`
  (SGLang overrides FastAPI's 422).
- OpenAI routes: the same flat body, type `BadRequestError` (or the status code as a string
  for an HTTPException such as the 503 of a full queue).
- Native `/generate`: `{"error":{"message"}}` for a ValueError, `{"error":"<text>"}` for a
  body the JSON contract refuses, and the flat body for an HTTPException.
- Routing (unknown path, wrong method): FastAPI's `{"detail": "Not Found"}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from switchyard.enginesim.serving import OrjsonResponse

_JSON = "application/json"


class RequestInvalid(Exception):
    """FastAPI's RequestValidationError: the body does not parse into the route's model."""

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = [dict(e) for e in errors]

    @property
    def message(self) -> str:
        # FastAPI's str(exc), then SGLang appends str(exc.errors()).
        count = len(self.errors)
        lines = "".join(f"  {e}\n" for e in self.errors)
        head = f"{count} validation error{'s' if count != 1 else ''}:\n{lines}"
        return f"{head} {self.errors}"

    @classmethod
    def from_pydantic(cls, exc: ValidationError) -> RequestInvalid:
        errors = exc.errors(include_url=False)
        return cls([{**e, "loc": ("body", *e["loc"])} for e in errors])


class EngineHTTPError(Exception):
    """A fastapi.HTTPException raised by SGLang's handlers (e.g. 503 for a full queue)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def error_body(
    message: str, err_type: str = "BadRequestError", code: int = 400, param: str | None = None
) -> dict[str, Any]:
    """SGLang's `ErrorResponse` (the flat shape of OpenAI routes)."""
    return {"object": "error", "message": message, "type": err_type, "param": param, "code": code}


def openai_error(
    message: str, err_type: str = "BadRequestError", code: int = 400, param: str | None = None
) -> OrjsonResponse:
    return OrjsonResponse(error_body(message, err_type, code, param), status_code=code)


def native_error(message: str, status_code: int = 400) -> OrjsonResponse:
    """`/generate`'s answer to a ValueError (`_create_error_response`)."""
    return OrjsonResponse({"error": {"message": message}}, status_code=status_code)


def contract_error(message: str) -> OrjsonResponse:
    """`/generate`'s answer to a body its JSON contract (`sglang.api.v1`) refuses."""
    return OrjsonResponse({"error": message}, status_code=400)


def native_stream_error(message: str, code: int = 400) -> bytes:
    """The JSON of the error event of a native stream (then `[DONE]` follows)."""
    error = {"message": message, "type": "invalid_request_error", "code": code, "retryable": False}
    return orjson.dumps({"error": error})


def openai_stream_error(message: str, err_type: str = "BadRequestError", code: int = 400) -> bytes:
    """The JSON of the error event of an OpenAI stream (`create_streaming_error_response`)."""
    return orjson.dumps({"error": error_body(message, err_type, code)})


async def read_json(request: Request, *, require_json_type: bool = False) -> Any:
    """The request's JSON body, or RequestInvalid as FastAPI reports it.

    `require_json_type`: the OpenAI routes' `validate_json_request` dependency, which
    refuses any content type other than application/json.
    """
    if require_json_type:
        media_type = request.headers.get("content-type", "").lower().split(";", 1)[0].strip()
        if media_type != _JSON:
            raise RequestInvalid(
                [
                    {
                        "loc": ["header", "content-type"],
                        "msg": "Unsupported Media Type: Only 'application/json' is allowed",
                        "type": "value_error",
                    }
                ]
            )
    raw = await request.body()
    if not raw:
        raise RequestInvalid([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from None


def require_object(body: Any) -> dict[str, Any]:
    """The body as a JSON object, or the validation error of a dataclass body that is not one."""
    if not isinstance(body, dict):
        raise RequestInvalid(
            [
                {
                    "type": "dataclass_type",
                    "loc": ("body",),
                    "msg": "Input should be a dictionary or an instance of the dataclass",
                    "input": body,
                }
            ]
        )
    return body


async def on_request_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestInvalid)
    return openai_error(exc.message, "Bad Request", 400)


async def on_engine_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineHTTPError)
    return openai_error(exc.detail, str(exc.status_code), exc.status_code)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """FastAPI's default for routing errors: `{"detail": ...}`."""
    assert isinstance(exc, HTTPException)
    return OrjsonResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=dict(exc.headers or {})
    )
