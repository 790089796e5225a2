"""The simulator's HTTP routes: vLLM 0.33's OpenAI server, on Starlette.

Per generation request, in vLLM's order: parse and validate the body (400), check the
model name (404), count the request against `--max-num-queued-reqs` (503), render and
check the prompt and sampling parameters (400), then run it. A streaming request answers
200 at once; what fails later (a constraint that does not compile) arrives as an error
event before `[DONE]`, as in vLLM. A client that goes away aborts its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Final, TypeVar

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchyard.enginesim import tokenizer
from switchyard.enginesim.faults import faults_route
from switchyard.enginesim.scheduler import QueueFull, Scheduler
from switchyard.enginesim.serving import (
    ClientDisconnected,
    OrjsonResponse,
    sse_done,
    until_disconnected,
)
from switchyard.enginesim.stats import SimStats, stats_route
from switchyard.enginesim.vllm import errors
from switchyard.enginesim.vllm.cli import VERSION, ServeConfig
from switchyard.enginesim.vllm.engine import Engine, Outcome, Ticket
from switchyard.enginesim.vllm.errors import (
    InvalidRequest,
    ModelNotFound,
    QueueOverflow,
    RequestInvalid,
    VllmError,
)
from switchyard.enginesim.vllm.inputs import (
    Choice,
    Job,
    Prompt,
    Renderer,
    constraint_spec,
    encode,
    render_chat,
)
from switchyard.enginesim.vllm.metrics import VllmMetrics, registry
from switchyard.enginesim.vllm.middleware import ApiKeyMiddleware, RequestIdHeaderMiddleware
from switchyard.enginesim.vllm.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    SamplingRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    removed_guided_fields,
)
from switchyard.enginesim.vllm.responses import (
    ChatStream,
    CompletionStream,
    chat_response,
    completion_response,
)

log = logging.getLogger("switchyard.enginesim.vllm")

M = TypeVar("M", bound=BaseModel)

_MISSING: Final = object()


def fingerprint(config: ServeConfig) -> str:
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


def _loads(raw: bytes) -> Any:
    """The body as FastAPI reads it: Python's json, so errors carry its own message."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # orjson is stricter (NaN, huge integers): let json decide, and word the error
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestInvalid(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from None
    except ValueError:  # not UTF-8/16/32
        raise HTTPException(400, "There was an error parsing the body") from None


async def read_body(request: Request) -> Any:
    """The decoded JSON body, or FastAPI's (and so vLLM's) error for it."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    body: Any = _MISSING
    if raw:
        maintype, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
        if maintype == "application" and (subtype == "json" or subtype.endswith("+json")):
            body = _loads(raw)
        else:
            body = raw
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise RequestInvalid(["Unsupported Media Type: Only 'application/json' is allowed"])
    if body is _MISSING:
        raise RequestInvalid(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    return body


def validate_body(model: type[M], body: Any) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestInvalid(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


async def parse_body(request: Request, model: type[M]) -> tuple[M, Any]:
    """The validated body (and the raw one), or vLLM's 400 for it."""
    body = await read_body(request)
    return validate_body(model, body), body


class VllmSimulator:
    """The state behind one simulated vLLM server."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.model_name = config.model_name
        self.stats = SimStats()
        self.scheduler = Scheduler(config.max_num_seqs, None, config.sim.latency)
        self.metrics = VllmMetrics(config.model_name, config.max_model_len)
        self.engine = Engine(
            self.scheduler,
            self.metrics,
            max_num_queued_reqs=config.max_num_queued_reqs,
            block_size=config.block_size,
            num_gpu_blocks=config.num_gpu_blocks,
        )
        self.renderer = Renderer(config.max_model_len, config.sim.seed)
        self.registry = registry(self.metrics)
        self.fingerprint = fingerprint(config)
        self._warned: set[tuple[str, ...]] = set()

    # --- shared steps ------------------------------------------------------------------
    def _check_model(self, model: str | None) -> None:
        if model and model not in self.config.served_model_names:
            raise ModelNotFound(model, self.config.served_model_names)

    def _warn_removed_fields(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        removed = tuple(removed_guided_fields(body))
        if removed and removed not in self._warned and len(self._warned) < 64:
            self._warned.add(removed)
            log.warning(
                "Request contains the removed guided-decoding field(s) %s, which are "
                "ignored; output will NOT be constrained. Use `structured_outputs` "
                "(or `response_format`) instead; see docs/features/structured_outputs.md.",
                list(removed),
            )

    @staticmethod
    def _request_id(request: Request, body_id: str | None) -> str:
        return request.headers.get("x-request-id") or body_id or uuid.uuid4().hex

    def _ticket(self, request_id: str, traceparent: str | None, n: int) -> Ticket:
        try:
            return self.engine.ticket(n)
        except QueueOverflow:
            self._count_refused(request_id, traceparent)
            raise

    def _count_refused(self, request_id: str, traceparent: str | None) -> None:
        """Count a refused request: SimStats sees refusals as AdmissionRejected in `track`."""
        with contextlib.suppress(QueueFull), self.stats.track(request_id, traceparent):
            raise QueueFull("The request queue is full.")

    def _job(
        self,
        request_id: str,
        request: SamplingRequest,
        prompts: list[Prompt],
        limit: int | None,
        arrival: float,
    ) -> Job:
        n = request.n
        choices: list[Choice] = []
        max_tokens = 0
        for p, prompt in enumerate(prompts):
            tokens = self.renderer.max_tokens(limit, prompt)
            max_tokens = max(max_tokens, tokens)
            for i in range(n):
                params = self.renderer.sampling(request, tokens, i)
                choices.append(Choice(index=p * n + i, prompt=p, params=params))
        return Job(
            request_id=request_id,
            prompts=tuple(prompts),
            choices=tuple(choices),
            constraint=constraint_spec(request),
            stop_token_ids=frozenset(request.stop_token_ids or ()),
            include_stop_str_in_output=request.include_stop_str_in_output,
            max_tokens=max_tokens,
            n=n,
            arrival=arrival,
        )

    async def _run(self, job: Job, traceparent: str | None) -> list[Outcome]:
        with self.stats.track(job.request_id, traceparent):
            return await self.engine.run(job)

    def _usage_flags(self, request: SamplingRequest) -> tuple[bool, bool]:
        if self.config.enable_force_include_usage:
            return True, True
        options = request.stream_options
        include = bool(options and options.include_usage)
        return include, include and bool(options and options.continuous_usage_stats)

    async def _respond(
        self, request: Request, job: Job, ticket: Ticket, traceparent: str | None
    ) -> list[Outcome] | None:
        """Run a non-streaming job; None when the client went away first."""
        try:
            return await until_disconnected(request, self._run(job, traceparent))
        except ClientDisconnected:
            return None
        finally:
            ticket.release()

    @staticmethod
    def _streaming(body: AsyncIterator[bytes], ticket: Ticket) -> StreamingResponse:
        # The stream releases its ticket when it ends; the background task covers a
        # stream that never started (the client left before the first byte).
        return StreamingResponse(
            body, media_type="text/event-stream", background=BackgroundTask(ticket.release)
        )

    async def _events(
        self,
        job: Job,
        encoder: CompletionStream | ChatStream,
        ticket: Ticket,
        traceparent: str | None,
    ) -> AsyncIterator[bytes]:
        """A streaming job's SSE events; an error after the 200 is an event, then [DONE]."""
        try:
            try:
                with self.stats.track(job.request_id, traceparent, stream=True):
                    first = True
                    async with contextlib.aclosing(self.engine.stream(job)) as steps:
                        async for step in steps:
                            if first and isinstance(encoder, ChatStream):
                                # The role goes out with the first token, as in vLLM.
                                for choice in job.choices:
                                    yield encoder.role(choice.index)
                            first = False
                            for outcome, s in step:
                                yield encoder.chunk(outcome, s)
                    final = encoder.final()
                    if final is not None:
                        yield final
            except VllmError as exc:
                yield encoder.error(exc.body())
            yield sse_done()
        finally:
            ticket.release()

    # --- routes ------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        arrival = asyncio.get_running_loop().time()
        req, body = await parse_body(request, CompletionRequest)
        self._warn_removed_fields(body)
        self._check_model(req.model)
        if req.stream and req.use_beam_search:
            raise VllmError("Streaming is not currently supported with beam search")
        request_id = self._request_id(request, req.request_id)
        traceparent = request.headers.get("traceparent")
        ticket = self._ticket(request_id, traceparent, req.n)
        try:
            prompts = await self.renderer.completion_prompts(req)
            job = self._job(request_id, req, prompts, req.max_tokens, arrival)
        except BaseException:
            ticket.release()
            raise
        response_id = f"cmpl-{request_id}"
        created = int(time.time())
        prefixes = [p.text for p in prompts] if req.echo else []
        if req.stream:
            include_usage, continuous = self._usage_flags(req)
            encoder = CompletionStream(
                response_id,
                created,
                self.model_name,
                self.fingerprint,
                [p.tokens for p in prompts],
                include_usage=include_usage,
                continuous_usage=continuous,
                prefixes=prefixes,
            )
            return self._streaming(self._events(job, encoder, ticket, traceparent), ticket)
        outcomes = await self._respond(request, job, ticket, traceparent)
        if outcomes is None:
            return Response()
        return OrjsonResponse(
            completion_response(
                response_id,
                created,
                self.model_name,
                outcomes,
                job.prompt_tokens,
                self.fingerprint,
                prefixes,
            )
        )

    async def chat_completions(self, request: Request) -> Response:
        arrival = asyncio.get_running_loop().time()
        req, body = await parse_body(request, ChatCompletionRequest)
        self._warn_removed_fields(body)
        self._check_model(req.model)
        if req.stream and req.use_beam_search:
            raise VllmError("Streaming is not currently supported with beam search")
        request_id = self._request_id(request, req.request_id)
        traceparent = request.headers.get("traceparent")
        ticket = self._ticket(request_id, traceparent, req.n)
        try:
            prompt = await self.renderer.chat_prompt(req, self.model_name)
            job = self._job(request_id, req, [prompt], req.output_limit[0], arrival)
        except BaseException:
            ticket.release()
            raise
        response_id = f"chatcmpl-{request_id}"
        created = int(time.time())
        if req.stream:
            include_usage, continuous = self._usage_flags(req)
            encoder = ChatStream(
                response_id,
                created,
                self.model_name,
                self.fingerprint,
                prompt.tokens,
                include_usage=include_usage,
                continuous_usage=continuous,
            )
            return self._streaming(self._events(job, encoder, ticket, traceparent), ticket)
        outcomes = await self._respond(request, job, ticket, traceparent)
        if outcomes is None:
            return Response()
        return OrjsonResponse(
            chat_response(
                response_id, created, self.model_name, outcomes, prompt.tokens, self.fingerprint
            )
        )

    async def models(self, request: Request) -> Response:
        created = int(time.time())
        cards = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.config.model,
                "parent": None,
                "max_model_len": self.config.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid4().hex}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            for name in self.config.served_model_names
        ]
        return OrjsonResponse({"object": "list", "data": cards})

    async def tokenize(self, request: Request) -> Response:
        body = await read_body(request)
        # vLLM's union of the two forms: the chat one when there are messages.
        req: TokenizeChatRequest | TokenizeCompletionRequest
        if isinstance(body, dict) and "messages" in body:
            req = validate_body(TokenizeChatRequest, body)
        else:
            req = validate_body(TokenizeCompletionRequest, body)
        self._check_model(req.model)
        if isinstance(req, TokenizeChatRequest):
            if req.continue_final_message and req.add_generation_prompt:
                raise InvalidRequest(
                    "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
                )
            text = render_chat(
                req.messages,
                self.model_name,
                add_generation_prompt=req.add_generation_prompt,
                continue_final_message=req.continue_final_message,
            )
        else:
            text = req.prompt
        ids = await encode(text)
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
        req, _ = await parse_body(request, DetokenizeRequest)
        self._check_model(req.model)
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

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(config: ServeConfig) -> Starlette:
    sim = VllmSimulator(config)
    routes = [
        Route("/v1/completions", sim.completions, methods=["POST"]),
        Route("/v1/chat/completions", sim.chat_completions, methods=["POST"]),
        Route("/v1/models", sim.models, methods=["GET"]),
        Route("/tokenize", sim.tokenize, methods=["POST"]),
        Route("/detokenize", sim.detokenize, methods=["POST"]),
        Route("/health", sim.health, methods=["GET"]),
        Route("/ping", sim.health, methods=["GET", "POST"]),
        Route("/version", sim.version, methods=["GET"]),
        Route("/load", sim.load, methods=["GET"]),
        Route("/metrics", sim.prometheus, methods=["GET"]),
        Route("/metrics/", sim.prometheus, methods=["GET"]),
        stats_route(sim.stats),
        faults_route(sim.scheduler.faults),
    ]
    middleware = []
    if config.api_keys:
        middleware.append(Middleware(ApiKeyMiddleware, tokens=config.api_keys))
    if config.enable_request_id_headers:
        middleware.append(Middleware(RequestIdHeaderMiddleware))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            VllmError: errors.vllm_error_handler,
            RequestInvalid: errors.request_invalid_handler,
            HTTPException: errors.http_exception_handler,
            Exception: errors.unexpected_error_handler,
        },
    )
    app.state.sim = sim
    sim.scheduler.start()
    return app
