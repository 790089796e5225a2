"""SGLang's native generation API: `POST|PUT /generate` and `POST /abort_request`.

`/generate` answers `{"text", "output_ids", "meta_info"}`. Streamed (`"stream": true`),
it sends `data: {...}` events that repeat the whole output so far (text and output_ids
are cumulative) unless the server runs with --incremental-streaming-output, then
`data: [DONE]`. Errors found while preparing a stream arrive as an error event inside an
HTTP 200 stream, because SGLang has sent its headers by then. Once a stream has ended,
its rid(s) are aborted again after a delay (`create_abort_task`), whatever holds them.

A list in `text` (or a list of token-id lists in `input_ids`) is a batch, as SGLang's own
frontend sends for `select()`: one sub-request per prompt, with rids from a `rid` list, or
`<rid>_<i>` from one `rid` string, or fresh ones; `sampling_params` is one object for all
or a list, one per prompt. The answer is a list of outputs in prompt order; streamed,
each sub-request's events come as they are made, each with its prompt's `index`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.background import BackgroundTask
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
from switchyard.enginesim.sglang.engine import Handle, Job, SglangEngine, Update
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


@dataclass(frozen=True, slots=True)
class Prompt:
    """One sub-request of a `/generate` body: its rid, its prompt, its sampling_params."""

    rid: str
    text: str | None
    input_ids: Sequence[int] | None
    sampling_params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class GenerateInput:
    prompts: list[Prompt]
    batch: bool


def normalize(body: Mapping[str, Any]) -> GenerateInput:
    """`GenerateReqInput.normalize_batch_and_arguments`: one prompt or a batch, each with
    its rid and sampling_params (ValueError with SGLang's message)."""
    text, input_ids = body.get("text"), body.get("input_ids")
    if text is None and input_ids is None:
        raise ValueError("Either text, input_ids or input_embeds should be provided.")
    texts: list[str | None]
    ids: list[Sequence[int] | None]
    if text is not None:
        batch = not isinstance(text, str)
        texts = list(text) if batch else [text]
        ids = [None] * len(texts)
    else:
        if not input_ids:
            raise ValueError("input_ids cannot be empty.")
        batch = isinstance(input_ids[0], list)
        ids = list(input_ids) if batch else [input_ids]
        texts = [None] * len(ids)
    params = body.get("sampling_params")
    rid = body.get("rid")
    if not batch:
        # SGLang keeps a list here and fails on it later (a 500), as does this.
        if isinstance(rid, list) or isinstance(params, list):
            raise TypeError("a single prompt takes one rid and one sampling_params object")
        return GenerateInput(
            [Prompt(rid or uuid.uuid4().hex, texts[0], ids[0], params or {})], False
        )
    rids = _batch_rids(rid, len(texts))
    per_prompt: Sequence[Mapping[str, Any]] = (
        params if isinstance(params, list) else [params or {}] * len(texts)
    )
    # A shorter sampling_params list fails with an IndexError in SGLang too (a 500).
    items = [Prompt(rids[i], texts[i], ids[i], per_prompt[i]) for i in range(len(texts))]
    return GenerateInput(items, True)


def _batch_rids(rid: Any, size: int) -> list[str]:
    """`_normalize_rid` and `_validate_rid_uniqueness`."""
    if rid is None:
        return [uuid.uuid4().hex for _ in range(size)]
    if isinstance(rid, str):
        return [f"{rid}_{i}" for i in range(size)]
    if len(rid) != size:
        raise ValueError(
            "The specified rids length mismatch with the batch_size for batch processing."
        )
    repeated = [r for r, count in Counter(rid).items() if count > 1]
    if repeated:
        raise ValueError(f"Duplicate request IDs detected within the request: {repeated}")
    return list(rid)


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


def _output(job: Job, update: Update) -> dict[str, Any]:
    return {"text": update.text, "output_ids": update.ids, "meta_info": meta_info(job, update)}


class _Cumulative:
    """One sub-request's stream as SGLang sends it: the whole output so far, or only what
    is new with --incremental-streaming-output."""

    __slots__ = ("_ids", "_incremental", "_job", "_text")

    def __init__(self, job: Job, incremental: bool) -> None:
        self._job, self._incremental = job, incremental
        self._text = ""
        self._ids: list[int] = []

    def event(self, update: Update) -> dict[str, Any]:
        if self._incremental:
            text, ids = update.text, update.ids
        else:
            self._text += update.text
            self._ids.extend(update.ids)
            text, ids = self._text, self._ids
        return {"text": text, "output_ids": ids, "meta_info": meta_info(self._job, update)}


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
            rids: list[str] = []  # known once the body is normalized; read after the stream
            return StreamingResponse(
                self._stream(body, traceparent, rids),
                media_type="text/event-stream",
                background=BackgroundTask(self._rt.engine.abort_after_stream, rids),
            )
        try:
            batch = normalize(body)
            started = await self._submit(batch, stream=False, traceparent=traceparent)
        except ValueError as exc:
            return native_error(str(exc))
        handles = [handle for handle, _ in started]
        try:
            updates = await until_disconnected(request, _results(handles))
        except ClientDisconnected:
            for handle in handles:
                handle.abort()
            rid = next((h.rid for h in handles if not h.finished), handles[0].rid)
            return native_error(
                "Request is disconnected from the client side (type 3). "
                f"Abort request obj.rid='{rid}'"
            )
        outputs = []
        for (_, job), update in zip(started, updates, strict=True):
            error = abort_error(update.finish_reason)
            if error is not None:  # SGLang: a ValueError for 400, an HTTPException otherwise
                status, message = error
                if status == 400:
                    return native_error(message)
                raise EngineHTTPError(status, message)
            outputs.append(_output(job, update))
        return OrjsonResponse(outputs if batch.batch else outputs[0])

    async def _submit(
        self, batch: GenerateInput, *, stream: bool, traceparent: str | None
    ) -> list[tuple[Handle, Job]]:
        """Hold every rid, then tokenize, check and start each prompt in turn, as SGLang's
        tokenizer manager does (ValueError: what it refuses with a 400; the prompts already
        started are aborted then)."""
        engine = self._rt.engine
        engine.hold([p.rid for p in batch.prompts])
        started: list[tuple[Handle, Job]] = []
        try:
            for p in batch.prompts:
                job = await self._job(p, stream=stream, traceparent=traceparent)
                started.append((engine.submit(job), job))
        except BaseException:
            _release(engine, batch.prompts, started)
            raise
        return started

    async def _job(self, p: Prompt, *, stream: bool, traceparent: str | None) -> Job:
        if p.input_ids is not None:
            prompt = await prompts.from_ids(p.input_ids)
        else:
            prompt = await prompts.from_text(str(p.text))
        return await build_job(
            self._rt.limits,
            prompt,
            p.sampling_params,
            rid=p.rid,
            stream=stream,
            traceparent=traceparent,
        )

    async def _stream(
        self, body: dict[str, Any], traceparent: str | None, rids: list[str]
    ) -> AsyncIterator[bytes]:
        try:
            batch = normalize(body)
            rids.extend(p.rid for p in batch.prompts)
            started = await self._submit(batch, stream=True, traceparent=traceparent)
        except ValueError as exc:
            yield sse_event(native_stream_error(str(exc)))
            yield sse_done()
            return
        incremental = self._rt.args.incremental_streaming_output
        writers = [_Cumulative(job, incremental) for _, job in started]
        try:
            async with aclosing(_merged([h for h, _ in started])) as updates:
                async for index, update in updates:
                    event = writers[index].event(update)
                    if batch.batch:
                        event["index"] = index
                    yield sse_event(orjson.dumps(event))
        finally:
            for handle, _ in started:
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
        elif rid:  # SGLang ignores an empty or null rid (it would prefix-match everything)
            self._rt.engine.abort(rid)
        return Response(status_code=200)


def _release(
    engine: SglangEngine, prompts_: Sequence[Prompt], started: Sequence[tuple[Handle, Job]]
) -> None:
    """`_release_req_states_on_failure`: free the rids never started, abort the others."""
    for handle, _ in started:
        handle.abort("failure")
    for p in prompts_[len(started) :]:
        engine.release(p.rid)


async def _results(handles: Sequence[Handle]) -> list[Update]:
    """Every handle's whole output (in order; each finishes on its own)."""
    return [await handle.result() for handle in handles]


async def _merged(handles: Sequence[Handle]) -> AsyncIterator[tuple[int, Update]]:
    """(index, update) from every handle as each comes (SGLang's `_stream_batch_responses`)."""
    if len(handles) == 1:  # one prompt: read it directly, no task per update
        async with aclosing(handles[0].updates()) as updates:
            async for update in updates:
                yield 0, update
        return
    streams = [h.updates() for h in handles]
    pending: dict[asyncio.Future[Update], int] = {
        asyncio.ensure_future(anext(s)): i for i, s in enumerate(streams)
    }
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=pending.__getitem__):
                index = pending.pop(task)
                try:
                    update = task.result()
                except StopAsyncIteration:
                    continue
                yield index, update
                pending[asyncio.ensure_future(anext(streams[index]))] = index
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for stream in streams:
            await stream.aclose()


def aborts_route(engine: SglangEngine, path: str = "/sim/aborts") -> Route:
    """`GET /sim/aborts`: the aborts the engine was asked for (simulator only), newest
    last, each with the live requests it ended."""

    async def endpoint(request: Request) -> OrjsonResponse:
        return OrjsonResponse(
            [{"rid": a.rid, "source": a.source, "ended": list(a.ended)} for a in engine.aborts]
        )

    return Route(path, endpoint, methods=["GET"], name="sim_aborts")
