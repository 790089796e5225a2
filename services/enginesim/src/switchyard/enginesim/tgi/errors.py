"""TGI's errors: the router's `InferError` kinds, their statuses and their two renderings.

A handler raises `InferError`; it becomes `{"error", "error_type"}` with the kind's
HTTP status before a stream starts, an SSE event inside a native stream (status 200),
or the OpenAI-shaped event `{"error": {"message", "http_status_code": 422}}` inside a
chat stream (`router/src/server.rs`, `infer/mod.rs`). Bodies that do not deserialize
are axum's rejections instead: plain text, never JSON (`BodyRejection`).
"""

from __future__ import annotations

from typing import Final

import orjson
from starlette.responses import PlainTextResponse

from switchyard.enginesim.serving import OrjsonResponse, sse_event

_STATUS: Final = {
    "generation": 424,
    "overloaded": 429,
    "validation": 422,
    "incomplete_generation": 500,
    "template_error": 422,
    "missing_template_variable": 422,
    "tool_error": 422,
}
_PREFIX: Final = {
    "generation": "Request failed during generation: ",
    "validation": "Input validation error: ",
    "template_error": "Template error: ",
    "missing_template_variable": "Missing template vatiable: ",  # sic, as TGI spells it
    "tool_error": "Tool error: ",
}

_FIXED: Final = {
    "overloaded": "Model is overloaded",
    "incomplete_generation": "Incomplete generation",
}
#: Label values of `tgi_request_failure{err}` the router uses per kind.
FAILURE_LABEL: Final = {
    "generation": "generation",
    "overloaded": "overloaded",
    "validation": "validation",
    "incomplete_generation": "incomplete",
    "template_error": "template",
    "missing_template_variable": "template",
    "tool_error": "",  # not counted
}


class InferError(Exception):
    """An error of the router's inference path; `message` is TGI's full text."""

    def __init__(self, error_type: str, detail: str = "") -> None:
        self.error_type = error_type
        self.message = _FIXED.get(error_type) or _PREFIX.get(error_type, "") + detail
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return _STATUS[self.error_type]

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}

    def response(self) -> OrjsonResponse:
        return OrjsonResponse(self.body(), status_code=self.status)

    def sse(self) -> bytes:
        """The error as a native stream event (`/generate_stream`, `/v1/completions`)."""
        return sse_event(orjson.dumps(self.body()), space=False)

    def openai_sse(self) -> bytes:
        """The error as a chat stream event: OpenAI's shape, always marked 422."""
        payload = {"error": {"message": self.message, "http_status_code": 422}}
        return sse_event(orjson.dumps(payload), space=False)


def validation(detail: str) -> InferError:
    return InferError("validation", detail)


class BodyRejection(Exception):
    """axum's `Json` extractor refusing a body: plain text, its own status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> PlainTextResponse:
        return PlainTextResponse(self.message, status_code=self.status)


def data_error(detail: str) -> BodyRejection:
    """Valid JSON of the wrong shape (serde's message): 422."""
    return BodyRejection(422, f"Failed to deserialize the JSON body into the target type: {detail}")
