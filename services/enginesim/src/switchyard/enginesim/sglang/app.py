"""The simulator's Starlette app: SGLang's routes over one simulated runtime."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from switchyard.enginesim.faults import faults_route
from switchyard.enginesim.scheduler import Scheduler
from switchyard.enginesim.sglang.args import ServerArgs
from switchyard.enginesim.sglang.auth import ApiKeyMiddleware
from switchyard.enginesim.sglang.chat import ChatApi
from switchyard.enginesim.sglang.completions import CompletionsApi
from switchyard.enginesim.sglang.engine import SglangEngine
from switchyard.enginesim.sglang.errors import (
    EngineHTTPError,
    RequestInvalid,
    on_engine_http_error,
    on_http_exception,
    on_request_invalid,
)
from switchyard.enginesim.sglang.info import InfoApi
from switchyard.enginesim.sglang.limits import ContextLimits
from switchyard.enginesim.sglang.metrics import SglangMetrics
from switchyard.enginesim.sglang.native import NativeApi, aborts_route
from switchyard.enginesim.sglang.runtime import Runtime
from switchyard.enginesim.sglang.tokenization import TokenizeApi
from switchyard.enginesim.stats import SimStats, stats_route


def build_runtime(args: ServerArgs) -> Runtime:
    scheduler = Scheduler(args.max_running_requests, args.max_queued_requests, args.sim.latency)
    stats = SimStats()
    engine = SglangEngine(
        scheduler,
        stats,
        max_total_tokens=args.max_total_tokens,
        default_seed=args.sim.seed,
        deterministic=args.enable_deterministic_inference,
        abort_delay_s=args.abort_delay_s,
    )
    runtime = Runtime(
        args=args,
        scheduler=scheduler,
        engine=engine,
        stats=stats,
        limits=ContextLimits(args.context_length, args.allow_auto_truncate),
    )
    if args.enable_metrics:
        runtime.metrics = engine.metrics = SglangMetrics(args.served_model_name, engine)
    return runtime


def build_app(args: ServerArgs) -> Starlette:
    """The app; the simulated model starts loading now (SGLang is `Starting` meanwhile)."""
    runtime = build_runtime(args)
    runtime.scheduler.start()
    routes: list[BaseRoute] = [
        *InfoApi(runtime).routes(),
        *NativeApi(runtime).routes(),
        *ChatApi(runtime).routes(),
        *CompletionsApi(runtime).routes(),
        *TokenizeApi(runtime).routes(),
        stats_route(runtime.stats),
        aborts_route(runtime.engine),
        faults_route(runtime.scheduler.faults),
    ]
    if runtime.metrics is not None:
        routes.append(runtime.metrics.route())

    middleware: list[Middleware] = []
    if args.api_key or args.admin_api_key:  # as SGLang: installed only when a key is set
        middleware.append(
            Middleware(ApiKeyMiddleware, api_key=args.api_key, admin_api_key=args.admin_api_key)
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            RequestInvalid: on_request_invalid,
            EngineHTTPError: on_engine_http_error,
            HTTPException: on_http_exception,
        },
    )
    app.state.runtime = runtime
    return app
