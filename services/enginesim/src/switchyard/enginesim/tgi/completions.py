"""`POST /v1/completions`: TGI's OpenAI completions, one or several prompts.

Kept from TGI: `suffix` is refused (422, error_type "suffix not supported"), more prompts
than `--max-client-batch-size` likewise ("batch size exceeded"); several prompts stream
interleaved; each streamed token is a chunk with its raw text (EOS included) and
`finish_reason: ""`, the last one a `CompletionFinal` with the native finish reason
(`eos_token`), while the unary answer uses OpenAI's (`stop`); errors inside a stream are
native `{"error", "error_type"}` events; the stream ends with `data:[DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.enginesim.scheduler import Overloaded
from switchyard.enginesim.serde import unexpected
from switchyard.enginesim.serving import ClientDisconnected, OrjsonResponse, until_disconnected
from switchyard.enginesim.tgi import headers
from switchyard.enginesim.tgi import openai_payloads as oai
from switchyard.enginesim.tgi.engine import TgiEngine
from switchyard.enginesim.tgi.errors import BodyRejection, InferError, data_error
from switchyard.enginesim.tgi.params import Parameters
from switchyard.enginesim.tgi.runs import Incoming, all_or_none, run_unary, steps, tracked
from switchyard.enginesim.tgi.sse import merged, sse_response
from switchyard.enginesim.tgi.wire import Fields, read_json


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    prompts: list[str]
    parameters: Parameters
    stream: bool
    has_suffix: bool


def parse_completion_request(body: object) -> CompletionRequest:
    f = Fields(body, "CompletionRequest")
    prompt = f.required("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        if not prompt:
            raise data_error(
                "prompt: Empty array detected. Do not use an empty array for the prompt."
            )
        prompts = list(prompt)
    else:
        raise data_error(
            f"prompt: invalid type: {unexpected(prompt)}, expected a string or a sequence"
        )
    temperature = f.number("temperature")
    greedy = temperature == 0.0
    stream = f.flag("stream")
    model = f.string("model")
    parameters = Parameters(
        temperature=None if greedy else temperature,
        repetition_penalty=f.number("repetition_penalty"),
        frequency_penalty=f.number("frequency_penalty"),
        top_p=f.number("top_p"),
        do_sample=not greedy,
        max_new_tokens=f.integer("max_tokens", "u32"),
        stop=tuple(f.strings("stop", nullable=True) or ()),
        details=True,
        decoder_input_details=not stream,
        seed=f.integer("seed", "u64"),
        adapter_id=model if model is not None and model != "tgi" else None,
    )
    return CompletionRequest(prompts, parameters, stream, f.string("suffix") is not None)


def _refusal(error: str, error_type: str) -> OrjsonResponse:
    return OrjsonResponse({"error": error, "error_type": error_type}, status_code=422)


class CompletionRoutes:
    def __init__(self, engine: TgiEngine) -> None:
        self.engine = engine

    def routes(self) -> list[Route]:
        return [Route("/v1/completions", self.completions, methods=["POST"])]

    async def completions(self, request: Request) -> Response:
        engine = self.engine
        try:
            body = await read_json(request, engine.config.payload_limit)
            req = parse_completion_request(body)
        except BodyRejection as rejection:
            return rejection.response()
        engine.metrics.request_count += 1
        if req.has_suffix:
            engine.metrics.failure("validation")
            return _refusal(
                "Suffix is not supported and can be achieved by preprocessing the prompt.",
                "suffix not supported",
            )
        limit = engine.config.max_client_batch_size
        if len(req.prompts) > limit:
            engine.metrics.failure("validation")
            return _refusal(
                f"Number of prompts exceeds the maximum allowed batch size of {limit}",
                "batch size exceeded",
            )
        engine.metrics.request_count += len(req.prompts)  # each inner generate counts too
        if req.stream:
            streams = [
                tracked(
                    engine, Incoming.of(request), self._events(request, i, p, req), InferError.sse
                )
                for i, p in enumerate(req.prompts)
            ]
            characters = sum(len(p) for p in req.prompts)
            events = _then_done(merged(streams))
            return sse_response(events, engine.config.keep_alive_s, headers.stream(characters))
        return await self._unary(request, req)

    async def _events(
        self, request: Request, index: int, prompt: str, req: CompletionRequest
    ) -> AsyncGenerator[bytes, None]:
        model = self.engine.config.model_id
        async for step in steps(self.engine, Incoming.of(request), prompt, req.parameters):
            if step.outcome is None:
                yield oai.completion_chunk(model, index, step.token)
            else:
                yield oai.completion_last(model, index, step.token, step.outcome)

    async def _unary(self, request: Request, req: CompletionRequest) -> Response:
        engine = self.engine
        incoming = Incoming.of(request)
        try:
            with (
                engine.stats.track(incoming.request_id, incoming.traceparent),
                engine.counting_drops(),
            ):
                outcomes = await until_disconnected(
                    request,
                    all_or_none(
                        [run_unary(engine, incoming, p, req.parameters) for p in req.prompts]
                    ),
                )
        except ClientDisconnected:
            return Response(status_code=499)
        except Overloaded:
            return InferError("overloaded").response()
        except InferError as error:
            return error.response()
        choices = [
            oai.completion_choice(i, o.decoded.text, oai.openai_finish(o.decoded.finish_reason))
            for i, o in enumerate(outcomes)
        ]
        return OrjsonResponse(
            oai.completion_final(
                engine.config.model_id,
                choices,
                sum(o.valid.input_length for o in outcomes),
                sum(o.decoded.generated_tokens for o in outcomes),
            ),
            headers=headers.completions(
                incoming.received_at, outcomes, sum(len(p) for p in req.prompts)
            ),
        )


async def _then_done(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in events:
        yield chunk
    yield oai.done()
