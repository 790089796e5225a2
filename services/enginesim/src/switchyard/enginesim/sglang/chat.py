"""`POST /v1/chat/completions` (`entrypoints/openai/serving_chat.py`).

A stream sends a first chunk with `delta.role`, content chunks, a separate last chunk with
`finish_reason` and `matched_stop`, the usage chunk (`choices: []`) when asked, then
`[DONE]`. `delta.reasoning_content` is always present (null). An abort with an error
status (a full queue: 503) becomes one `{"error": {...}}` event inside the HTTP 200
stream; a request refused before streaming (context length) is an HTTP 400.
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

from switchyard.enginesim.chat_template import render
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
from switchyard.enginesim.sglang.protocol import ChatCompletionRequest, ResponseFormat
from switchyard.enginesim.tokenizer import IM_END


class ChatApi(OpenAIServing):
    def routes(self) -> list[Route]:
        return [Route("/v1/chat/completions", self.create, methods=["POST"])]

    async def create(self, request: Request) -> Response:
        body = await self.parse(request, ChatCompletionRequest)
        problem = self._validate(body)
        if problem is not None:
            return openai_error(problem)
        try:
            text = _render(body)
            sampling_params = _sampling_params(body)
        except ValueError as exc:  # raised while converting the request
            return openai_error(str(exc), "BadRequest")
        try:
            prompt = await prompts.from_text(text)
            handle, job = await self.submit(
                request, prompt, sampling_params, rid=body.rid, stream=body.stream
            )
        except ValueError as exc:
            return openai_error(str(exc))
        if body.stream:
            return self.streaming(self._stream(handle, job, body), job)
        update = await self.wait(request, handle)
        if isinstance(update, Response):
            return update
        finish = update.finish_reason
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": update.text, "reasoning_content": None},
            "logprobs": None,
            "finish_reason": finish_type(finish),
            "matched_stop": matched_stop(finish),
        }
        return OrjsonResponse(
            {
                "id": job.rid,
                "object": "chat.completion",
                "created": created(),
                "model": body.model,
                "choices": [choice],
                "usage": self.usage(prompt_tokens(job, update), update.completion_tokens),
                "metadata": {"weight_version": "default"},
            }
        )

    def _validate(self, body: ChatCompletionRequest) -> str | None:
        if not body.messages:
            return "Messages cannot be empty."
        args = self.rt.args
        max_output = body.max_completion_tokens or body.max_tokens
        # Checked only when --context-length was given (SGLang reads the server argument).
        checked = args.context_length_set and not args.allow_auto_truncate
        if max_output and checked and max_output > args.context_length:
            return (
                f"max_completion_tokens is too large: {max_output}."
                f"This model supports at most {args.context_length} completion tokens."
            )
        fmt = body.response_format
        wants_schema = fmt is not None and fmt.type == "json_schema"
        if wants_schema and (
            fmt is None or fmt.json_schema is None or fmt.json_schema.schema_ is None
        ):
            return "schema_ is required for json_schema response format request."
        return None

    async def _stream(
        self, handle: Handle, job: Job, body: ChatCompletionRequest
    ) -> AsyncIterator[bytes]:
        include_usage, continuous = self.stream_flags(body.stream_options)
        chunk = _ChunkWriter(job.rid, created(), body.model)
        finish: dict[str, Any] | None = None
        prompt, completion = 0, 0
        try:
            async with aclosing(handle.updates()) as updates:
                async for update in updates:
                    prompt, completion = prompt_tokens(job, update), update.completion_tokens
                    error = abort_error(update.finish_reason)
                    if error is not None:
                        status, message = error
                        yield sse_event(
                            openai_stream_error(message, HTTPStatus(status).name, status)
                        )
                        break
                    finish = update.finish_reason
                    if update.first:
                        yield chunk(role="assistant", content="")
                    if update.text:
                        usage = self.usage(prompt, completion) if continuous else None
                        yield chunk(content=update.text, usage=usage)
            if finish is not None:
                yield chunk(finish=finish_type(finish), matched=matched_stop(finish))
            if include_usage:
                yield chunk.usage(self.usage(prompt, completion))
        finally:
            handle.abort()  # a no-op once finished; a client that left lands here
        yield sse_done()


class _ChunkWriter:
    """`chat.completion.chunk` events (SGLang's `build_sse_content`), serialized with orjson."""

    __slots__ = ("_created", "_id", "_model")

    def __init__(self, rid: str, created_at: int, model: str) -> None:
        self._id, self._created, self._model = rid, created_at, model

    def __call__(
        self,
        *,
        role: str | None = None,
        content: str | None = None,
        finish: str | None = None,
        matched: Any = None,
        usage: dict[str, Any] | None = None,
    ) -> bytes:
        delta: dict[str, Any] = {"reasoning_content": None}
        if role is not None:
            delta["role"] = role
        if content is not None:
            delta["content"] = content
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
            "matched_stop": matched,
        }
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [choice],
        }
        if usage is not None:
            chunk["usage"] = usage
        return sse_event(orjson.dumps(chunk))

    def usage(self, usage: dict[str, Any]) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
            "usage": usage,
        }
        return sse_event(orjson.dumps(chunk))


def _lacks_schema(fmt: ResponseFormat | None) -> bool:
    if fmt is None or fmt.type != "json_schema":
        return False
    return fmt.json_schema is None or fmt.json_schema.schema_ is None


def _render(body: ChatCompletionRequest) -> str:
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    last = body.messages[-1]
    if body.continue_final_message and last.role == "assistant":
        # Continue the assistant's turn: no generation prompt, no end-of-turn marker.
        return render(messages, add_generation_prompt=False).removesuffix(f"{IM_END}\n")
    return render(messages)


def _sampling_params(body: ChatCompletionRequest) -> dict[str, Any]:
    """`ChatCompletionRequest.to_sampling_params`: user value, else the OpenAI default."""
    params: dict[str, Any] = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "max_new_tokens": body.max_completion_tokens or body.max_tokens,
        "stop": body.stop_list(),
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "top_k": -1 if body.top_k is None else body.top_k,
        "min_p": 0.0 if body.min_p is None else body.min_p,
        "repetition_penalty": 1.0 if body.repetition_penalty is None else body.repetition_penalty,
        **sampling_extras(body),
        **response_format_params(body.response_format),
    }
    return params
