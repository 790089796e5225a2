"""Autoscaling signals: the engine's load, as the adapter's own Prometheus gauges.

Each engine names its load differently (and TGI reports no KV-cache use); the adapter
republishes it under one set of names, labelled by engine and model, so that one HPA or
KEDA rule fits every engine. Read on a timer (not at scrape time: the scrape runs on the
metrics server's thread, and the engine is read on the event loop), from the same cached
reader as the load reports the edge and the operator ask for.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from prometheus_client import Gauge

from switchyard.adapter import metrics
from switchyard.adapter.load import EngineLoad, LoadReader

log = structlog.get_logger(__name__)


class LoadGauges:
    """The load gauges of one engine and model."""

    def __init__(self, engine: str, model: str) -> None:
        self._labels = (engine, model)

    def publish(self, load: EngineLoad | None) -> None:
        """Show `load`; None (the engine's metrics cannot be read): no series at all, since
        a made-up zero would tell an autoscaler the model is idle."""
        if load is None:
            for gauge in (metrics.ENGINE_RUNNING, metrics.ENGINE_WAITING, metrics.KV_CACHE_USAGE):
                _remove(gauge, self._labels)
            return
        metrics.ENGINE_RUNNING.labels(*self._labels).set(load.running)
        metrics.ENGINE_WAITING.labels(*self._labels).set(load.waiting)
        if load.kv_cache_usage is None:
            _remove(metrics.KV_CACHE_USAGE, self._labels)
        else:
            metrics.KV_CACHE_USAGE.labels(*self._labels).set(load.kv_cache_usage)


def _remove(gauge: Gauge, labels: tuple[str, str]) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


async def export_load(reader: LoadReader, gauges: LoadGauges, interval_s: float) -> None:
    """Read the engine's load into `gauges` every `interval_s`, until cancelled."""
    while True:
        try:
            load = await reader.read()
        except Exception as exc:  # an unexpected page must not end the signals for good
            log.warning("engine_load_unreadable", error=repr(exc))
            load = None
        gauges.publish(load)
        await asyncio.sleep(interval_s)
