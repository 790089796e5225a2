"""`POST /v1/chat/completions` and `POST /chat_tokenize`.

Errors found while templating (template, tools) are HTTP 422 even for streams; what
fails later (overload, validation, generation) arrives inside a stream as
`{"error": {"message", "http_status_code": 422}}` followed by `data:[DONE]`, as TGI's
`into_openai_event` writes it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.enginesim.scheduler import Overloaded
from switchyard.enginesim.serving import ClientDisconnected, OrjsonResponse, until_disconnected
from switchyard.enginesim.tgi import headers, payloads
from switchyard.enginesim.tgi import openai_payloads as oai
from switchyard.enginesim.tgi.chat_request import ChatRequest, chat_inputs, parse_chat_request
from switchyard.enginesim.tgi.engine import TgiEngine
from switchyard.enginesim.tgi.errors import BodyRejection, InferError
from switchyard.enginesim.tgi.runs import Incoming, run_unary, steps, tracked
from switchyard.enginesim.tgi.sse import sse_response
from switchyard.enginesim.tgi.wire import read_json


class ChatRoutes:
    def __init__(self, engine: TgiEngine) -> None:
        self.engine = engine

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/chat_tokenize", self.chat_tokenize, methods=["POST"]),
        ]

    async def _read(self, request: Request) -> ChatRequest:
        return parse_chat_request(await read_json(request, self.engine.config.payload_limit))

    def _inputs(self, chat: ChatRequest) -> str:
        try:
            return chat_inputs(chat)
        except InferError as error:
            raise self.engine.fail(error) from None

    async def chat_completions(self, request: Request) -> Response:
        engine = self.engine
        try:
            chat = await self._read(request)
        except BodyRejection as rejection:
            return rejection.response()
        engine.metrics.request_count += 1
        try:
            inputs = self._inputs(chat)
        except InferError as error:
            return error.response()
        # The inner generate counts the request once more, as TGI's does.
        engine.metrics.request_count += 1
        incoming = Incoming.of(request)
        model = engine.config.model_id
        if chat.stream:
            events = tracked(
                engine,
                incoming,
                self._events(incoming, chat, inputs),
                InferError.openai_sse,
                tail=oai.done(),
            )
            return sse_response(events, engine.config.keep_alive_s, headers.stream(len(inputs)))
        try:
            with (
                engine.stats.track(incoming.request_id, incoming.traceparent),
                engine.counting_drops(),
            ):
                outcome = await until_disconnected(
                    request,
                    run_unary(engine, incoming, inputs, chat.parameters, add_special_tokens=False),
                )
        except ClientDisconnected:
            return Response(status_code=499)
        except Overloaded:
            return InferError("overloaded").response()
        except InferError as error:
            return error.response()
        return OrjsonResponse(
            oai.chat_completion(model, outcome, chat.logprobs),
            headers=headers.generation(incoming.received_at, outcome, len(inputs)),
        )

    async def _events(
        self, incoming: Incoming, chat: ChatRequest, inputs: str
    ) -> AsyncGenerator[bytes, None]:
        model = self.engine.config.model_id
        stream = steps(self.engine, incoming, inputs, chat.parameters, add_special_tokens=False)
        async for step in stream:
            finish = step.outcome.decoded.finish_reason if step.outcome is not None else None
            yield oai.chat_chunk(
                model, step.token, step.top_tokens, logprobs=chat.logprobs, finish=finish
            )
            if step.outcome is not None and chat.include_usage:
                yield oai.chat_usage_chunk(model, step.outcome)

    async def chat_tokenize(self, request: Request) -> Response:
        try:
            chat = await self._read(request)
        except BodyRejection as rejection:
            return rejection.response()
        self.engine.metrics.request_count += 1
        try:
            inputs = self._inputs(chat)
        except InferError as error:
            return error.response()
        tokens = payloads.simple_tokens(inputs)
        return OrjsonResponse({"tokenize_response": tokens, "templated_text": inputs})
