"""What SGLang's OpenAI routes share (`serving_base.py`, `usage_processor.py`, `utils.py`):
body parsing, submitting to the engine, waiting for a whole output, usage objects."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from switchyard.enginesim.serving import ClientDisconnected, until_disconnected
from switchyard.enginesim.sglang.engine import Handle, Job, Update
from switchyard.enginesim.sglang.errors import RequestInvalid, openai_error, read_json
from switchyard.enginesim.sglang.jobs import build_job
from switchyard.enginesim.sglang.outputs import abort_error
from switchyard.enginesim.sglang.prompts import Prompt
from switchyard.enginesim.sglang.protocol import ResponseFormat, StreamOptions
from switchyard.enginesim.sglang.runtime import Runtime

M = TypeVar("M", bound=BaseModel)

#: What SGLang constrains `response_format: {"type": "json_object"}` to.
JSON_OBJECT_SCHEMA = '{"type": "object"}'


class OpenAIServing:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def parse(self, request: Request, model: type[M]) -> M:
        """The body as `model`, or RequestInvalid (HTTP 400, never FastAPI's 422)."""
        body = await read_json(request, require_json_type=True)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise RequestInvalid.from_pydantic(exc) from None

    async def submit(
        self,
        request: Request,
        prompt: Prompt,
        sampling_params: Mapping[str, Any],
        *,
        rid: str | list[str] | None,
        stream: bool,
    ) -> tuple[Handle, Job]:
        """Start the generation; ValueError (HTTP 400) for what the engine refuses. The rid
        is held before the request is checked, as SGLang's tokenizer manager does."""
        if isinstance(rid, list):
            raise ValueError("The SGLang simulator serves one prompt per request.")
        rid = rid or uuid.uuid4().hex
        engine = self.rt.engine
        engine.hold([rid])
        try:
            job = await build_job(
                self.rt.limits,
                prompt,
                sampling_params,
                rid=rid,
                stream=stream,
                traceparent=request.headers.get("traceparent"),
            )
        except BaseException:
            engine.release(rid)
            raise
        return engine.submit(job), job

    def streaming(self, body: AsyncIterator[bytes], job: Job) -> StreamingResponse:
        """The SSE response of a stream that started; once it has ended, SGLang aborts its
        rid again after a delay (`create_abort_task`), whatever holds it by then."""
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            background=BackgroundTask(self.rt.engine.abort_after_stream, [job.rid]),
        )

    async def wait(self, request: Request, handle: Handle) -> Update | Response:
        """The whole output, or the error response SGLang gives for it."""
        try:
            update = await until_disconnected(request, handle.result())
        except ClientDisconnected:  # nobody reads this answer; it is SGLang's anyway
            handle.abort()
            return openai_error(
                "Request is disconnected from the client side (type 3). "
                f"Abort request obj.rid='{handle.rid}'"
            )
        error = abort_error(update.finish_reason)
        if error is not None:
            status, message = error
            if status == 400:  # a ValueError in SGLang
                return openai_error(message)
            return openai_error(message, str(status), status)  # an HTTPException
        return update

    def stream_flags(self, options: StreamOptions | None) -> tuple[bool, bool]:
        """(include_usage, continuous_usage_stats), as `should_include_usage` decides.

        Unlike vLLM, continuous_usage_stats does not need include_usage."""
        default = self.rt.args.stream_response_default_include_usage
        if options is None:
            return default, False
        return bool(options.include_usage) or default, bool(options.continuous_usage_stats)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """SGLang's UsageInfo."""
        details = {"cached_tokens": 0} if self.rt.args.enable_cache_report else None
        return {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": details,
            "reasoning_tokens": 0,
            "completion_tokens_details": None,
        }


def created() -> int:
    return int(time.time())


def prompt_tokens(job: Job, update: Update) -> int:
    """meta_info.prompt_tokens, which outputs that never reached the scheduler lack."""
    return job.prompt_tokens if update.scheduled else 0


def sampling_extras(body: Any) -> dict[str, Any]:
    """The SGLang extras both OpenAI routes pass through to SamplingParams."""
    return {
        "min_new_tokens": body.min_tokens,
        "stop_token_ids": body.stop_token_ids,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "regex": body.regex,
        "ebnf": body.ebnf,
        "n": body.n,
        "no_stop_trim": body.no_stop_trim,
        "ignore_eos": body.ignore_eos,
        "skip_special_tokens": body.skip_special_tokens,
        "logit_bias": body.logit_bias,
        "sampling_seed": body.seed,
    }


def response_format_params(fmt: ResponseFormat | None) -> dict[str, Any]:
    """The SamplingParams constraint of an OpenAI `response_format` (schemas as JSON text,
    serialized the way SGLang's `convert_json_schema_to_str` does)."""
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema_ is None:
            raise ValueError("schema_ is required for json_schema response format request.")
        return {"json_schema": json.dumps(fmt.json_schema.schema_)}
    if fmt.type == "json_object":
        return {"json_schema": JSON_OBJECT_SCHEMA}
    return {"structural_tag": json.dumps(fmt.model_dump(by_alias=True))}
