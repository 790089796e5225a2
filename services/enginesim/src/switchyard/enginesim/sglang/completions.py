"""`POST /v1/completions` (`entrypoints/openai/serving_completions.py`).

Every engine output becomes one `text_completion` chunk (the last one carries
`finish_reason`, even with empty text); `usage` is null in chunks unless
`continuous_usage_stats`; the usage chunk drops its null fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from http import HTTPStatus
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.enginesim.serving import OrjsonResponse, sse_done, sse_event
from switchyard.enginesim.sglang import prompts
from switchyard.enginesim.sglang.engine import Handle, Job
from switchyard.enginesim.sglang.errors import openai_error, openai_stream_error
from switchyard.enginesim.sglang.openai_base import (
    OpenAIServing,
    created,
    prompt_tokens,
    response_format_params,
    sampling_extras,
)
from switchyard.enginesim.sglang.outputs import abort_error, finish_type, matched_stop
from switchyard.enginesim.sglang.prompts import Prompt
from switchyard.enginesim.sglang.protocol import CompletionRequest


class CompletionsApi(OpenAIServing):
    def routes(self) -> list[Route]:
        return [Route("/v1/completions", self.create, methods=["POST"])]

    async def create(self, request: Request) -> Response:
        body = await self.parse(request, CompletionRequest)
        prompt_in = body.prompt
        if not prompt_in or (isinstance(prompt_in, list) and all(not p for p in prompt_in)):
            return openai_error("Prompt cannot be empty")
        try:
            sampling_params = _sampling_params(body)
        except ValueError as exc:
            return openai_error(str(exc), "BadRequest")
        try:
            prompt = await _prompt(body)
            handle, job = await self.submit(
                request, prompt, sampling_params, rid=body.rid, stream=body.stream
            )
        except ValueError as exc:
            return openai_error(str(exc))
        echo = prompt.text if body.echo else ""
        if body.stream:
            return self.streaming(self._stream(handle, job, body, echo), job)
        update = await self.wait(request, handle)
        if isinstance(update, Response):
            return update
        finish = update.finish_reason
        choice = {
            "index": 0,
            "text": echo + update.text,
            "logprobs": None,
            "finish_reason": finish_type(finish),
            "matched_stop": matched_stop(finish),
        }
        return OrjsonResponse(
            {
                "id": job.rid,
                "object": "text_completion",
                "created": created(),
                "model": body.model,
                "choices": [choice],
                "usage": self.usage(prompt_tokens(job, update), update.completion_tokens),
                "metadata": {"weight_version": "default"},
            }
        )

    async def _stream(
        self, handle: Handle, job: Job, body: CompletionRequest, echo: str
    ) -> AsyncIterator[bytes]:
        include_usage, continuous = self.stream_flags(body.stream_options)
        rid, created_at = job.rid, created()
        prompt, completion = 0, 0
        try:
            async with aclosing(handle.updates()) as updates:
                async for update in updates:
                    prompt, completion = prompt_tokens(job, update), update.completion_tokens
                    finish = update.finish_reason
                    error = abort_error(finish)
                    if error is not None:
                        status, message = error
                        yield sse_event(
                            openai_stream_error(message, HTTPStatus(status).name, status)
                        )
                        break
                    choice = {
                        "index": 0,
                        "text": echo + update.text if update.first else update.text,
                        "logprobs": None,
                        "finish_reason": finish_type(finish),
                        "matched_stop": matched_stop(finish),
                    }
                    chunk = {
                        "id": rid,
                        "object": "text_completion",
                        "created": created_at,
                        "model": body.model,
                        "choices": [choice],
                        "usage": self.usage(prompt, completion) if continuous else None,
                    }
                    yield sse_event(orjson.dumps(chunk))
            if include_usage:
                usage = {k: v for k, v in self.usage(prompt, completion).items() if v is not None}
                final = {
                    "id": rid,
                    "object": "text_completion",
                    "created": created_at,
                    "model": body.model,
                    "choices": [],
                    "usage": usage,
                }
                yield sse_event(orjson.dumps(final))
        finally:
            handle.abort()  # a no-op once finished; a client that left lands here
        yield sse_done()


async def _prompt(body: CompletionRequest) -> Prompt:
    value = body.prompt
    if isinstance(value, str):
        return await prompts.from_text(value)
    if value and all(isinstance(v, int) for v in value):
        return await prompts.from_ids([int(v) for v in value if isinstance(v, int)])
    raise ValueError("The SGLang simulator serves one prompt per request.")


def _sampling_params(body: CompletionRequest) -> dict[str, Any]:
    """`OpenAIServingCompletion._build_sampling_params`."""
    params: dict[str, Any] = {
        "temperature": body.temperature,
        "max_new_tokens": body.max_tokens,
        "stop": body.stop,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "repetition_penalty": body.repetition_penalty,
        "json_schema": body.json_schema,
        **sampling_extras(body),
        **response_format_params(body.response_format),
    }
    return params
