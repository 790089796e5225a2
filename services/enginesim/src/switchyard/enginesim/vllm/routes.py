"""vLLM 0.33's HTTP routes, on Starlette.

Per generation request, in vLLM's order: parse and validate the body (400), check the
model name (404), count the request against `--max-num-queued-reqs` (503), render and
check the prompt and sampling parameters (400), then run it. A streaming request answers
200 at once; what fails later (a constraint that does not compile) arrives as an error
event before `[DONE]`, as in vLLM. A client that goes away aborts its generation.
`--api-key` guards the API prefixes; `--enable-request-id-headers` echoes `X-Request-Id`.

Which routes exist depends on the runner, as in vLLM's `register_api_routers`: a generate
model has the generation routes and no `/v1/embeddings`, a pooling model the reverse; both
have `/v1/models`, `/tokenize`, `/detokenize` and the server routes. An absent route
answers FastAPI's 404 `{"detail": "Not Found"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchyard.enginesim import tokenizer
from switchyard.enginesim.bodies import Model, read_json, read_model, validate
from switchyard.enginesim.faults import faults_route
from switchyard.enginesim.generation import encode, off_loop
from switchyard.enginesim.prometheus import exposition_route
from switchyard.enginesim.serving import (
    BearerAuth,
    OrjsonResponse,
    event_stream,
    route_table,
    sse_done,
    until_disconnected,
)
from switchyard.enginesim.stats import stats_route
from switchyard.enginesim.vllm import VERSION, chat, embeddings
from switchyard.enginesim.vllm.engine import Engine, Job, Ticket
from switchyard.enginesim.vllm.errors import (
    HANDLERS,
    UNSUPPORTED_MEDIA_TYPE,
    InvalidRequest,
    ModelNotFound,
    VllmError,
)
from switchyard.enginesim.vllm.flags import Config
from switchyard.enginesim.vllm.wire import (
    REMOVED_GUIDED_FIELDS,
    ChatCompletionRequest,
    Chunks,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    error_event,
    response,
)

log = logging.getLogger("switchyard.enginesim.vllm")
GUARDED_PREFIXES: Final = ("/v1", "/v2", "/inference", "/cohere")
#: Tokens past which an embedding batch's vectors are computed off the event loop.
_LARGE_BATCH: Final = 2048


def fingerprint(config: Config) -> str:
    """vLLM's default `system_fingerprint`: version, parallelism, a hash of the config."""
    parts = [f"vllm-{VERSION}"]
    for prefix, size in (
        ("tp", config.tensor_parallel_size),
        ("pp", config.pipeline_parallel_size),
        ("dp", config.data_parallel_size),
    ):
        if size > 1:
            parts.append(f"{prefix}{size}")
    material = f"{config.model}\x00{config.max_model_len}\x00{config.max_num_seqs}".encode()
    parts.append(hashlib.blake2b(material, digest_size=4).hexdigest())
    return "-".join(parts)


class Routes:
    """The routes of one simulated vLLM server."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = config = engine.config
        self.fingerprint = fingerprint(config)
        self._warned: set[tuple[str, ...]] = set()

    def table(self) -> list[BaseRoute]:
        registry = self.engine.metrics.registry
        if self.config.pooling:
            served = {"POST /v1/embeddings": self.embeddings}
        else:
            served = {
                "POST /v1/completions": self.completions,
                "POST /v1/chat/completions": self.chat_completions,
            }
        return [
            *route_table(
                {
                    **served,
                    "GET /v1/models": self.models,
                    "POST /tokenize": self.tokenize,
                    "POST /detokenize": self.detokenize,
                    "GET /health": self.health,
                    "GET POST /ping": self.health,
                    "GET /version": self.version,
                    "GET /load": self.load,
                }
            ),
            exposition_route(registry, "/metrics"),
            exposition_route(registry, "/metrics/"),
            stats_route(self.engine.stats),
            faults_route(self.engine.scheduler.faults),
        ]

    # --- shared steps ------------------------------------------------------------------
    def _check_model(self, model: str | None) -> None:
        if model and model not in self.config.served_model_names:
            raise ModelNotFound(model, self.config.served_model_names)

    def _warn_removed_fields(self, extra: dict[str, Any] | None) -> None:
        removed = tuple(sorted(REMOVED_GUIDED_FIELDS.intersection(extra or ())))
        if removed and removed not in self._warned and len(self._warned) < 64:
            self._warned.add(removed)
            log.warning(
                "Request contains the removed guided-decoding field(s) %s, which are "
                "ignored; output will NOT be constrained. Use `structured_outputs` "
                "(or `response_format`) instead; see docs/features/structured_outputs.md.",
                list(removed),
            )

    async def _body(self, request: Request, model: type[Model]) -> Model:
        req = await read_model(request, model, UNSUPPORTED_MEDIA_TYPE)
        self._warn_removed_fields(req.model_extra)  # unknown fields: vLLM accepts them
        self._check_model(getattr(req, "model", None))
        return req

    # --- generation ----------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._generate(request, await self._body(request, CompletionRequest))

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, await self._body(request, ChatCompletionRequest))

    async def _generate(
        self, request: Request, req: CompletionRequest | ChatCompletionRequest
    ) -> Response:
        arrival = asyncio.get_running_loop().time()
        if req.stream and req.use_beam_search:
            raise VllmError("Streaming is not currently supported with beam search")
        request_id = request.headers.get("x-request-id") or req.request_id or uuid.uuid4().hex
        traceparent = request.headers.get("traceparent")
        ticket = self.engine.ticket(req.n, request_id, traceparent)
        try:
            job = await self.engine.job(request_id, req, arrival)
        except BaseException:
            ticket.release()
            raise
        is_chat = isinstance(req, ChatCompletionRequest)
        kind = "chat.completion" if is_chat else "text_completion"
        head = {
            "id": f"{'chatcmpl' if is_chat else 'cmpl'}-{request_id}",
            "object": kind,
            "created": int(time.time()),
            "model": self.config.model_name,
        }
        prefixes = [p.text for p in job.prompts] if not is_chat and req.echo else []
        if req.stream:
            options = req.stream_options
            include = bool(options and options.include_usage)
            continuous = include and bool(options and options.continuous_usage_stats)
            if self.config.enable_force_include_usage:
                include = continuous = True
            chunks = Chunks(
                {**head, "object": f"{kind}.chunk" if is_chat else kind},
                self.fingerprint,
                [p.tokens for p in job.prompts],
                include_usage=include,
                continuous_usage=continuous,
                prefixes=prefixes,
                features=job.chat,
                logprobs=job.logprobs,
                prompt_details=self.config.enable_prompt_tokens_details,
                image_tokens=job.image_tokens,
            )
            # The stream releases its ticket when it ends; the background task covers a
            # stream that never started (the client left before the first byte).
            events = self._events(job, chunks, ticket, traceparent)
            return event_stream(events, background=BackgroundTask(ticket.release))
        try:  # a client that leaves gets nothing (see errors.HANDLERS)
            outcomes = await until_disconnected(request, self.engine.run(job, traceparent))
        finally:
            ticket.release()
        body = response(
            head, outcomes, job.prompt_tokens, self.fingerprint, prefixes,
            features=job.chat, logprobs=job.logprobs,
            prompt_details=self.config.enable_prompt_tokens_details, image_tokens=job.image_tokens,
        )  # fmt: skip
        return OrjsonResponse(body)

    async def _events(
        self, job: Job, chunks: Chunks, ticket: Ticket, traceparent: str | None
    ) -> AsyncIterator[bytes]:
        """A streaming job's SSE events; an error after the 200 is an event, then [DONE]."""
        try:
            try:
                first = True
                async with contextlib.aclosing(self.engine.stream(job, traceparent)) as steps:
                    async for step in steps:
                        if first and chunks.chat:  # the role goes out with the first token
                            for choice in job.choices:
                                yield chunks.role(choice.index)
                        first = False
                        for outcome, s in step:
                            chunk = chunks.chunk(outcome, s)
                            if chunk is not None:
                                yield chunk
                final = chunks.final()
                if final is not None:
                    yield final
            except VllmError as exc:
                yield error_event(exc.body())
            yield sse_done()
        finally:
            ticket.release()

    # --- embeddings (a pooling model) ---------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        arrival = asyncio.get_running_loop().time()
        body = await read_json(request, UNSUPPORTED_MEDIA_TYPE)
        req = validate(embeddings.EmbeddingRequest, body)
        base_id = request.headers.get("x-request-id") or req.request_id
        inputs = await embeddings.token_ids(req, self.config)
        embeddings.check_dimensions(req.dimensions, self.config)
        for ids in inputs:
            embeddings.check_prompt(ids)
        traceparent = request.headers.get("traceparent")
        request_id = f"embd-{base_id}"
        ticket = self.engine.ticket(len(inputs), request_id, traceparent)
        try:  # a client that leaves gets nothing (see errors.HANDLERS)
            work = self.engine.pool(request_id, inputs, arrival, traceparent)
            await until_disconnected(request, work)
        finally:
            ticket.release()
        tokens = sum(len(ids) for ids in inputs)
        found = await off_loop(
            tokens > _LARGE_BATCH, embeddings.vectors, self.config.model, inputs,
            self.config.embedding_size, req.dimensions,
        )  # fmt: skip
        head = {"id": request_id, "created": int(time.time()), "model": self.config.model_name}
        return embeddings.response(head, req, found, tokens)

    # --- the other routes ----------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        created = int(time.time())
        permission = {
            "id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
            "created": created, "allow_create_engine": False, "allow_sampling": True,
            "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
            "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
        }  # fmt: skip
        card = {
            "object": "model", "created": created, "owned_by": "vllm", "root": self.config.model,
            "parent": None, "max_model_len": self.config.max_model_len, "permission": [permission],
        }  # fmt: skip
        cards = [{"id": name, **card} for name in self.config.served_model_names]
        return OrjsonResponse({"object": "list", "data": cards})

    async def tokenize(self, request: Request) -> Response:
        body = await read_json(request, UNSUPPORTED_MEDIA_TYPE)
        # vLLM's union of the two forms: the chat one when there are messages.
        is_chat = isinstance(body, dict) and "messages" in body
        req: TokenizeChatRequest | TokenizeCompletionRequest = (
            validate(TokenizeChatRequest, body)
            if is_chat
            else validate(TokenizeCompletionRequest, body)
        )
        self._check_model(req.model)
        if isinstance(req, TokenizeChatRequest):
            # Rendered as the chat route renders it, each image's pad token expanded to the
            # image's tokens as vLLM's multimodal processor does: the generation's count.
            text, image_tokens = await chat.render_images(req, self.config)
            ids = _expand_images(await encode(text), image_tokens)
        else:
            ids = await encode(req.prompt)
        strs = [tokenizer.token_text(i) for i in ids] if req.return_token_strs else None
        return OrjsonResponse(
            {
                "count": len(ids),
                "max_model_len": self.config.max_model_len,
                "tokens": ids,
                "token_strs": strs,
            }
        )

    async def detokenize(self, request: Request) -> Response:
        req = await self._body(request, DetokenizeRequest)
        if req.tokens and max(req.tokens) >= tokenizer.VOCAB_SIZE:
            raise InvalidRequest(f"Token id {max(req.tokens)} is out of vocabulary")
        return OrjsonResponse({"prompt": tokenizer.decode(req.tokens)})

    async def health(self, request: Request) -> Response:
        # vLLM answers 503 only when its engine died; the simulated one does not.
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return OrjsonResponse({"version": VERSION})

    async def load(self, request: Request) -> Response:
        load = self.engine.requests if self.config.enable_server_load_tracking else 0
        return OrjsonResponse({"server_load": load})


#: The tokens of an image's pad in the placeholder, and the token an image expands to.
_IMAGE_PAD: Final = tokenizer.encode("<|image_pad|>")
_IMAGE_TOKEN: Final = tokenizer.token_id(tokenizer.UNK_TOKEN)


def _expand_images(ids: list[int], image_tokens: list[int]) -> list[int]:
    """`ids` with the tokens each image adds after its pad, in order, as vLLM's multimodal
    processor expands them: the count is what a generation of the same chat reads."""
    if not image_tokens:
        return ids
    pad, out, pending = _IMAGE_PAD, [], list(reversed(image_tokens))
    i = 0
    while i < len(ids):
        if pending and ids[i : i + len(pad)] == pad:
            out += pad + [_IMAGE_TOKEN] * pending.pop()
            i += len(pad)
        else:
            out.append(ids[i])
            i += 1
    for extra in pending:  # a pad the tokenizer merged with its neighbours: still counted
        out += [_IMAGE_TOKEN] * extra
    return out


class RequestIdHeaders:
    """`--enable-request-id-headers`: answer with the caller's `X-Request-Id`, or a new one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(raw=message["headers"]).append("X-Request-Id", request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(config: Config) -> Starlette:
    """The server; `app.state.engine` is its engine."""
    engine = Engine(config)
    middleware = []
    if config.api_keys:

        def keys_for(method: str, path: str) -> tuple[str, ...]:
            guarded = method != "OPTIONS" and path.startswith(GUARDED_PREFIXES)
            return config.api_keys if guarded else ()

        refusal = OrjsonResponse({"error": "Unauthorized"}, status_code=401)
        middleware.append(Middleware(BearerAuth, keys_for=keys_for, refusal=refusal))
    if config.enable_request_id_headers:
        middleware.append(Middleware(RequestIdHeaders))
    app = Starlette(
        routes=Routes(engine).table(), middleware=middleware, exception_handlers=HANDLERS
    )
    app.state.engine = engine
    engine.scheduler.start()
    return app
