"""SGLang's native generation API: `POST|PUT /generate` and `POST /abort_request`.

`/generate` answers `{"text", "output_ids", "meta_info"}`. Streamed (`"stream": true`),
it sends `data: {...}` events that repeat the whole output so far (text and output_ids
are cumulative) unless the server runs with --incremental-streaming-output, then
`data: [DONE]`. Errors found while preparing a stream arrive as an error event inside an
HTTP 200 stream, because SGLang has sent its headers by then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard.enginesim.serving import (
    ClientDisconnected,
    OrjsonResponse,
    sse_done,
    sse_event,
    until_disconnected,
)
from switchyard.enginesim.sglang import prompts
from switchyard.enginesim.sglang.contract import check_generate_body
from switchyard.enginesim.sglang.engine import Handle, Job, Update
from switchyard.enginesim.sglang.errors import (
    EngineHTTPError,
    RequestInvalid,
    contract_error,
    native_error,
    native_stream_error,
    read_json,
    require_object,
)
from switchyard.enginesim.sglang.jobs import build_job
from switchyard.enginesim.sglang.outputs import abort_error
from switchyard.enginesim.sglang.runtime import Runtime

_BATCH = "The SGLang simulator serves one prompt per request; batched requests are not simulated."


def meta_info(job: Job, update: Update, *, weight_version: str = "default") -> dict[str, Any]:
    """The `meta_info` SGLang attaches to every output of a request."""
    finish = update.finish_reason
    meta: dict[str, Any]
    if update.scheduled:
        meta = {
            "id": job.rid,
            "finish_reason": finish,
            "prompt_tokens": job.prompt_tokens,
            "weight_version": weight_version,
            "num_retractions": 0,
            "reasoning_tokens": 0,
            "completion_tokens": update.completion_tokens,
            "cached_tokens": 0,
        }
        if finish is not None:
            meta["e2e_latency"] = update.e2e_latency
    else:  # ended before reaching the scheduler's output path (queue, abort)
        meta = {
            "id": job.rid,
            "finish_reason": finish,
            "weight_version": weight_version,
            "e2e_latency": update.e2e_latency,
            "completion_tokens": update.completion_tokens,
        }
    if update.first:
        meta["response_sent_to_client_ts"] = time.time()
    return meta


class NativeApi:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def routes(self) -> list[Route]:
        return [
            Route("/generate", self.generate, methods=["POST", "PUT"]),
            Route("/abort_request", self.abort_request, methods=["POST"]),
        ]

    async def generate(self, request: Request) -> Response:
        body = require_object(await read_json(request))
        violation = check_generate_body(body)
        if violation is not None:
            return contract_error(violation)
        traceparent = request.headers.get("traceparent")
        if body.get("stream"):
            return StreamingResponse(
                self._stream(body, traceparent), media_type="text/event-stream"
            )
        try:
            handle, job = await self._submit(body, stream=False, traceparent=traceparent)
        except ValueError as exc:
            return native_error(str(exc))
        try:
            update = await until_disconnected(request, handle.result())
        except ClientDisconnected:
            handle.abort()
            return native_error(
                "Request is disconnected from the client side (type 3). "
                f"Abort request obj.rid='{job.rid}'"
            )
        error = abort_error(update.finish_reason)
        if error is not None:  # SGLang: a ValueError for 400, an HTTPException otherwise
            status, message = error
            if status == 400:
                return native_error(message)
            raise EngineHTTPError(status, message)
        return OrjsonResponse(
            {"text": update.text, "output_ids": update.ids, "meta_info": meta_info(job, update)}
        )

    async def _submit(
        self, body: dict[str, Any], *, stream: bool, traceparent: str | None
    ) -> tuple[Handle, Job]:
        """The request's job, started (ValueError: what SGLang refuses with a 400)."""
        text, input_ids = body.get("text"), body.get("input_ids")
        if text is None and input_ids is None:
            raise ValueError("Either text, input_ids or input_embeds should be provided.")
        sampling_params = body.get("sampling_params") or {}
        rid = body.get("rid")
        if any(isinstance(v, list) for v in (text, rid, sampling_params)) or (
            input_ids and isinstance(input_ids[0], list)
        ):
            raise ValueError(_BATCH)
        if input_ids is not None:
            prompt = await prompts.from_ids(input_ids)
        else:
            prompt = await prompts.from_text(str(text))
        job = await build_job(
            self._rt.limits,
            prompt,
            sampling_params,
            rid=rid or uuid.uuid4().hex,
            stream=stream,
            traceparent=traceparent,
        )
        return self._rt.engine.submit(job), job

    async def _stream(self, body: dict[str, Any], traceparent: str | None) -> AsyncIterator[bytes]:
        try:
            handle, job = await self._submit(body, stream=True, traceparent=traceparent)
        except ValueError as exc:
            yield sse_event(native_stream_error(str(exc)))
            yield sse_done()
            return
        incremental = self._rt.args.incremental_streaming_output
        text = ""
        ids: list[int] = []
        try:
            async with aclosing(handle.updates()) as updates:
                async for update in updates:
                    if incremental:
                        text, ids = update.text, update.ids
                    else:
                        text += update.text
                        ids.extend(update.ids)
                    meta = meta_info(job, update)
                    yield sse_event(
                        orjson.dumps({"text": text, "output_ids": ids, "meta_info": meta})
                    )
        finally:
            handle.abort()  # a no-op once finished; a client that left lands here
        yield sse_done()

    async def abort_request(self, request: Request) -> Response:
        body = require_object(await read_json(request))
        rid, abort_all = body.get("rid"), body.get("abort_all", False)
        if not isinstance(rid, str | None) or not isinstance(abort_all, bool):
            raise RequestInvalid(
                [{"type": "model_type", "loc": ("body",), "msg": "Invalid AbortReq", "input": body}]
            )
        if abort_all:
            self._rt.engine.abort_all()
        elif rid:
            self._rt.engine.abort(rid)
        return Response(status_code=200)
