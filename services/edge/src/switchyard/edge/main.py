"""Run the edge with uvicorn (uvloop, httptools), in one or several worker processes."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from typing import Any

import uvicorn

from switchyard.edge.draining import HARD_STOP_AFTER_S
from switchyard.edge.settings import EdgeSettings
from switchyard.servicekit.logs import configure_logging
from switchyard.servicekit.settings import load_settings
from switchyard.servicekit.uvicorn_server import GracefulServer


def run() -> None:
    settings = load_settings(EdgeSettings)  # fail fast, before any worker starts
    configure_logging("edge", settings.log_level, settings.log_format)
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share their metrics through files, so /metrics shows the process's totals.
        metrics_dir = tempfile.mkdtemp(prefix="switchyard-edge-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if settings.metrics_port:
        from switchyard.edge import metrics  # after PROMETHEUS_MULTIPROC_DIR is set

        # In this process: the server itself with one worker, uvicorn's supervisor (which
        # reads every worker's files) with several.
        try:
            metrics.serve(settings.metrics_port, settings.host)
        except OSError as exc:
            raise SystemExit(
                f"EDGE_METRICS_PORT={settings.metrics_port}: cannot listen ({exc.strerror}); "
                "choose another port, or 0 to serve no metrics"
            ) from None
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        # httptools with the edge's limits on headers, read times and connections.
        "http": "switchyard.edge.connections:EdgeHttpProtocol",
        "timeout_keep_alive": settings.keepalive_timeout_s,
        "access_log": False,  # the edge logs one line per request itself
        "log_level": "warning",
        "server_header": False,
        # The edge ends what still runs at shutdown_grace_s itself (switchyard.edge.draining);
        # uvicorn's cancellation is the last resort.
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_grace_s) + HARD_STOP_AFTER_S,
    }
    app = "switchyard.edge.api:create_app"
    if settings.workers == 1:
        GracefulServer(uvicorn.Config(app, **options)).run()
    else:
        # uvicorn's supervisor forwards signals to the workers and returns once they stop.
        try:
            uvicorn.run(app, workers=settings.workers, **options)
        finally:
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
