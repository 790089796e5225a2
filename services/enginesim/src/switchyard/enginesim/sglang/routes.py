"""SGLang 0.5.23's HTTP routes (`entrypoints/http_server.py`, `entrypoints/openai/`).

- Native `POST|PUT /generate` answers `{"text", "output_ids", "meta_info"}` (a list for a
  batch). Streamed, its events repeat the whole output so far unless the server runs with
  --incremental-streaming-output, then `data: [DONE]`; a batch's events come as they are
  made, each with its prompt's `index`. Errors found while preparing a stream arrive as an
  error event inside an HTTP 200 stream, as SGLang has sent its headers by then.
  `POST /abort_request` aborts by rid (prefix) or all.
- OpenAI `POST /v1/chat/completions` and `/v1/completions`: what the engine refuses before
  streaming is an HTTP 400, even for a stream; an abort with an error status (a full
  queue: 503) is one error event inside the HTTP 200 stream. `n` > 1 runs `n` samples
  with fresh rids (the caller's `rid` names none of them); the chat route's tools,
  reasoning, logprobs and images are `chat`'s.
- `GET /v1/models[/{model}]`, `POST [/v1]/tokenize`, `POST [/v1]/detokenize`.
- `POST /v1/embeddings` and native `POST|PUT /encode` (`embeddings`): an embedding model
  (--is-embedding) answers them, a generation model refuses them with a 400; generation
  routes on an embedding model answer a 500 (the real server fails on them).
- Health: SGLang listens while `Starting`, and `/health`, `/health_generate`, `/ready`,
  `/ping` answer 503 meanwhile. Once up, `/health` (= `/health_generate`) submits a
  one-token generation and polls once a second for its output, so even a healthy answer
  takes a second; `/ready` and `/ping` are flag checks. `/model_info`, `/server_info` and
  their deprecated `get_` names. `GET /metrics` with --enable-metrics.
- After a streamed response ends, its rid(s) are aborted again after a delay, whatever
  holds them (the engine's `abort_after_stream`).
- `--api-key` guards every route but the probes, `/metrics` and the simulator's own
  `/sim/*` (unknown paths get 401, not 404); admin routes (`POST /abort_request`) take
  `--admin-api-key` when it is set (`srt/utils/auth.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import replace
from http import HTTPStatus
from typing import Any, Final

import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from switchyard.enginesim import tokenizer
from switchyard.enginesim.bodies import InvalidBody, read_json, read_model, validate
from switchyard.enginesim.faults import faults_route
from switchyard.enginesim.generation import Prompt, encode, prompt_of, prompt_of_ids
from switchyard.enginesim.prometheus import exposition_route
from switchyard.enginesim.scheduler import QueueFull
from switchyard.enginesim.serving import (
    BearerAuth,
    ClientDisconnected,
    OrjsonResponse,
    event_stream,
    route_table,
    sse_done,
    sse_event,
    until_disconnected,
)
from switchyard.enginesim.sglang import VERSION, chat, embeddings
from switchyard.enginesim.sglang.chat import ChatWriter
from switchyard.enginesim.sglang.embeddings import (
    Embedded,
    Embedder,
    EmbeddingRequest,
    EncodeRequest,
    Input,
    InternalError,
    inputs,
    native_output,
    openai_inputs,
    openai_response,
)
from switchyard.enginesim.sglang.engine import Engine, Handle, LogprobRequest, Step
from switchyard.enginesim.sglang.errors import (
    HANDLERS,
    UNSUPPORTED_MEDIA_TYPE,
    EngineHTTPError,
    native_error,
    native_stream_error,
    openai_error,
    openai_stream_error,
    require_object,
)
from switchyard.enginesim.sglang.flags import Config
from switchyard.enginesim.sglang.wire import (
    ChatCompletionRequest,
    CompletionRequest,
    CompletionWriter,
    DetokenizeRequest,
    Item,
    Output,
    StreamOptions,
    TokenizeRequest,
    abort_error,
    contract_violation,
    normalize,
)
from switchyard.enginesim.stats import stats_route

log = logging.getLogger("switchyard.enginesim.sglang")

#: SGLang's /health sleeps this long before it looks for the probe's output.
HEALTH_POLL_S: Final = 1.0
#: Never guarded, by prefix (so `/health_generate` too); `/sim/` is the simulator's own.
OPEN_PREFIXES: Final = ("/health", "/ready", "/metrics", "/sim/")
#: Routes SGLang marks `AuthLevel.ADMIN_OPTIONAL`, as (method, path).
ADMIN_ROUTES: Final = frozenset({("POST", "/abort_request")})


def _disconnected(rid: str) -> str:
    return f"Request is disconnected from the client side (type 3). Abort request obj.rid='{rid}'"


class Routes:
    """The routes of one simulated SGLang server."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config

    def table(self) -> list[BaseRoute]:
        routes = route_table(
            {
                "POST PUT /generate": self.generate,
                "POST /abort_request": self.abort_request,
                "POST /v1/chat/completions": self.chat_completions,
                "POST /v1/completions": self.completions,
                "POST /v1/embeddings": self.embeddings,
                "POST PUT /encode": self.encode,
                "GET /v1/models": self.models,
                "GET /v1/models/{model:path}": self.model,
                "POST /v1/tokenize /tokenize": self.tokenize,
                "POST /v1/detokenize /detokenize": self.detokenize,
                "GET /health /health_generate": self.health,
                "GET /ready /ping": self.ready,
                "GET /model_info /get_model_info": self.model_info,
                "GET /server_info /get_server_info": self.server_info,
                "GET /sim/aborts": self.aborts,
            }
        )
        routes += [stats_route(self.engine.stats), faults_route(self.engine.scheduler.faults)]
        if self.engine.metrics is not None:
            routes.append(exposition_route(self.engine.metrics.registry))
        return routes

    # --- starting requests ---------------------------------------------------------------
    async def _start(
        self, items: Sequence[Item], *, stream: bool, traceparent: str | None
    ) -> list[Handle]:
        """Hold every rid, then tokenize, check and start each prompt in turn, as SGLang's
        tokenizer manager does (ValueError: what it refuses with a 400; the prompts already
        started are aborted then, `_release_req_states_on_failure`)."""
        engine = self.engine
        engine.hold([item.rid for item in items])
        handles: list[Handle] = []
        try:
            for item in items:
                if item.input_ids is not None:
                    prompt = await prompt_of_ids(item.input_ids)
                else:
                    prompt = await prompt_of(str(item.text))
                if item.image_tokens:  # the images' placeholders expand to their tokens
                    prompt = Prompt(prompt.text, prompt.tokens + item.image_tokens)
                job = await engine.job(
                    prompt, item.sampling_params, rid=item.rid, stream=stream,
                    traceparent=traceparent, index=item.index, turn=item.turn,
                    logprobs=item.logprobs, prompt_ids=item.input_ids,
                    image_tokens=item.image_tokens,
                )  # fmt: skip
                handles.append(engine.submit(job))
        except BaseException:
            for handle in handles:
                handle.abort("failure")
            for item in items[len(handles) :]:
                engine.release(item.rid)
            raise
        return handles

    def _streaming(self, events: AsyncIterator[bytes], rids: list[str]) -> Response:
        """The SSE response; once it has ended, SGLang aborts its rids again after a delay."""
        return event_stream(events, background=BackgroundTask(self.engine.abort_after_stream, rids))

    # --- native --------------------------------------------------------------------------
    async def generate(self, request: Request) -> Response:
        body = require_object(await read_json(request, any_media_type=True))
        violation = contract_violation(body)
        if violation is not None:
            return OrjsonResponse({"error": violation}, status_code=400)
        traceparent = request.headers.get("traceparent")
        if not self.config.is_generation:
            return await self._generate_on_embedding_model(body, traceparent)
        if body.get("stream"):
            rids: list[str] = []  # known once the body is normalized; read after the stream
            return self._streaming(self._native_events(body, traceparent, rids), rids)
        try:
            items, batch = normalize(body)
            handles = await self._start(items, stream=False, traceparent=traceparent)
        except ValueError as exc:
            return native_error(str(exc))
        try:
            steps = await until_disconnected(request, _results(handles))
        except ClientDisconnected:
            for handle in handles:
                handle.abort()
            rid = next((h.job.rid for h in handles if not h.finished), handles[0].job.rid)
            return native_error(_disconnected(rid))
        outputs = []
        for handle, step in zip(handles, steps, strict=True):
            error = abort_error(step.finish_reason)
            if error is not None:  # SGLang: a ValueError for 400, an HTTPException otherwise
                status, message = error
                if status == 400:
                    return native_error(message)
                raise EngineHTTPError(status, message)
            outputs.append(Output(handle.job)(step))
        return OrjsonResponse(outputs if batch else outputs[0])

    async def _generate_on_embedding_model(
        self, body: dict[str, Any], traceparent: str | None
    ) -> Response:
        """`/generate` on an embedding model: SGLang checks it as any request (its 400s),
        then its scheduler runs it as an embedding and fails at the first decode step (the
        pooler has no extend lengths then), which takes the real server down; the
        simulator answers that failure as a plain 500 and stays up."""
        try:
            items, _ = normalize(body)
            handles = await self._start(items, stream=False, traceparent=traceparent)
        except ValueError as exc:
            return native_error(str(exc))
        for handle in handles:
            handle.abort("failure")
        return Response("Internal Server Error", status_code=500, media_type="text/plain")

    async def _native_events(
        self, body: dict[str, Any], traceparent: str | None, rids: list[str]
    ) -> AsyncIterator[bytes]:
        try:
            items, batch = normalize(body)
            rids.extend(item.rid for item in items)
            handles = await self._start(items, stream=True, traceparent=traceparent)
        except ValueError as exc:
            yield sse_event(native_stream_error(str(exc)))
            yield sse_done()
            return
        incremental = self.config.incremental_streaming_output
        outputs = [Output(handle.job, incremental) for handle in handles]
        try:
            async with aclosing(_merged(handles)) as steps:
                async for index, step in steps:
                    event = outputs[index](step)
                    if batch:
                        event["index"] = index
                    yield sse_event(orjson.dumps(event))
        finally:
            for handle in handles:
                handle.abort()  # a no-op once finished; a client that left lands here
        yield sse_done()

    async def abort_request(self, request: Request) -> Response:
        body = require_object(await read_json(request, any_media_type=True))
        rid, abort_all = body.get("rid"), body.get("abort_all", False)
        if not isinstance(rid, str | None) or not isinstance(abort_all, bool):
            error = {"type": "model_type", "loc": ("body",), "msg": "Invalid AbortReq"}
            raise InvalidBody([{**error, "input": body}])
        if abort_all:
            self.engine.abort_all()
        elif rid:  # SGLang ignores an empty or null rid (it would prefix-match everything)
            self.engine.abort(rid)
        return Response(status_code=200)

    async def aborts(self, request: Request) -> Response:
        """`GET /sim/aborts` (simulator only): the aborts the engine was asked for, newest
        last, each with the live requests it ended."""
        records = self.engine.aborts
        return OrjsonResponse(
            [{"rid": a.rid, "source": a.source, "ended": list(a.ended)} for a in records]
        )

    # --- OpenAI --------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        body = await read_model(request, ChatCompletionRequest, UNSUPPORTED_MEDIA_TYPE)
        config = self.config
        error = await chat.check(body, config)
        if error is not None:
            return openai_error(error)
        try:  # `_convert_to_internal_request`: its ValueErrors are "BadRequest"s
            prompt = chat.conversation(body)
            params = body.sampling_params(
                temperature=1.0 if body.temperature is None else body.temperature,
                max_new_tokens=body.max_output,
                stop=[body.stop] if isinstance(body.stop, str) else list(body.stop or []),
                top_p=1.0 if body.top_p is None else body.top_p,
                top_k=-1 if body.top_k is None else body.top_k,
                min_p=0.0 if body.min_p is None else body.min_p,
                repetition_penalty=1.0
                if body.repetition_penalty is None
                else body.repetition_penalty,
            )  # `ChatCompletionRequest.to_sampling_params`: the value, else OpenAI's default
            chat.check_constraints(body, params)
        except ValueError as exc:
            return openai_error(str(exc), "BadRequest")
        try:  # the tokenizer manager reads the images
            image_tokens = await chat.image_tokens(prompt.image_urls, config)
        except ValueError as exc:
            return openai_error(str(exc))
        logprobs = (
            LogprobRequest(max(body.top_logprobs or 0, 0), -1, True) if body.logprobs else None
        )
        item = Item(
            "", prompt.text, None, params, turn=chat.turn(body, config, params),
            logprobs=logprobs, image_tokens=image_tokens,
        )  # fmt: skip
        return await self._openai(request, body, item)

    async def completions(self, request: Request) -> Response:
        body = await read_model(request, CompletionRequest, UNSUPPORTED_MEDIA_TYPE)
        value = body.prompt
        if not value or (isinstance(value, list) and all(not p for p in value)):
            return openai_error("Prompt cannot be empty")
        try:
            params = body.sampling_params(
                temperature=body.temperature, max_new_tokens=body.max_tokens, stop=body.stop,
                top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
                repetition_penalty=body.repetition_penalty, json_schema=body.json_schema,
            )  # fmt: skip
        except ValueError as exc:
            return openai_error(str(exc), "BadRequest")
        logprobs = None
        if body.logprobs is not None:  # the prompt's too with `echo` (logprob_start_len 0)
            start = 0 if body.echo and body.logprobs else -1
            logprobs = LogprobRequest(max(body.logprobs, 0), start, True)
        if isinstance(value, str):
            item = Item("", value, None, params, logprobs=logprobs)
        elif all(isinstance(v, int) for v in value):
            ids = [v for v in value if isinstance(v, int)]
            item = Item("", None, ids, params, logprobs=logprobs)
        else:
            return openai_error("The SGLang simulator serves one prompt per request.")
        return await self._openai(request, body, item)

    async def _openai(
        self, request: Request, body: ChatCompletionRequest | CompletionRequest, item: Item
    ) -> Response:
        """Start the request's `n` samples (fresh rids for n > 1, as SGLang's parallel
        sampling gives them) and answer for all of them."""
        if isinstance(body.rid, list):
            return openai_error("The SGLang simulator serves one prompt per request.")
        n = max(body.n, 1)
        rids = [body.rid or uuid.uuid4().hex] if n == 1 else [uuid.uuid4().hex for _ in range(n)]
        items = [replace(item, rid=rid, index=i) for i, rid in enumerate(rids)]
        traceparent = request.headers.get("traceparent")
        try:
            handles = await self._start(items, stream=body.stream, traceparent=traceparent)
        except ValueError as exc:
            return openai_error(str(exc))
        if not self.config.is_generation:
            # An embedding model runs it as an embedding: a one-token request comes back
            # without "text" and SGLang's OpenAI layer fails reading it (a KeyError: a 500,
            # stream or not); a longer one fails the scheduler at its first decode step
            # (see `_generate_on_embedding_model`). Either way: this 500.
            for handle in handles:
                handle.abort("failure")
            return openai_error("Internal server error: 'text'", "InternalServerError", 500)
        jobs = [handle.job for handle in handles]
        if isinstance(body, ChatCompletionRequest):
            writer: ChatWriter | CompletionWriter = ChatWriter(jobs, body, self.config)
        else:
            echo = jobs[0].prompt.text if body.echo else ""
            writer = CompletionWriter(jobs, body.model, echo, self.config.enable_cache_report)
        if body.stream:
            events = self._openai_events(handles, writer, body.stream_options)
            return self._streaming(events, rids)
        try:
            steps = await until_disconnected(request, _results(handles))
        except ClientDisconnected:  # nobody reads this answer; it is SGLang's anyway
            for handle in handles:
                handle.abort()
            return openai_error(_disconnected(rids[0]))
        for step in steps:
            error = abort_error(step.finish_reason)
            if error is not None:  # a ValueError in SGLang for 400, an HTTPException otherwise
                status, message = error
                if status == 400:
                    return openai_error(message)
                return openai_error(message, str(status), status)
        return OrjsonResponse(writer.response(steps))

    async def _openai_events(
        self, handles: Sequence[Handle], writer: ChatWriter | CompletionWriter,
        options: StreamOptions | None,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        # `should_include_usage`: unlike vLLM, continuous_usage_stats needs no include_usage.
        include_usage = self.config.stream_response_default_include_usage
        continuous = False
        if options is not None:
            include_usage = bool(options.include_usage) or include_usage
            continuous = bool(options.continuous_usage_stats)
        rid = handles[0].job.rid  # the final chunks carry the last sample's
        try:
            async with aclosing(_merged(handles)) as steps:
                async for index, step in steps:
                    rid = handles[index].job.rid
                    error = abort_error(step.finish_reason)
                    if error is not None:
                        writer.tally.add(index, handles[index].job, step)
                        status, message = error
                        error_type = HTTPStatus(status).name
                        yield sse_event(openai_stream_error(message, error_type, status))
                        break
                    if isinstance(writer, ChatWriter):
                        for chunk in writer.chunks(index, step, continuous):
                            yield chunk
                    else:
                        usage = None
                        if continuous:
                            writer.tally.add(index, handles[index].job, step)
                            usage = writer.tally.current(index)
                        yield writer.chunk(index, step, usage)
            if isinstance(writer, ChatWriter):
                for chunk in writer.finish_chunks(rid):
                    yield chunk
            if include_usage:
                yield writer.usage_chunk(rid)
        finally:
            for handle in handles:
                handle.abort()  # a no-op once finished; a client that left lands here
        yield sse_done()

    # --- embeddings ----------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        body = await read_model(request, EmbeddingRequest, UNSUPPORTED_MEDIA_TYPE)
        error = embeddings.check(body)
        if error is not None:
            return openai_error(error)
        try:
            items, _ = openai_inputs(body)
            results = await self._embed(request, items, body.dimensions)
        except ValueError as exc:
            return openai_error(str(exc))
        except InternalError as exc:
            return openai_error(f"Internal server error: {exc}", "InternalServerError", 500)
        except QueueFull as exc:  # the scheduler's abort with 503: an HTTPException
            return openai_error(str(exc), "503", 503)
        except ClientDisconnected:  # nobody reads this answer; it is SGLang's anyway
            return openai_error(_disconnected(items[0].rid))
        model_path = self.config.model_path
        return OrjsonResponse(openai_response(results, model_path, body.encoding_format))

    async def encode(self, request: Request) -> Response:
        """Native `/encode`: one `{"embedding", "meta_info"}`, or a list for a batch."""
        body = validate(
            EncodeRequest, require_object(await read_json(request, any_media_type=True))
        )
        try:
            items, batch = inputs(body.text, body.input_ids, body.rid)
            results = await self._embed(request, items, body.dimensions)
        except ValueError as exc:
            return native_error(str(exc))
        except InternalError:  # not a ValueError: FastAPI's own 500
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        except QueueFull as exc:
            raise EngineHTTPError(503, str(exc)) from None
        except ClientDisconnected:
            return native_error(_disconnected(items[0].rid))
        outputs = [native_output(result) for result in results]
        return OrjsonResponse(outputs if batch else outputs[0])

    async def _embed(
        self, request: Request, items: Sequence[Input], dimensions: int | None
    ) -> list[Embedded]:
        """Every input's vector; ClientDisconnected (every input aborted) if the client
        goes away first."""
        run = Embedder(self.engine).run(items, dimensions, request.headers.get("traceparent"))
        return await until_disconnected(request, run)

    # --- models and tokens ---------------------------------------------------------------
    def _card(self, name: str) -> dict[str, Any]:
        return {
            "id": name, "object": "model", "created": int(time.time()), "owned_by": "sglang",
            "root": name, "parent": None, "max_model_len": self.config.context_length,
        }  # fmt: skip

    async def models(self, request: Request) -> Response:
        return OrjsonResponse(
            {"object": "list", "data": [self._card(self.config.served_model_name)]}
        )

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name != self.config.served_model_name:
            error = {
                "message": f"The model '{name}' does not exist", "type": "invalid_request_error",
                "param": "model", "code": "model_not_found",
            }  # fmt: skip
            return OrjsonResponse({"error": error}, status_code=404)
        return OrjsonResponse(self._card(name))

    async def tokenize(self, request: Request) -> Response:
        body = await read_model(request, TokenizeRequest, UNSUPPORTED_MEDIA_TYPE)
        try:
            if body.messages is not None:
                # Rendered as the chat route renders it (tools, tool choice, calls), each
                # image its placeholder: SGLang expands images later, in generation.
                chat_request = body.chat_request()
                error = await chat.check(chat_request, self.config)
                if error is not None:
                    return openai_error(error)
                tokens: Any = await encode(chat.conversation(chat_request).text)
            elif isinstance(body.prompt, str):
                tokens = await encode(body.prompt)
            else:
                tokens = [tokenizer.encode(p) for p in body.prompt or []]
        except ValueError as exc:
            return openai_error(str(exc))
        count = (
            len(tokens)
            if body.messages is not None or isinstance(body.prompt, str)
            else [len(t) for t in tokens]
        )
        return OrjsonResponse(
            {"tokens": tokens, "count": count, "max_model_len": self.config.context_length}
        )

    async def detokenize(self, request: Request) -> Response:
        body = await read_model(request, DetokenizeRequest, UNSUPPORTED_MEDIA_TYPE)
        skip = body.skip_special_tokens
        try:
            if body.tokens and isinstance(body.tokens[0], list):
                rows = [row for row in body.tokens if isinstance(row, list)]
                return OrjsonResponse(
                    {"text": [tokenizer.decode(r, skip_special=skip) for r in rows]}
                )
            ids = [t for t in body.tokens if isinstance(t, int)]
            return OrjsonResponse({"text": tokenizer.decode(ids, skip_special=skip)})
        except ValueError as exc:
            return openai_error(str(exc))

    # --- health and information ------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        if not self.engine.up:
            return Response(status_code=503)
        await asyncio.sleep(HEALTH_POLL_S)
        return Response(status_code=200)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.engine.up else 503)

    def _deprecated(self, request: Request) -> None:
        if request.url.path.startswith("/get_"):
            new = request.url.path.replace("/get_", "/", 1)
            log.warning(
                "Endpoint '%s' is deprecated and will be removed in a future version. "
                "Please use '%s' instead.", request.url.path, new,
            )  # fmt: skip

    async def model_info(self, request: Request) -> Response:
        self._deprecated(request)
        c = self.config
        return OrjsonResponse(
            {
                "model_path": c.model_path, "served_model_name": c.served_model_name,
                "tokenizer_path": c.model_path, "is_generation": c.is_generation,
                "preferred_sampling_params": None, "weight_version": "default",
                "load_format": "auto", "reasoning_parser": c.reasoning_parser,
                "tool_call_parser": c.tool_call_parser, "disaggregation_mode": "null",
                "has_image_understanding": c.multimodal, "has_audio_understanding": False,
                "model_type": "qwen2_vl" if c.multimodal else "qwen2",
                "architectures": [
                    "Qwen2VLForConditionalGeneration" if c.multimodal else "Qwen2ForCausalLM"
                ],
            }
        )  # fmt: skip

    async def server_info(self, request: Request) -> Response:
        self._deprecated(request)
        c, engine = self.config, self.engine
        state = {
            "num_running_reqs": engine.running, "num_queue_reqs": engine.waiting,
            "num_used_tokens": engine.used_tokens, "gen_throughput": engine.throughput.rate(),
        }  # fmt: skip
        return OrjsonResponse(
            {
                "model_path": c.model_path, "served_model_name": c.served_model_name,
                "host": c.host, "port": c.port,
                "context_length": c.context_length if c.context_length_set else None,
                "tp_size": c.tp_size, "mem_fraction_static": c.mem_fraction_static,
                "max_running_requests": c.max_running_requests,
                "max_queued_requests": c.max_queued_requests,
                "max_total_tokens": c.max_total_tokens, "enable_metrics": c.enable_metrics,
                "incremental_streaming_output": c.incremental_streaming_output,
                "allow_auto_truncate": c.allow_auto_truncate, "enable_trace": c.enable_trace,
                "is_embedding": c.is_embedding,
                "enable_deterministic_inference": c.enable_deterministic_inference,
                "tool_call_parser": c.tool_call_parser, "reasoning_parser": c.reasoning_parser,
                "limit_mm_data_per_request": c.limit_mm_data_per_request,
                "max_total_num_tokens": c.max_total_tokens,
                "max_req_input_len": c.context_length - 1 - 5,
                "startup_time": engine.started_at, "internal_states": [state],
                "version": VERSION, "frontend": "python",
            }
        )  # fmt: skip


async def _results(handles: Sequence[Handle]) -> list[Step]:
    """Every handle's whole output (in order; each finishes on its own)."""
    return [await handle.result() for handle in handles]


async def _merged(handles: Sequence[Handle]) -> AsyncGenerator[tuple[int, Step], None]:
    """(index, step) from every handle as each comes (SGLang's `_stream_batch_responses`)."""
    if len(handles) == 1:  # one prompt: read it directly, no task per step
        async with aclosing(handles[0].steps()) as steps:
            async for step in steps:
                yield 0, step
        return
    streams = [h.steps() for h in handles]
    pending = {asyncio.ensure_future(anext(s)): i for i, s in enumerate(streams)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=pending.__getitem__):
                index = pending.pop(task)
                try:
                    step = task.result()
                except StopAsyncIteration:
                    continue
                yield index, step
                pending[asyncio.ensure_future(anext(streams[index]))] = index
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for stream in streams:
            await stream.aclose()


def create_app(config: Config) -> Starlette:
    """The server; the simulated model starts loading now (SGLang is `Starting` meanwhile).
    `app.state.engine` is its engine."""
    engine = Engine(config)
    middleware = []
    if config.api_key or config.admin_api_key:  # as SGLang: installed only when a key is set

        def keys_for(method: str, path: str) -> tuple[str, ...]:
            if method == "OPTIONS" or path.startswith(OPEN_PREFIXES):
                return ()
            # Ordinary routes take only --api-key: an admin key alone leaves them open.
            admin = (method, path) in ADMIN_ROUTES
            key = (config.admin_api_key or config.api_key) if admin else config.api_key
            return (key,) if key else ()

        refusal = OrjsonResponse({"error": "Unauthorized"}, status_code=401)
        middleware.append(Middleware(BearerAuth, keys_for=keys_for, refusal=refusal))
    app = Starlette(
        routes=Routes(engine).table(), middleware=middleware, exception_handlers=HANDLERS
    )
    app.state.engine = engine
    engine.scheduler.start()
    return app
