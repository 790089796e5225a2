"""Request bodies as FastAPI reads and validates them: vLLM and SGLang are FastAPI apps.

FastAPI parses a body as JSON (Python's `json`, so its error texts) when the content type
is JSON, and reports every problem as a `RequestValidationError`: a list of
pydantic-style errors with a `loc` under `body`. Each engine renders that list its own way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request

Model = TypeVar("Model", bound=BaseModel)
MISSING: Final = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}


class InvalidBody(Exception):
    """FastAPI's `RequestValidationError`: the body failed to parse or validate."""

    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__(f"{len(errors)} validation errors")
        self.errors = list(errors)


async def read_json(
    request: Request, media_type_error: object = None, *, any_media_type: bool = False
) -> Any:
    """The decoded body: JSON when the content type says so (`any_media_type`: whatever it
    says), else the bytes.

    InvalidBody for malformed JSON, then (given `media_type_error`, the engine's own error
    for it) for a content type other than `application/json`, then for an empty body.
    HTTPException 400 for bytes that are not text.
    """
    raw = await request.body()
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    json_type = any_media_type or (
        main == "application" and (sub == "json" or sub.endswith("+json"))
    )
    body = _loads(raw) if raw and json_type else raw
    if media_type_error is not None and media != "application/json":
        raise InvalidBody([media_type_error])
    if not raw:
        raise InvalidBody([MISSING])
    return body


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # orjson is stricter (NaN, huge integers): let json decide, and word the error
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}
        raise InvalidBody([{**error, "input": {}, "ctx": {"error": exc.msg}}]) from None
    except ValueError:  # not UTF-8/16/32
        raise HTTPException(400, "There was an error parsing the body") from None


async def read_model(
    request: Request, model: type[Model], media_type_error: object = None
) -> Model:
    """The body as `model` (see `read_json` and `validate`)."""
    return validate(model, await read_json(request, media_type_error))


def validate(model: type[Model], body: Any) -> Model:
    """`body` as `model`, or InvalidBody with pydantic's errors located under `body`."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise InvalidBody([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
