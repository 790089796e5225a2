"""`/v1/tokenize` (and `/tokenize`), `/v1/detokenize` (and `/detokenize`)
(`entrypoints/openai/serving_tokenize.py`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchyard.enginesim import tokenizer
from switchyard.enginesim.chat_template import render
from switchyard.enginesim.serving import OrjsonResponse
from switchyard.enginesim.sglang.errors import openai_error
from switchyard.enginesim.sglang.openai_base import OpenAIServing
from switchyard.enginesim.sglang.prompts import LARGE, off_loop
from switchyard.enginesim.sglang.protocol import DetokenizeRequest, TokenizeRequest


class TokenizeApi(OpenAIServing):
    def routes(self) -> list[Route]:
        return [
            Route("/v1/tokenize", self.tokenize, methods=["POST"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/v1/detokenize", self.detokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
        ]

    async def tokenize(self, request: Request) -> Response:
        body = await self.parse(request, TokenizeRequest)
        max_model_len = self.rt.args.context_length
        try:
            if body.messages is not None:
                text = render([{"role": m.role, "content": m.text()} for m in body.messages])
                ids = await off_loop(len(text) > LARGE, tokenizer.encode, text)
                return OrjsonResponse(
                    {"tokens": ids, "count": len(ids), "max_model_len": max_model_len}
                )
            if isinstance(body.prompt, str):
                ids = await off_loop(len(body.prompt) > LARGE, tokenizer.encode, body.prompt)
                return OrjsonResponse(
                    {"tokens": ids, "count": len(ids), "max_model_len": max_model_len}
                )
            batch = [tokenizer.encode(p) for p in body.prompt or []]
            return OrjsonResponse(
                {
                    "tokens": batch,
                    "count": [len(ids) for ids in batch],
                    "max_model_len": max_model_len,
                }
            )
        except ValueError as exc:
            return openai_error(str(exc))

    async def detokenize(self, request: Request) -> Response:
        body = await self.parse(request, DetokenizeRequest)
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
