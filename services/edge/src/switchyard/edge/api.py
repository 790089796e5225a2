"""The edge's FastAPI application: routes, start-up and shutdown, errors, OpenAPI.

The generation routes read and validate their bodies themselves (auth first, a size
limit, pydantic's Rust JSON parser, OpenAI-shaped errors); their request schemas are
added to the OpenAPI document by hand so the docs (and schemathesis) still see them.
The docs (/docs, /openapi.json) are served only when `EDGE_DOCS` is on; the metrics are
never served here, but on their own port (`switchyard.edge.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from lightkube import AsyncClient
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from switchyard.edge import metrics
from switchyard.edge.admin import keys as admin_keys
from switchyard.edge.admission import Admission
from switchyard.edge.anthropic import routes as anthropic_routes
from switchyard.edge.anthropic.errors import AnthropicErrors, speaks_anthropic
from switchyard.edge.auth import KeyStore
from switchyard.edge.auth.changes import KeyChanges
from switchyard.edge.auth.secret import SecretKeys
from switchyard.edge.budget import create_budgets
from switchyard.edge.cache.factory import create_cache
from switchyard.edge.checks import Checks
from switchyard.edge.connections import POLICY, ConnectionPolicy
from switchyard.edge.direct_route import DirectRoute
from switchyard.edge.draining import Drain
from switchyard.edge.embeddings import handle as handle_embeddings
from switchyard.edge.errors import OpenAIError
from switchyard.edge.openai_responses.background import create_jobs
from switchyard.edge.openai_responses.routes import register as register_responses
from switchyard.edge.openai_responses.schemas import CreateResponse
from switchyard.edge.openai_responses.stores import create_response_store
from switchyard.edge.pipeline import handle
from switchyard.edge.ratelimit import create_limiter
from switchyard.edge.redis_pool import RedisConnections
from switchyard.edge.routing.endpoints import EndpointPool
from switchyard.edge.routing.file_source import FileRoutes
from switchyard.edge.routing.kubernetes_source import KubernetesRoutes
from switchyard.edge.routing.wake import WakeSignals
from switchyard.edge.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from switchyard.edge.settings import EdgeSettings
from switchyard.edge.state import EdgeState
from switchyard.edge.usage import routes as usage_routes
from switchyard.edge.usage.factory import create_recorder
from switchyard.servicekit.logs import configure_logging
from switchyard.servicekit.settings import load_settings
from switchyard.servicekit.telemetry import Tracing, configure_tracing, tracing_mode
from switchyard.servicekit.trace_context import TraceContextMiddleware

log = structlog.get_logger(__name__)

COMPONENT = "edge"
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    for status, text in {
        400: "Invalid request (OpenAI error body)",
        401: "Missing or unknown API key",
        404: "Unknown model, or one the key may not use",
        413: "Request body too large",
        429: "Rate limit reached, or the edge is at capacity (see Retry-After)",
        499: "The client went away while queued",
        500: "Unexpected server error",
        502: "The model backend failed",
        503: "No backend is ready, or rate limiting is unavailable (see Retry-After)",
        504: "The request timed out",
    }.items()
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}


#: One server-sent event of a stream: `data` is a JSON chunk, an error object, or `[DONE]`.
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
    },
}


#: OpenAI's `CreateEmbeddingResponse`: each vector a list of floats, or base64 of its
#: little-endian float32 bytes (encoding_format).
_EMBEDDINGS_SCHEMA = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer", "minimum": 0},
                    "embedding": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string", "contentEncoding": "base64"},
                        ]
                    },
                },
            },
        },
        "model": {"type": "string"},
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "total_tokens"],
            "properties": {
                "prompt_tokens": {"type": "integer", "minimum": 0},
                "total_tokens": {"type": "integer", "minimum": 0},
            },
        },
    },
}


def _edge(request: Request) -> EdgeState:
    state: EdgeState = request.app.state.edge
    return state


def _redis_pool(settings: EdgeSettings) -> RedisConnections | None:
    """One pool for the stores every request uses (limits, budgets, usage, key changes):
    one bound on this process's connections to `EDGE_REDIS_URL`, however many use it."""
    if settings.redis_url is None:
        return None
    return RedisConnections(
        settings.redis_url.get_secret_value(),
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
        connect_timeout_s=settings.redis_connect_timeout_s,
        pool_timeout_s=settings.redis_pool_timeout_s,
    )


async def _build_state(settings: EdgeSettings) -> tuple[EdgeState, list[asyncio.Task[None]]]:
    redis = _redis_pool(settings)
    if settings.keys_file is not None:
        keys = await asyncio.to_thread(KeyStore.load, settings.keys_file, settings.priority_classes)
        keys.changes = KeyChanges.over(redis)  # revocations reach every replica at once
    elif settings.keys_secret is not None:
        keys = await SecretKeys.from_settings(settings).open()  # read, watched, written: the API
        keys.changes = KeyChanges.over(redis)
    else:
        log.warning(
            "no_keys_file", hint="every request will be refused with 401; set EDGE_KEYS_FILE"
        )
        keys = KeyStore.empty()
    limiter = create_limiter(
        settings.rate_limit_backend,
        redis=redis,
        failure_mode=settings.rate_limit_failure_mode,
        fallback_processes=settings.rate_limit_fallback_processes,
    )
    await limiter.start()  # before the first request: see RedisRateLimiter
    cache = create_cache(settings)
    await cache.start()
    responses = create_response_store(settings)
    await responses.start()
    budgets = create_budgets(
        settings.budget_backend,
        redis=redis,
        zone=settings.budget_zone,
        failure_mode=settings.rate_limit_failure_mode,
    )
    await budgets.start()
    usage = create_recorder(settings, redis)
    await usage.store.start()
    if redis is not None:
        await redis.close()  # this function's own share: the stores hold theirs
    state = EdgeState(
        settings=settings,
        keys=keys,
        pool=EndpointPool.from_settings(settings),
        limiter=limiter,
        admission=Admission(
            settings.max_in_flight,
            settings.max_in_flight_per_model,
            settings.max_queue,
            settings.queue_timeout_s,
            fair=settings.fair_queuing,
            classes=settings.priority_classes,
        ),
        checks=Checks(settings.validation_workers, settings.validation_queue),
        drain=Drain(settings.shutdown_grace_s),
        cache=cache,
        responses=responses,
        budgets=budgets,
        usage=usage,
    )
    tasks = [
        asyncio.create_task(keys.watch(settings.reload_interval_s), name="keys watch"),
        asyncio.create_task(_publish_endpoints(state), name="endpoint gauges"),
    ]
    if settings.routes_source == "kubernetes":
        # In-cluster service account, or $KUBECONFIG elsewhere.
        cluster = KubernetesRoutes(
            AsyncClient(field_manager="switchyard-edge"),
            state.use_routes,
            namespace=settings.kubernetes_namespace,
            demand_interval_s=settings.demand_interval_s,
            wake=WakeSignals.from_settings(settings),
        )
        state.demand = cluster.demand
        state.routes_synced = cluster.synced.is_set
        tasks.append(asyncio.create_task(cluster.run(), name="kubernetes routes"))
    else:
        assert settings.routes_file is not None  # required by the settings for this source
        routes = FileRoutes(settings.routes_file, state.use_routes)
        tasks.append(
            asyncio.create_task(routes.watch(settings.reload_interval_s), name="routes watch")
        )
    state.jobs = create_jobs(state)
    await state.jobs.start()  # its workers take jobs once the routes are there
    return state, tasks


async def _publish_endpoints(state: EdgeState) -> None:
    while True:
        for route in state.routes.routes:
            metrics.ENDPOINTS_READY.labels(route.name).set(len(state.pool.healthy(route)))
        await asyncio.sleep(5)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _, defs = models_json_schema(
        [
            (ChatCompletionRequest, "validation"),
            (CompletionRequest, "validation"),
            (EmbeddingRequest, "validation"),
            *((model, "validation") for model in anthropic_routes.SCHEMAS),
            (CreateResponse, "validation"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(defs["$defs"])
    components["schemas"]["ErrorResponse"] = _ERROR_SCHEMA
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "anthropic": anthropic_routes.SECURITY_SCHEME,
    }
    app.openapi_schema = schema
    return schema


def _body_doc(model: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        },
        "security": [{"bearer": []}],
    }


def _generation_responses(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {"schema": _SSE_EVENT},
            },
        },
        **_ERROR_RESPONSES,
    }


def create_app(settings: EdgeSettings | None = None) -> FastAPI:
    """The edge application (a factory: uvicorn workers each call it)."""
    settings = settings or load_settings(EdgeSettings)
    configure_logging(COMPONENT, settings.log_level, settings.log_format)
    tracer_provider = configure_tracing(COMPONENT)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        state, tasks = await _build_state(settings)
        app.state.edge = state
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # GC's full collections, whose pauses would otherwise land on requests' tail latency.
        gc.freeze()
        log.info("edge_started", models=[r.name for r in state.routes.routes], keys=len(state.keys))
        policy = ConnectionPolicy(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.max_connections,
            on_shutdown=state.drain.begin,
        )
        try:
            yield {POLICY: policy}  # to the server's connections (switchyard.edge.connections)
        finally:
            await state.jobs.close()  # running jobs go back to the queue (Redis) or fail
            state.drain.close()
            state.checks.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.pool.aclose()
            await state.limiter.aclose()
            await state.cache.aclose()
            await state.responses.close()
            await state.budgets.aclose()
            await state.usage.store.aclose()
            if tracer_provider is not None:
                tracer_provider.shutdown()
            log.info("edge_stopped")

    app = FastAPI(
        title="Switchyard edge",
        version="0.1.0",
        description="OpenAI-compatible API in front of vLLM, SGLang and TGI.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry would trace every request a second time (and, without
        # an exporter, build spans nobody reads): traces come from `tracing_mode()` below.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Routes registered on the app from here on: an endpoint of the request alone is called
    # directly (see `direct_route`).
    app.router.route_class = DirectRoute

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        message = "Not found." if exc.status_code == 404 else str(exc.detail)
        error = OpenAIError(exc.status_code, message, headers=exc.headers)
        if speaks_anthropic(request.url.path):
            return AnthropicErrors().response(error)
        return error.response()

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> Response:
        # What a route raises (the admin API's refusals), in the error format of its API.
        if speaks_anthropic(request.url.path):
            return AnthropicErrors().response(exc)
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        error = OpenAIError.invalid(f"Invalid request: {first['msg']}")
        if speaks_anthropic(request.url.path):
            return AnthropicErrors().response(error)
        return error.response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected_error", path=request.url.path)
        if speaks_anthropic(request.url.path):
            return AnthropicErrors().response(OpenAIError.internal())
        return OpenAIError.internal().response()

    @app.post(
        "/v1/chat/completions",
        openapi_extra=_body_doc("ChatCompletionRequest"),
        responses=_generation_responses("A chat completion, or its stream (stream: true)"),
        tags=["openai"],
    )
    async def chat_completions(request: Request) -> Response:
        """Create a chat completion (OpenAI's API; `stream: true` answers server-sent events)."""
        return handle("chat", request, _edge(request))

    @app.post(
        "/v1/completions",
        openapi_extra=_body_doc("CompletionRequest"),
        responses=_generation_responses("A text completion, or its stream (stream: true)"),
        tags=["openai"],
    )
    async def completions(request: Request) -> Response:
        """Create a text completion (OpenAI's legacy completions API)."""
        return handle("completions", request, _edge(request))

    @app.post(
        "/v1/embeddings",
        openapi_extra=_body_doc("EmbeddingRequest"),
        responses={
            200: {
                "description": "One vector per input, in input order",
                "content": {"application/json": {"schema": _EMBEDDINGS_SCHEMA}},
            },
            **_ERROR_RESPONSES,
        },
        tags=["openai"],
    )
    async def embeddings(request: Request) -> Response:
        """Create embeddings (OpenAI's API): one engine call for all the inputs."""
        return handle_embeddings(request, _edge(request))

    register_responses(app, _edge, _ERROR_RESPONSES, _body_doc("CreateResponse"))

    anthropic_routes.register(app, _edge)

    admin_keys.register(app, _edge)

    app.include_router(usage_routes.router())

    def _model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "switchyard"}

    @app.get(
        "/v1/models",
        openapi_extra={"security": [{"bearer": []}]},
        responses={401: _ERROR_RESPONSES[401]},
        tags=["openai"],
    )
    async def list_models(request: Request) -> Response:
        """The models (and aliases) the caller's key may use."""
        edge = _edge(request)
        key = edge.keys.authenticate(request.headers.get("authorization"))
        if key is None:
            return OpenAIError.unauthorized().response()
        names = [
            name
            for route in edge.routes.routes
            for name in route.names
            if key.allows(name) or key.allows(route.name)
        ]
        return JSONResponse({"object": "list", "data": [_model_card(n) for n in names]})

    @app.get(
        "/v1/models/{model:path}",
        openapi_extra={"security": [{"bearer": []}]},
        responses={401: _ERROR_RESPONSES[401], 404: _ERROR_RESPONSES[404]},
        tags=["openai"],
    )
    async def retrieve_model(
        model: Annotated[str, Path(examples=["demo-vllm"])], request: Request
    ) -> Response:
        """One model, if the caller's key may use it."""
        edge = _edge(request)
        key = edge.keys.authenticate(request.headers.get("authorization"))
        if key is None:
            return OpenAIError.unauthorized().response()
        route = edge.routes.resolve(model)
        if route is None or not (key.allows(model) or key.allows(route.name)):
            return OpenAIError.model_not_found(model).response()
        return JSONResponse(_model_card(model))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "Not ready"}})
    async def readyz(request: Request) -> Response:
        """Readiness: configuration loaded; routes from a file: at least one; from the cluster: synced."""
        edge: EdgeState | None = getattr(request.app.state, "edge", None)
        if edge is None or not edge.routes_synced():
            return JSONResponse(
                {"status": "not ready", "reason": "routes not loaded"}, status_code=503
            )
        if edge.settings.routes_source == "file" and not len(edge.routes):
            return JSONResponse({"status": "not ready", "reason": "no routes"}, status_code=503)
        return JSONResponse({"status": "ready", "models": len(edge.routes)})

    mode = tracing_mode()
    if mode is Tracing.SPANS:
        FastAPIInstrumentor.instrument_app(
            app, excluded_urls="healthz,readyz", exclude_spans=["receive", "send"]
        )
    elif mode is Tracing.IDS:
        app.add_middleware(TraceContextMiddleware)
    return app
