"""Run the edge with uvicorn (uvloop, httptools), in one or several worker processes."""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from switchyard.common.logs import configure_logging
from switchyard.common.settings import load_settings
from switchyard.common.uvicorn_server import GracefulServer
from switchyard.edge.settings import EdgeSettings


def run() -> None:
    settings = load_settings(EdgeSettings)  # fail fast, before any worker starts
    configure_logging("edge", settings.log_level, settings.log_format)
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share their metrics through files, so /metrics shows the process's totals.
        metrics_dir = tempfile.mkdtemp(prefix="switchyard-edge-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    options = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,  # the edge logs one line per request itself
        "log_level": "warning",
        "server_header": False,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s),
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
