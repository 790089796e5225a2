"""Load reports read from the engine's own Prometheus gauges.

An engine's /metrics page is mostly histograms (vLLM's runs to ~100 KB); parsing all of
it on the event loop that relays tokens would stall streams. We pick out only the few
gauge lines a load report needs, and reuse a report for a short time so that many
callers (edge replicas, the operator) cost one scrape.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from switchyard.adapter.engine import EngineClient
from switchyard.adapter.translation import EngineHTTPError, LoadMetrics


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: int
    waiting: int
    kv_cache_usage: float | None


def gauge_samples(text: str, names: set[str]) -> dict[str, list[float]]:
    """Each named metric's finite samples (one per label set) in a Prometheus exposition."""
    samples: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        space = line.find(" ")
        end = brace if 0 <= brace < space else space
        name = line[:end]
        if name not in names:
            continue
        # The value follows the (possibly labelled) name; an optional timestamp may follow it.
        rest = line[line.rfind("}") + 1 :] if brace == end else line[end:]
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            samples.setdefault(name, []).append(value)
    return samples


def gauge_sums(text: str, names: set[str]) -> dict[str, float]:
    """Sum of each named metric's samples (over all label sets) in a Prometheus exposition."""
    return {name: sum(values) for name, values in gauge_samples(text, names).items()}


def engine_load(text: str, metrics: LoadMetrics) -> EngineLoad:
    names = {metrics.running, metrics.waiting}
    if metrics.kv_cache_usage:
        names.add(metrics.kv_cache_usage)
    samples = gauge_samples(text, names)
    # Requests add up over an engine's data-parallel ranks (one series each); their KV
    # caches are separate, so their use is the mean, not the sum.
    kv_samples = samples.get(metrics.kv_cache_usage) if metrics.kv_cache_usage else None
    kv = sum(kv_samples) / len(kv_samples) if kv_samples else None
    return EngineLoad(
        running=int(sum(samples.get(metrics.running, ()))),
        waiting=int(sum(samples.get(metrics.waiting, ()))),
        kv_cache_usage=None if kv is None else min(max(kv, 0.0), 1.0),
    )


class LoadReader:
    """Cached, single-flight reads of the engine's load."""

    def __init__(self, engine: EngineClient, metrics: LoadMetrics, max_age_s: float) -> None:
        self._engine = engine
        self._metrics = metrics
        self._max_age_s = max_age_s
        self._last: EngineLoad | None = None
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def read(self) -> EngineLoad | None:
        """The engine's load, or None when its metrics cannot be read (e.g. still loading)."""
        if time.monotonic() - self._read_at < self._max_age_s:
            return self._last
        async with self._lock:
            if time.monotonic() - self._read_at < self._max_age_s:
                return self._last
            try:
                self._last = engine_load(await self._engine.metrics_text(), self._metrics)
            except EngineHTTPError:
                self._last = None
            self._read_at = time.monotonic()
            return self._last
