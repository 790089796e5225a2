"""The native routes: `POST /generate`, `/generate_stream`, `/` (compat) and `/tokenize`.

`/generate_stream` answers HTTP 200 whatever happens after the body was read: an
overloaded server, a validation error or a failed generation arrive as one
`{"error", "error_type"}` event, and the stream ends without `[DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.enginesim.scheduler import Overloaded
from switchyard.enginesim.serving import ClientDisconnected, OrjsonResponse, until_disconnected
from switchyard.enginesim.tgi import headers, payloads
from switchyard.enginesim.tgi.engine import TgiEngine
from switchyard.enginesim.tgi.errors import BodyRejection, InferError, validation
from switchyard.enginesim.tgi.params import GenerateRequest, parse_generate_request
from switchyard.enginesim.tgi.runs import Incoming, run_best_of, steps, tracked
from switchyard.enginesim.tgi.sse import sse_response
from switchyard.enginesim.tgi.wire import read_json


class NativeRoutes:
    def __init__(self, engine: TgiEngine, *, compat_return_full_text: bool = True) -> None:
        self.engine = engine
        self.compat_return_full_text = compat_return_full_text

    def routes(self) -> list[Route]:
        return [
            Route("/generate", self.generate, methods=["POST"]),
            Route("/generate_stream", self.generate_stream, methods=["POST"]),
            Route("/", self.compat, methods=["POST"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
        ]

    async def _read(self, request: Request, *, compat: bool = False) -> GenerateRequest:
        body = await read_json(request, self.engine.config.payload_limit)
        return parse_generate_request(body, compat=compat)

    async def generate(self, request: Request) -> Response:
        try:
            req = await self._read(request)
        except BodyRejection as rejection:
            return rejection.response()
        return await self.unary(request, req, wrap=False)

    async def generate_stream(self, request: Request) -> Response:
        try:
            req = await self._read(request)
        except BodyRejection as rejection:
            return rejection.response()
        return self.stream(request, req)

    async def compat(self, request: Request) -> Response:
        try:
            req = await self._read(request, compat=True)
        except BodyRejection as rejection:
            return rejection.response()
        if req.parameters.return_full_text is None:
            params = replace(req.parameters, return_full_text=self.compat_return_full_text)
            req = GenerateRequest(req.inputs, params, req.stream)
        if req.stream:
            return self.stream(request, req)
        return await self.unary(request, req, wrap=True)

    async def unary(self, request: Request, req: GenerateRequest, *, wrap: bool) -> Response:
        engine = self.engine
        engine.metrics.request_count += 1
        incoming = Incoming.of(request)
        p = req.parameters
        try:
            with (
                engine.stats.track(incoming.request_id, incoming.traceparent),
                engine.counting_drops(),
            ):
                work = run_best_of(engine, incoming, req.inputs, p)
                outcomes = await until_disconnected(request, work)
        except ClientDisconnected:
            return Response(status_code=499)  # nobody reads it; uvicorn drops it
        except Overloaded:
            return InferError("overloaded").response()
        except InferError as error:
            return error.response()
        best, *others = outcomes
        body = payloads.generate_response(
            best,
            prefix=req.inputs if p.return_full_text else None,
            with_details=p.details or p.decoder_input_details,
            best_of=others,
        )
        out = headers.generation(incoming.received_at, best, len(req.inputs))
        return OrjsonResponse([body] if wrap else body, headers=out)

    def stream(self, request: Request, req: GenerateRequest) -> Response:
        engine = self.engine
        engine.metrics.request_count += 1
        incoming = Incoming.of(request)
        events = tracked(engine, incoming, self._events(incoming, req), InferError.sse)
        return sse_response(events, engine.config.keep_alive_s, headers.stream(len(req.inputs)))

    async def _events(
        self, incoming: Incoming, req: GenerateRequest
    ) -> AsyncGenerator[bytes, None]:
        p = req.parameters
        if (p.best_of or 1) != 1:
            raise self.engine.fail(
                validation("`best_of` != 1 is not supported when streaming tokens")
            )
        if p.decoder_input_details:
            raise self.engine.fail(
                validation("`decoder_input_details` == true is not supported when streaming tokens")
            )
        prefix = req.inputs if p.return_full_text else ""
        async for step in steps(self.engine, incoming, req.inputs, p):
            if step.outcome is None:
                yield payloads.stream_event(step.index, step.token, step.top_tokens)
            else:
                details = payloads.stream_details(step.outcome) if p.details else None
                yield payloads.stream_event(
                    step.index,
                    step.token,
                    step.top_tokens,
                    generated_text=prefix + step.outcome.decoded.text,
                    details=details,
                )

    async def tokenize(self, request: Request) -> Response:
        try:
            req = await self._read(request)
        except BodyRejection as rejection:
            return rejection.response()
        out = payloads.simple_tokens(req.inputs)
        truncate = req.parameters.truncate
        if truncate is not None and len(out) > truncate:
            out = out[len(out) - truncate :]
        return OrjsonResponse(out)
