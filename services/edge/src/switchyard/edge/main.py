"""Run the edge with uvicorn (uvloop, httptools), in one or several worker processes."""

from __future__ import annotations

import os
import tempfile

import uvicorn

from switchyard.common.logs import configure_logging
from switchyard.common.settings import load_settings
from switchyard.edge.settings import EdgeSettings


def run() -> None:
    settings = load_settings(EdgeSettings)  # fail fast, before any worker starts
    configure_logging("edge", settings.log_level, settings.log_format)
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share their metrics through files, so /metrics shows the process's totals.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="switchyard-edge-metrics-")
    uvicorn.run(
        "switchyard.edge.api:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the edge logs one line per request itself
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
