"""The router's information routes: `/info`, `/health` (also `GET /` and `/ping`),
`/metrics` and `/v1/models`.

The router only binds its port once the model is loaded and warmed up, so a listening
simulator is healthy: `/health` answers 200 with an empty body.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from switchyard.enginesim.serving import OrjsonResponse
from switchyard.enginesim.tgi import VERSION
from switchyard.enginesim.tgi.engine import TgiEngine

PIPELINE_TAG = "text-generation"


def info(engine: TgiEngine) -> dict[str, Any]:
    c = engine.config
    return {
        "model_id": c.model_id,
        "model_sha": None,
        "model_pipeline_tag": PIPELINE_TAG,
        "max_concurrent_requests": c.max_concurrent_requests,
        "max_best_of": c.max_best_of,
        "max_stop_sequences": c.max_stop_sequences,
        "max_input_tokens": c.max_input_tokens,
        "max_total_tokens": c.max_total_tokens,
        "validation_workers": c.validation_workers,
        "max_client_batch_size": c.max_client_batch_size,
        "router": "text-generation-router",
        "version": VERSION,
        "sha": None,
        "docker_label": None,
    }


class InfoRoutes:
    def __init__(self, engine: TgiEngine) -> None:
        self.engine = engine

    def routes(self) -> list[Route]:
        return [
            Route("/", self.health, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ping", self.health, methods=["GET"]),
            Route("/info", self.info, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
        ]

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def info(self, request: Request) -> Response:
        return OrjsonResponse(info(self.engine))

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(self.engine.metrics.render())

    async def models(self, request: Request) -> Response:
        model = self.engine.config.model_id
        card = {"id": model, "object": "model", "created": 0, "owned_by": model}
        return OrjsonResponse({"object": "list", "data": [card]})
