"""The TGI router's HTTP routes (`router/src/server.rs`), one Starlette app.

- Native `POST /generate`, `/generate_stream`, `/` (compat: a list, or a stream with
  `"stream": true`) and `/tokenize`. `/generate_stream` answers HTTP 200 whatever happens
  after the body was read: an overloaded server, a validation error or a failed generation
  arrive as one `{"error", "error_type"}` event, and the stream ends without `[DONE]`.
- `POST /v1/chat/completions` and `/chat_tokenize`: errors found while templating are HTTP
  422 even for streams; what fails later arrives inside a stream as
  `{"error": {"message", "http_status_code": 422}}` followed by `data:[DONE]`. Tools are a
  grammar and TGI's own reading of the JSON back (`tools`); after `no_tool` a second
  generation without tools answers. Images are read by a vision model only (`vision`).
- `POST /v1/completions`: one or several prompts (several stream interleaved); `suffix` and
  more prompts than `--max-client-batch-size` are refused; errors inside a stream are
  native events; the stream ends with `data:[DONE]`.
- `GET /info`, `/health` (also `GET /` and `/ping`: the router binds only once the model is
  loaded, so a listening simulator is healthy), `/metrics` (also on `--prometheus-port`),
  `/v1/models`. Unknown routes and methods: axum's empty 404/405.
- `--api-key` guards the generation routes (the whole header compared case-insensitively).
- Streams are axum's `Sse` with `KeepAlive::default()`: after 15 s without an event, an
  empty comment. The events come from a separate task, so a slow producer (queued for the
  batch) does not hold the keep-alive back, and cancelling the response cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute

from switchyard.enginesim import chat_template
from switchyard.enginesim.faults import faults_route
from switchyard.enginesim.generation import LARGE_TEXT, off_loop
from switchyard.enginesim.scheduler import Overloaded
from switchyard.enginesim.serving import (
    SSE_KEEPALIVE,
    BearerAuth,
    ClientDisconnected,
    OrjsonResponse,
    event_stream,
    route_table,
    until_disconnected,
)
from switchyard.enginesim.stats import stats_route
from switchyard.enginesim.tgi import VERSION, wire
from switchyard.enginesim.tgi.engine import Engine, Outcome, all_or_none
from switchyard.enginesim.tgi.errors import BodyRejection, InferError
from switchyard.enginesim.tgi.flags import Config
from switchyard.enginesim.tgi.metrics import listen
from switchyard.enginesim.tgi.tools import (
    NO_TOOL,
    ChatState,
    ParsedCall,
    ToolDef,
    ToolDelta,
    next_tool_call_id,
    parse_output,
    pick,
    select,
)
from switchyard.enginesim.tgi.vision import simple_tokens
from switchyard.enginesim.tgi.wire import (
    ChatRequest,
    GenerateRequest,
    Parameters,
)

T = TypeVar("T")
log = logging.getLogger("switchyard.enginesim.tgi")

PIPELINE_TAG: Final = "text-generation"
#: The routes `--api-key` protects (TGI's `base_routes`); info routes stay open.
PROTECTED: Final = frozenset(
    {"/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions", "/tokenize"}
)


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a route knows about a request before it runs."""

    request_id: str  # TGI has none in the body: `x-request-id`, else a fresh one
    traceparent: str | None
    received_at: float

    @classmethod
    def of(cls, request: Request) -> Incoming:
        headers = request.headers
        request_id = headers.get("x-request-id") or uuid.uuid4().hex
        return cls(request_id, headers.get("traceparent"), time.perf_counter())


class Routes:
    """The routes of one simulated TGI router."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config

    def table(self) -> list[BaseRoute]:
        return [
            *route_table(
                {
                    "POST /generate": self.generate,
                    "POST /generate_stream": self.generate_stream,
                    "POST /": self.compat,
                    "POST /tokenize": self.tokenize,
                    "POST /v1/chat/completions": self.chat_completions,
                    "POST /chat_tokenize": self.chat_tokenize,
                    "POST /v1/completions": self.completions,
                    "GET / /health /ping": self.health,
                    "GET /info": self.info,
                    "GET /metrics": self.metrics,
                    "GET /v1/models": self.models,
                }
            ),
            stats_route(self.engine.stats),
            faults_route(self.engine.scheduler.faults),
        ]

    async def _body(self, request: Request) -> Any:
        return await wire.read_json(request, self.config.payload_limit)

    async def _unary(self, request: Request, incoming: Incoming, work: Awaitable[T]) -> T:
        """`work`, counted, and aborted if the client leaves (raises what the handlers answer)."""
        engine = self.engine
        with engine.stats.track(incoming.request_id, incoming.traceparent), engine.counting_drops():
            return await until_disconnected(request, work)

    def _stream(
        self, incoming: Incoming, events: AsyncGenerator[bytes, None], characters: int,
        on_error: Callable[[InferError], bytes] = InferError.sse, tail: bytes = b"",
    ) -> Response:  # fmt: skip
        tracked = self._tracked(incoming, events, on_error, tail)
        stream = with_keep_alive(tracked, self.config.keep_alive_s)
        headers = {"cache-control": "no-cache", **wire.stream_headers(characters)}
        return event_stream(stream, headers=headers)

    async def _tracked(
        self, incoming: Incoming, events: AsyncGenerator[bytes, None],
        on_error: Callable[[InferError], bytes], tail: bytes,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        """A stream's events, counted; an error becomes `on_error`'s event; then `tail`."""
        engine = self.engine
        try:
            with (
                engine.stats.track(incoming.request_id, incoming.traceparent, stream=True),
                engine.counting_drops(),
            ):
                async with contextlib.aclosing(events):
                    async for chunk in events:
                        yield chunk
        except Overloaded:
            yield on_error(InferError("overloaded"))
        except InferError as error:
            yield on_error(error)
        except Exception as exc:  # never cut a stream off: report it as TGI reports a failed shard
            log.exception("stream failed")
            yield on_error(engine.fail(InferError("generation", f"{type(exc).__name__}: {exc}")))
        if tail:
            yield tail

    # --- native --------------------------------------------------------------------------
    async def generate(self, request: Request) -> Response:
        req = wire.parse_generate_request(await self._body(request))
        return await self._generate(request, req, wrap=False)

    async def generate_stream(self, request: Request) -> Response:
        return self._generate_stream(
            request, wire.parse_generate_request(await self._body(request))
        )

    async def compat(self, request: Request) -> Response:
        req = wire.parse_generate_request(await self._body(request), compat=True)
        if req.parameters.return_full_text is None:
            full = PIPELINE_TAG == "text-generation"
            req = replace(req, parameters=replace(req.parameters, return_full_text=full))
        if req.stream:
            return self._generate_stream(request, req)
        return await self._generate(request, req, wrap=True)

    async def _generate(self, request: Request, req: GenerateRequest, *, wrap: bool) -> Response:
        self.engine.metrics.request_count += 1
        incoming, p = Incoming.of(request), req.parameters
        work = self.engine.best_of(incoming.received_at, req.inputs, p)
        best, *others = await self._unary(request, incoming, work)
        body: dict[str, Any] = {
            "generated_text": (req.inputs if p.return_full_text else "") + best.decoded.text
        }
        if p.details or p.decoder_input_details:
            body["details"] = wire.details(best, others)
        headers = wire.generation_headers(incoming.received_at, [best], len(req.inputs))
        return OrjsonResponse([body] if wrap else body, headers=headers)

    def _generate_stream(self, request: Request, req: GenerateRequest) -> Response:
        self.engine.metrics.request_count += 1
        incoming = Incoming.of(request)
        return self._stream(incoming, self._native_events(incoming, req), len(req.inputs))

    async def _native_events(
        self, incoming: Incoming, req: GenerateRequest
    ) -> AsyncGenerator[bytes, None]:
        p = req.parameters
        self.engine.refuse_streaming(p)
        prefix = req.inputs if p.return_full_text else ""
        async for step in self.engine.steps(incoming.received_at, req.inputs, p):
            if step.outcome is None:
                yield wire.stream_event(step.index, step.token, step.top_tokens)
            else:
                details = wire.stream_details(step.outcome) if p.details else None
                text = prefix + step.outcome.decoded.text
                yield wire.stream_event(
                    step.index, step.token, step.top_tokens, generated_text=text, details=details
                )

    async def _tokens(self, inputs: str) -> list[dict[str, Any]]:
        """`/tokenize`'s answer; a large input (or its images) read off the event loop."""
        multimodal = self.config.sim.multimodal
        return await off_loop(len(inputs) > LARGE_TEXT, simple_tokens, inputs, multimodal)

    async def tokenize(self, request: Request) -> Response:
        req = wire.parse_generate_request(await self._body(request))
        out = await self._tokens(req.inputs)
        truncate = req.parameters.truncate
        if truncate is not None and len(out) > truncate:
            out = out[len(out) - truncate :]
        return OrjsonResponse(out)

    # --- chat ----------------------------------------------------------------------------
    async def _chat(self, request: Request) -> tuple[ChatRequest, str, ToolDef | None]:
        """The request, its templated prompt and the function the model calls (None: it
        writes text), or TGI's template and tool errors."""
        chat = wire.parse_chat_request(await self._body(request))
        self.engine.metrics.request_count += 1
        try:
            return (chat, *self._prompt(chat))
        except InferError as error:
            raise self.engine.fail(error) from None

    @staticmethod
    def _prompt(chat: ChatRequest, *, with_tools: bool = True) -> tuple[str, ToolDef | None]:
        """`try_into_generate`: the prompt, and the function the tool grammar makes the
        model call (`with_tools` False: what TGI generates again after `no_tool`)."""
        if chat.tools is not None and chat.parameters.grammar is not None:
            raise InferError("tool_error", "Grammar and tools are mutually exclusive")
        offered: tuple[ToolDef, ...] = ()
        if chat.tools is not None and with_tools:
            offered = select(chat.tools, chat.tool_choice)
        messages = chat.messages
        try:
            if not offered:
                return chat_template.render(messages), None
            if chat.last_has_content:  # the template lists the tools; the prompt goes last
                last = messages[-1]
                content = f"{last['content']}\n---\n{chat.tool_prompt}"
                messages = [*messages[:-1], {"role": last["role"], "content": content}]
            prompt = chat_template.render(messages, tools=[t.json() for t in offered])
        except ValueError as exc:
            raise InferError("template_error", str(exc)) from None
        users = [m["content"] for m in chat.messages if m["role"] == "user"]
        tool = pick(
            offered, chat.tool_choice, last_role=chat.messages[-1]["role"],
            user_text=users[-1] if users else "",
        )  # fmt: skip
        return prompt, tool

    async def chat_completions(self, request: Request) -> Response:
        chat, inputs, tool = await self._chat(request)
        engine = self.engine
        engine.metrics.request_count += 1  # the inner generate counts the request once more
        incoming, model = Incoming.of(request), self.config.model_id
        if chat.stream:
            events = self._chat_events(incoming, chat, inputs, tool)
            return self._stream(incoming, events, len(inputs), InferError.openai_sse, wire.done())
        work = self._chat_unary(incoming, chat, inputs, tool)
        outcome, call, characters = await self._unary(request, incoming, work)
        headers = wire.generation_headers(incoming.received_at, [outcome], characters)
        body = wire.chat_completion(model, outcome, chat.logprobs, call)
        return OrjsonResponse(body, headers=headers)

    async def _chat_unary(
        self, incoming: Incoming, chat: ChatRequest, inputs: str, tool: ToolDef | None
    ) -> tuple[Outcome, ParsedCall | None, int]:
        """The generation, the call it made, and the prompt's length in characters; after
        `no_tool`, a second generation without tools (TGI answers that one)."""
        engine = self.engine
        outcome = await engine.unary(incoming.received_at, inputs, chat.parameters, tool)
        if tool is None:
            return outcome, None, len(inputs)
        call = parse_output(outcome.decoded.text)
        if call is not None:
            return outcome, call, len(inputs)
        plain, _ = self._prompt(chat, with_tools=False)
        engine.metrics.request_count += 1
        return await engine.unary(incoming.received_at, plain, chat.parameters), None, len(plain)

    async def _chat_events(
        self, incoming: Incoming, chat: ChatRequest, inputs: str, tool: ToolDef | None
    ) -> AsyncGenerator[bytes, None]:
        """The chunks of `ChatState`: text, or a call's `tool_calls` deltas; after
        `no_tool`, the text of a second generation without tools."""
        state = ChatState(using_tools=tool is not None)
        async for chunk in self._chat_chunks(incoming, chat, inputs, tool, state):
            yield chunk
        if state.chose_no_tool:
            plain, _ = self._prompt(chat, with_tools=False)
            self.engine.metrics.request_count += 1
            plain_state = ChatState(using_tools=False)
            async for chunk in self._chat_chunks(incoming, chat, plain, None, plain_state):
                yield chunk

    async def _chat_chunks(
        self, incoming: Incoming, chat: ChatRequest, inputs: str, tool: ToolDef | None,
        state: ChatState,
    ) -> AsyncGenerator[bytes, None]:  # fmt: skip
        """One generation's chunks, until it ends or chooses `no_tool` (then aborted)."""
        model = self.config.model_id
        call_id = next_tool_call_id(chat.call_ids) if tool is not None else ""
        steps = self.engine.steps(incoming.received_at, inputs, chat.parameters, tool)
        async with contextlib.aclosing(steps):
            async for step in steps:
                event = state.push(step.token.text, step.token.special)
                if event == NO_TOOL:
                    return  # closing the steps aborts the generation
                if event != "none":
                    finish = None if step.outcome is None else step.outcome.decoded.finish_reason
                    yield wire.chat_chunk(
                        model, step.token, step.top_tokens, logprobs=chat.logprobs,
                        finish=finish, tool=event if isinstance(event, ToolDelta) else None,
                        call_id=call_id,
                    )  # fmt: skip
                if step.outcome is not None and chat.include_usage:
                    yield wire.chat_usage_chunk(model, step.outcome)

    async def chat_tokenize(self, request: Request) -> Response:
        _, inputs, _ = await self._chat(request)
        tokens = await self._tokens(inputs)
        return OrjsonResponse({"tokenize_response": tokens, "templated_text": inputs})

    # --- completions ---------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        engine = self.engine
        req = wire.parse_completion_request(await self._body(request))
        engine.metrics.request_count += 1
        limit = self.config.max_client_batch_size
        refusal = None
        if req.has_suffix:
            error = "Suffix is not supported and can be achieved by preprocessing the prompt."
            refusal = {"error": error, "error_type": "suffix not supported"}
        elif len(req.prompts) > limit:
            error = f"Number of prompts exceeds the maximum allowed batch size of {limit}"
            refusal = {"error": error, "error_type": "batch size exceeded"}
        if refusal is not None:
            engine.metrics.failure("validation")
            return OrjsonResponse(refusal, status_code=422)
        engine.metrics.request_count += len(req.prompts)  # each inner generate counts too
        characters = sum(len(p) for p in req.prompts)
        if req.stream:
            streams = []
            for i, prompt in enumerate(req.prompts):
                incoming = Incoming.of(request)
                events = self._completion_events(incoming, i, prompt, req.parameters)
                streams.append(self._tracked(incoming, events, InferError.sse, b""))
            events = with_keep_alive(_then(merged(streams), wire.done()), self.config.keep_alive_s)
            headers = {"cache-control": "no-cache", **wire.stream_headers(characters)}
            return event_stream(events, headers=headers)
        incoming = Incoming.of(request)
        runs = [engine.unary(incoming.received_at, p, req.parameters) for p in req.prompts]
        outcomes = await self._unary(request, incoming, all_or_none(runs))
        headers = wire.generation_headers(
            incoming.received_at, outcomes, characters, completions=True
        )
        return OrjsonResponse(wire.completion(self.config.model_id, outcomes), headers=headers)

    async def _completion_events(
        self, incoming: Incoming, index: int, prompt: str, parameters: Parameters
    ) -> AsyncGenerator[bytes, None]:
        model = self.config.model_id
        async for step in self.engine.steps(incoming.received_at, prompt, parameters):
            yield wire.completion_chunk(model, index, step.token, step.outcome)

    # --- information ---------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def info(self, request: Request) -> Response:
        c = self.config
        return OrjsonResponse(
            {
                "model_id": c.model_id, "model_sha": None, "model_pipeline_tag": PIPELINE_TAG,
                "max_concurrent_requests": c.max_concurrent_requests,
                "max_best_of": c.max_best_of, "max_stop_sequences": c.max_stop_sequences,
                "max_input_tokens": c.max_input_tokens, "max_total_tokens": c.max_total_tokens,
                "validation_workers": c.validation_workers,
                "max_client_batch_size": c.max_client_batch_size,
                "router": "text-generation-router", "version": VERSION, "sha": None,
                "docker_label": None,
            }
        )  # fmt: skip

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(self.engine.metrics.render())

    async def models(self, request: Request) -> Response:
        model = self.config.model_id
        card = {"id": model, "object": "model", "created": 0, "owned_by": model}
        return OrjsonResponse({"object": "list", "data": [card]})


@dataclass(frozen=True, slots=True)
class _End:
    error: Exception | None = None


async def _pump(source: AsyncIterator[bytes], queue: asyncio.Queue[bytes | _End]) -> None:
    try:
        async for chunk in source:
            await queue.put(chunk)
    except Exception as exc:  # handed to the consumer, which re-raises it
        await queue.put(_End(exc))
    else:
        await queue.put(_End())


async def with_keep_alive(
    source: AsyncIterator[bytes], interval_s: float
) -> AsyncGenerator[bytes, None]:
    """`source`'s chunks, with a keep-alive comment after each `interval_s` of silence."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(maxsize=1)
    task = asyncio.create_task(_pump(source, queue), name="sse-pump")
    try:
        while True:
            try:
                async with asyncio.timeout(interval_s):
                    item = await queue.get()
            except TimeoutError:
                yield SSE_KEEPALIVE
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        # The client went away or the stream ended: stop the producer (aborting its request).
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def merged(streams: Sequence[AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """The chunks of several streams as they come (TGI's multi-prompt completions)."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(maxsize=len(streams))
    tasks = [asyncio.create_task(_pump(s, queue), name="sse-merge") for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if not isinstance(item, _End):
                yield item
                continue
            remaining -= 1
            if item.error is not None:
                raise item.error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _then(events: AsyncIterator[bytes], tail: bytes) -> AsyncIterator[bytes]:
    async for chunk in events:
        yield chunk
    yield tail


async def _empty(request: Request, exc: Exception) -> Response:
    # axum answers unknown routes and methods with an empty body.
    return Response(status_code=exc.status_code if isinstance(exc, HTTPException) else 500)


async def _rejection(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyRejection)
    return PlainTextResponse(exc.message, status_code=exc.status)


async def _infer_error(request: Request, exc: Exception) -> Response:
    error = exc if isinstance(exc, InferError) else InferError("overloaded")
    return OrjsonResponse(error.body(), status_code=error.status)


async def _disconnected(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it; uvicorn drops it


def create_app(config: Config) -> Starlette:
    """The router; `app.state.engine` is its engine."""
    engine = Engine(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server = None
        if config.prometheus_port is not None:
            server = await listen(config.hostname, config.prometheus_port, engine.metrics.render)
            log.info("metrics also on port %d", config.prometheus_port)
        try:
            yield
        finally:
            if server is not None:
                server.close()
                await server.wait_closed()

    middleware = []
    if config.api_key:
        key = (config.api_key,)

        def keys_for(method: str, path: str) -> tuple[str, ...]:
            return key if method == "POST" and path in PROTECTED else ()

        refusal = Response(status_code=401)
        middleware.append(
            Middleware(BearerAuth, keys_for=keys_for, refusal=refusal, fold_case=True)
        )
    handlers = {
        404: _empty, 405: _empty, BodyRejection: _rejection, InferError: _infer_error,
        Overloaded: _infer_error, ClientDisconnected: _disconnected,
    }  # fmt: skip
    app = Starlette(
        routes=Routes(engine).table(), middleware=middleware, lifespan=lifespan,
        exception_handlers=handlers,
    )  # fmt: skip
    app.state.engine = engine
    return app
