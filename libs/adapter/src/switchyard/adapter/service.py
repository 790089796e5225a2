"""The gRPC InferenceService of an adapter: canonical requests in, engine calls out.

Each RPC is: validate → refuse what the model does not serve (a chat on an embedding
model, embeddings on a generation model), before any engine call → bound by the caller's
deadline (or our own) → call the engine through its translation → relay the result.
Streams are relayed as they arrive, the deltas that arrived together in as few messages
as they fit (`coalesce`), never held back for more. Cancellation (the caller went away, or
the deadline passed) closes the engine stream and, where the engine has one, calls its
abort route. CountTokens is admitted as Generate is and asks the engine's tokenize route.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
import structlog
from opentelemetry import trace

from switchyard.adapter import metrics
from switchyard.adapter.coalesce import coalesce
from switchyard.adapter.engine import EngineClient
from switchyard.adapter.health import Readiness
from switchyard.adapter.load import LoadReader
from switchyard.adapter.translation import (
    Capability,
    Choice,
    Completion,
    Embeddings,
    choice_count,
    unsupported_feature,
)
from switchyard.adapter.validation import DEFAULT_MAX_N, validate, validate_embed
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_FINISH_NAMES = {
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
}


#: What a refusal calls each capability (the edge's words for the same refusal).
_CAPABILITY_NAMES: dict[Capability, str] = {
    pb.CAPABILITY_CHAT: "chat completions",
    pb.CAPABILITY_COMPLETIONS: "completions",
    pb.CAPABILITY_EMBEDDINGS: "embeddings",
}


#: The log line's event per method ("generate" for the others).
_LOG_EVENTS = {"Embed": "embed", "CountTokens": "count_tokens"}


#: What a unary call answers.
R = TypeVar("R")


class _Call:
    """Book-keeping of one inference RPC: in-flight count, metrics, span attributes, a log line."""

    __slots__ = (
        "code",
        "completion_tokens",
        "finishes",
        "first_token_at",
        "method",
        "prompt_tokens",
        "request",
        "servicer",
        "started",
    )

    def __init__(
        self,
        servicer: InferenceServicer,
        request: pb.GenerateRequest | pb.EmbedRequest,
        method: str,
    ) -> None:
        self.servicer = servicer
        self.request = request
        self.method = method
        self.started = time.perf_counter()
        self.first_token_at = 0.0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        #: Each choice's finish reason, by index (empty until one finishes).
        self.finishes: dict[int, pb.FinishReason.ValueType] = {}
        self.code = grpc.StatusCode.OK
        if not request.request_id:
            request.request_id = uuid.uuid4().hex
        servicer.in_flight += 1
        servicer.in_flight_gauge.inc()
        servicer.idle.clear()

    def first_token(self) -> None:
        self.first_token_at = time.perf_counter()
        self.servicer.ttft.observe(self.first_token_at - self.started)

    def finish_names(self) -> list[str]:
        """The choices' finish reasons, in index order."""
        return [_FINISH_NAMES.get(self.finishes[i], "") for i in sorted(self.finishes)]

    def end(self) -> None:
        s = self.servicer
        s.in_flight -= 1
        s.in_flight_gauge.dec()
        if not s.in_flight:
            s.idle.set()
        elapsed = time.perf_counter() - self.started
        labels = (s.engine_kind, s.served_model_name)
        metrics.REQUESTS.labels(*labels, self.method, self.code.name).inc()
        metrics.DURATION.labels(*labels, self.method).observe(elapsed)
        if self.method != "CountTokens":  # counted, not read by the model
            s.prompt_counter.inc(self.prompt_tokens)
        s.completion_counter.inc(self.completion_tokens)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "gen_ai.provider.name": s.engine_kind,
                    "gen_ai.request.model": self.request.model,
                    "gen_ai.usage.input_tokens": self.prompt_tokens,
                    "gen_ai.usage.output_tokens": self.completion_tokens,
                    "switchyard.request_id": self.request.request_id,
                }
            )
            if self.finishes:
                span.set_attribute("gen_ai.response.finish_reasons", self.finish_names())
            if self.method == "Embed":
                span.set_attribute("gen_ai.operation.name", "embeddings")
        log.info(
            _LOG_EVENTS.get(self.method, "generate"),
            method=self.method,
            request_id=self.request.request_id,
            model=self.request.model,
            code=self.code.name,
            finish_reasons=self.finish_names() or None,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            ttft_ms=round((self.first_token_at - self.started) * 1000, 1)
            if self.first_token_at
            else None,
            duration_ms=round(elapsed * 1000, 1),
        )


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    def __init__(
        self,
        *,
        served_model_name: str,
        engine: EngineClient,
        readiness: Readiness,
        load: LoadReader,
        default_timeout_s: float,
        max_n: int = DEFAULT_MAX_N,
    ) -> None:
        self.served_model_name = served_model_name
        self.engine_kind = engine.translation.engine
        self._engine = engine
        self._readiness = readiness
        self._load = load
        self._default_timeout_s = default_timeout_s
        self._max_n = max_n
        self.in_flight = 0
        #: Set while no generation is in flight (what a graceful shutdown waits for).
        self.idle = asyncio.Event()
        self.idle.set()
        #: Set when the drain delay is over (`stop_admitting`): new calls are refused.
        self.stopping = False
        labels = (self.engine_kind, served_model_name)
        self.in_flight_gauge = metrics.IN_FLIGHT.labels(*labels)
        self.ttft = metrics.TIME_TO_FIRST_TOKEN.labels(*labels)
        self.prompt_counter = metrics.TOKENS.labels(*labels, "prompt")
        self.completion_counter = metrics.TOKENS.labels(*labels, "completion")

    def stop_admitting(self) -> None:
        """Refuse every call from now on with UNAVAILABLE, which an edge retries elsewhere.

        `server.stop` refuses calls that reach the server after it, but a call gRPC accepted
        just before has its handler run after: without this it would be served, or, if its
        engine is slow, cancelled when the grace period ends (CANCELLED, which nobody retries).
        """
        self.stopping = True

    def _open(self) -> None:
        if self.stopping:
            raise InferenceError.unavailable(
                "The adapter is shutting down; retry on another replica."
            )

    def _validate(self, request: pb.GenerateRequest) -> None:
        translation = self._engine.translation
        validate(
            request,
            self.served_model_name,
            engine=translation.engine,
            features=translation.features,
            max_n=self._max_n,
        )

    def _require(self, capability: Capability) -> None:
        """Refuse, before the engine is called, what the model (as last read) does not serve.
        Not yet read: the engine decides."""
        model = self._readiness.model
        if model is not None and not model.serves(capability):
            raise unsupported_feature(
                f"model '{self.served_model_name}' does not support "
                f"{_CAPABILITY_NAMES[capability]}",
                "model",
            )

    def _admit(self, request: pb.GenerateRequest) -> None:
        self._open()
        self._validate(request)
        chat = request.WhichOneof("input") == "chat"
        self._require(pb.CAPABILITY_CHAT if chat else pb.CAPABILITY_COMPLETIONS)

    def _deadline(self, context: Context) -> float:
        remaining = context.time_remaining()
        timeout = (
            self._default_timeout_s
            if remaining is None
            else min(remaining, self._default_timeout_s)
        )
        return asyncio.get_running_loop().time() + timeout

    async def _fail(self, call: _Call, context: Context, error: InferenceError) -> NoReturn:
        call.code = error.code
        if error.code == grpc.StatusCode.UNAVAILABLE and not self.stopping:
            self._readiness.engine_unreachable()
        await context.abort_with_status(error.to_status())
        raise AssertionError("abort_with_status returns only by raising")  # pragma: no cover

    def _cancelled(self, call: _Call) -> None:
        # The engine client has already dropped the engine call (and aborted it).
        call.code = grpc.StatusCode.CANCELLED

    async def _answer(self, call: _Call, context: Context, work: Callable[[], Awaitable[R]]) -> R:
        """One unary call: `work` within the call's deadline, its errors as gRPC statuses
        (a timeout as DEADLINE_EXCEEDED), its record written however it ends."""
        try:
            async with asyncio.timeout_at(self._deadline(context)):
                return await work()
        except InferenceError as error:
            await self._fail(call, context, error)
        except TimeoutError:
            await self._fail(call, context, _deadline_error())
        except asyncio.CancelledError:
            self._cancelled(call)
            raise
        finally:
            call.end()

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> pb.GenerateResponse:
        call = _Call(self, request, "Generate")

        async def work() -> pb.GenerateResponse:
            self._admit(request)
            completion = await self._engine.complete(request)
            call.prompt_tokens = completion.prompt_tokens
            call.completion_tokens = completion.completion_tokens
            call.finishes = {c.index: c.finish_reason for c in completion.choices}
            return _response(completion)

        return await self._answer(call, context, work)

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: Context
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        call = _Call(self, request, "GenerateStream")
        completion_tokens: int | None = None
        #: The stop string that ended each choice, by index (only those a stop string ended).
        stop_sequences: dict[int, str] = {}
        # One timer for the whole request (not a timeout around every token's read): when
        # it fires it cancels this RPC's task, and the cancellation is reported as
        # DEADLINE_EXCEEDED below.
        task = asyncio.current_task()
        assert task is not None
        expired = asyncio.Event()

        def expire() -> None:
            expired.set()
            task.cancel()

        timer = asyncio.get_running_loop().call_at(self._deadline(context), expire)
        try:
            self._admit(request)
            stream = self._engine.stream(request)
            try:
                async for batch in stream:
                    # What arrived together goes on together (`coalesce`), at once.
                    output = []
                    for delta in batch:
                        if delta.prompt_tokens is not None:
                            call.prompt_tokens = delta.prompt_tokens
                        if delta.completion_tokens is not None:
                            completion_tokens = delta.completion_tokens
                        if delta.finish_reason:
                            # Sent on the choice's last message, once every choice has ended.
                            call.finishes[delta.index] = delta.finish_reason
                            if delta.stop_sequence and delta.finish_reason == pb.FINISH_REASON_STOP:
                                stop_sequences[delta.index] = delta.stop_sequence
                        if (
                            delta.text
                            or delta.token_count
                            or delta.tool_calls
                            or delta.reasoning
                            or delta.logprobs
                        ):
                            call.completion_tokens += delta.token_count
                            output.append(delta)
                    if output:
                        if not call.first_token_at:
                            call.first_token()
                        for message in coalesce(output):
                            yield message
            finally:
                await stream.aclose()
            choices = choice_count(request)
            if len(call.finishes) < choices or any(i >= choices for i in call.finishes):
                raise InferenceError.engine_failed(
                    "the engine ended the stream without a finish reason for every choice"
                )
            # What the messages counted; the engine's own count, where it gave one, wins,
            # and the last message accounts for the difference (so that the token counts
            # of a stream always add up to its usage).
            counted = call.completion_tokens
            if completion_tokens is not None:
                call.completion_tokens = completion_tokens
            for index in range(choices):
                last = pb.GenerateStreamResponse(
                    index=index,
                    finish_reason=call.finishes[index],
                    stop_sequence=stop_sequences.get(index, "")
                    if call.finishes[index] == pb.FINISH_REASON_STOP
                    else "",
                )
                if index == choices - 1:
                    last.token_count = max(0, call.completion_tokens - counted)
                if index == choices - 1 and request.include_usage:
                    last.usage.prompt_tokens = call.prompt_tokens
                    last.usage.completion_tokens = call.completion_tokens
                yield last
        except InferenceError as error:
            await self._fail(call, context, error)
        except asyncio.CancelledError:
            if not expired.is_set():
                self._cancelled(call)
                raise
            task.uncancel()
            await self._fail(call, context, _deadline_error())
        finally:
            timer.cancel()
            call.end()

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        call = _Call(self, request, "Embed")

        async def work() -> pb.EmbedResponse:
            self._open()
            validate_embed(request, self.served_model_name)
            self._require(pb.CAPABILITY_EMBEDDINGS)
            embeddings = await self._engine.embed(request)
            call.prompt_tokens = embeddings.prompt_tokens
            return _embed_response(request, embeddings)

        return await self._answer(call, context, work)

    async def CountTokens(self, request: pb.GenerateRequest, context: Context) -> pb.TokenCount:
        """The prompt tokens a Generate of `request` would read, counted by the engine's
        tokenize route: validated and refused as Generate is, nothing generated."""
        call = _Call(self, request, "CountTokens")

        async def work() -> pb.TokenCount:
            self._admit(request)
            count = await self._engine.count_tokens(request)
            call.prompt_tokens = count
            return pb.TokenCount(input_tokens=count)

        return await self._answer(call, context, work)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        if not self._readiness.ready:
            await context.abort_with_status(
                InferenceError.unavailable("the engine is not ready").to_status()
            )
        info = pb.ModelInfo(
            id=self.served_model_name,
            engine=self.engine_kind,
            max_model_len=self._readiness.max_model_len,
        )
        model = self._readiness.model
        if model is not None:
            info.capabilities.extend(sorted(model.capabilities))
            info.embedding_dimensions = model.embedding_dimensions
            info.identity = model.identity
        return pb.ListModelsResponse(models=[info])

    async def GetLoad(self, request: pb.GetLoadRequest, context: Context) -> pb.LoadReport:
        load = await self._load.read()
        report = pb.LoadReport(adapter_in_flight=self.in_flight, ready=self._readiness.ready)
        if load is not None:
            report.running = load.running
            report.waiting = load.waiting
            if load.kv_cache_usage is not None:
                report.kv_cache_usage = load.kv_cache_usage
        return report


def _choice(choice: Choice) -> pb.GeneratedChoice:
    return pb.GeneratedChoice(
        index=choice.index,
        text=choice.text,
        finish_reason=choice.finish_reason,
        tool_calls=[
            pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in choice.tool_calls
        ],
        reasoning=choice.reasoning,
        logprobs=choice.logprobs,
        stop_sequence=choice.stop_sequence if choice.finish_reason == pb.FINISH_REASON_STOP else "",
    )


def _response(completion: Completion) -> pb.GenerateResponse:
    """The top-level fields are choice 0's (for callers from before `choices`)."""
    if not completion.choices:
        raise InferenceError.engine_failed("the engine's completion has no choice")
    first = completion.choices[0]
    return pb.GenerateResponse(
        text=first.text,
        finish_reason=first.finish_reason,
        usage=pb.Usage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        ),
        choices=[_choice(c) for c in completion.choices],
    )


def _embed_response(request: pb.EmbedRequest, embeddings: Embeddings) -> pb.EmbedResponse:
    if len(embeddings.vectors) != len(request.inputs):
        raise InferenceError.engine_failed(
            f"the engine sent {len(embeddings.vectors)} vectors for {len(request.inputs)} inputs"
        )
    if request.HasField("dimensions") and any(
        len(v) != request.dimensions * 4 for v in embeddings.vectors
    ):
        # Never pass on vectors of another size than asked for (an engine ignoring the field).
        raise InferenceError.engine_failed(
            f"the engine sent vectors of another size than the {request.dimensions} "
            "dimensions asked for"
        )
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(float32_le=v) for v in embeddings.vectors],
        prompt_tokens=embeddings.prompt_tokens,
    )


def _deadline_error() -> InferenceError:
    return InferenceError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        pb.ERROR_REASON_UNSPECIFIED,
        "the request did not finish before its deadline",
    )
