"""Run an adapter: the gRPC server, its health and reflection services, readiness and shutdown.

Each adapter's `__main__` is one line: `run(ItsTranslation)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal

import grpc
import structlog
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from switchyard.adapter import metrics
from switchyard.adapter.engine import EngineClient
from switchyard.adapter.health import SERVICE_NAME, Readiness
from switchyard.adapter.load import LoadReader
from switchyard.adapter.service import InferenceServicer
from switchyard.adapter.settings import AdapterSettings
from switchyard.adapter.signals import LoadGauges, export_load
from switchyard.adapter.translation import Translation
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from switchyard.servicekit.grpc_tracing import server_interceptors
from switchyard.servicekit.logs import configure_logging
from switchyard.servicekit.settings import load_settings
from switchyard.servicekit.telemetry import configure_tracing

log = structlog.get_logger(__name__)


def component_name(translation: type[Translation]) -> str:
    """The one name of an adapter: folder, image, Service and OTel service name."""
    return f"adapter-{translation.engine}"


def server_options(settings: AdapterSettings) -> list[tuple[str, int]]:
    """gRPC server options: accept the edge's keepalive pings (gRPC's default allows one
    per 5 minutes, so a call silent for ~30 s would lose its connection to a GOAWAY)."""
    return [
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            max(1, round(settings.keepalive_min_ping_interval_s * 1000)),
        ),
        # Pings on a connection without calls too (the edge's are always within one: its
        # health watch, but a client between two calls must not be struck either).
        ("grpc.keepalive_permit_without_calls", 1),
        # gRPC's default, explicit: a client pinging faster than allowed is still cut off.
        ("grpc.http2.max_ping_strikes", 2),
    ]


async def serve(settings: AdapterSettings, translation: Translation) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight requests within the grace period."""
    tracer_provider = configure_tracing(component_name(type(translation)))

    engine = EngineClient(settings, translation)
    health = health_aio.HealthServicer()
    labels = (translation.engine, settings.served_model_name)
    readiness = Readiness(
        engine, health, settings.health_interval_s, metrics.ENGINE_READY.labels(*labels)
    )
    load = LoadReader(engine, translation.load_metrics, settings.load_cache_s)
    servicer = InferenceServicer(
        served_model_name=settings.served_model_name,
        engine=engine,
        readiness=readiness,
        load=load,
        default_timeout_s=settings.request_timeout_s,
        max_n=settings.max_n,
    )

    # Traces of the inference service only (health checks and reflection are noise).
    server = grpc.aio.server(
        options=server_options(settings), interceptors=server_interceptors(SERVICE_NAME)
    )
    pb_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    # The port bound, which differs from the setting when that is 0 (`make run`).
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    address = f"{settings.host}:{port}"
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)
    await server.start()
    # Everything built so far lives as long as the process: keep it out of the cyclic GC's
    # full collections, whose pauses would otherwise land on requests' tail latency.
    gc.freeze()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    checker = asyncio.create_task(readiness.run(), name="readiness")
    background = [checker]
    if settings.load_export_interval_s:
        gauges = LoadGauges(*labels)
        exporter = export_load(load, gauges, settings.load_export_interval_s)
        background.append(asyncio.create_task(exporter, name="load signals"))
    log.info(
        "adapter_started",
        address=address,
        engine=translation.engine,
        engine_url=engine.base_url,
        model=settings.served_model_name,
        metrics_port=settings.metrics_port or None,
    )
    await stop.wait()

    log.info(
        "adapter_stopping",
        in_flight=servicer.in_flight,
        drain_delay_s=settings.drain_delay_s,
        grace_s=settings.shutdown_grace_s,
    )
    for task in background:
        task.cancel()
    await drain(server, health, servicer, settings)
    await engine.aclose()
    if tracer_provider is not None:
        tracer_provider.shutdown()
    log.info("adapter_stopped")


async def drain(
    server: grpc.aio.Server,
    health: health_aio.HealthServicer,
    servicer: InferenceServicer,
    settings: AdapterSettings,
) -> None:
    """Stop without breaking a call: NOT_SERVING first, refusals only after the drain delay.

    Routers learn of NOT_SERVING asynchronously (an edge's health watch at once, a
    Kubernetes endpoint removal within seconds); a call one of them sent meanwhile is still
    served. From the end of the delay every new call is refused with UNAVAILABLE before any
    output (`stop_admitting`), which an edge retries on another endpoint.
    """
    await health.enter_graceful_shutdown()
    if settings.drain_delay_s:
        await asyncio.sleep(settings.drain_delay_s)
    # From now on every new call is refused by the servicer, with UNAVAILABLE. The gRPC
    # server itself keeps running meanwhile: one that is stopping cancels (CANCELLED, which
    # no client retries) a call that reaches it before its GOAWAY does. Generations in
    # flight get the grace period; health watches (every edge keeps one open) never end by
    # themselves, so once the generations are done the server stops at once.
    servicer.stop_admitting()
    log.info("adapter_draining", in_flight=servicer.in_flight)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.shutdown_grace_s):
            await servicer.idle.wait()
    await server.stop(0)


def run(translation: type[Translation]) -> None:
    settings = load_settings(AdapterSettings)
    configure_logging(component_name(translation), settings.log_level, settings.log_format)
    uvloop.run(serve(settings, translation(settings.served_model_name)))
