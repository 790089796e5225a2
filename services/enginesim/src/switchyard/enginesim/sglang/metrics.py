"""SGLang's Prometheus metrics (`srt/observability/metrics_collector.py`), served at /metrics
only with --enable-metrics.

Names and labels are SGLang's: the scheduler's gauges carry `model_name`, `engine_type`,
`tp_rank`, `pp_rank`, `moe_ep_rank`; the tokenizer's counters and histograms carry
`model_name`, `engine_type`, plus `is_streaming` where SGLang has it. Gauges are read
from the live engine at scrape time. Each app has its own registry, so several
simulators can live in one process (tests).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from switchyard.enginesim.sglang.engine import Engine

_TTFT_BUCKETS: Final = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
_E2E_BUCKETS: Final = (*_TTFT_BUCKETS, 600, 1200, 1800, 2400)
_ITL_BUCKETS: Final = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040,
    0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip
_STREAMING: Final = ("false", "true")


class Throughput:
    """Generated tokens per second over the last `window_s` seconds (bounded memory)."""

    def __init__(self, window_s: int = 5) -> None:
        self._window = window_s
        self._buckets: deque[list[int]] = deque(maxlen=window_s + 1)  # [second, tokens]

    def add(self, tokens: int = 1) -> None:
        second = int(time.monotonic())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += tokens
        else:
            self._buckets.append([second, tokens])

    def rate(self) -> float:
        since = int(time.monotonic()) - self._window
        return sum(n for second, n in self._buckets if second > since) / self._window


class _SchedulerGauges(Collector):
    def __init__(self, engine: Engine, labels: dict[str, str]) -> None:
        self._engine = engine
        self._names, self._values = list(labels), list(labels.values())

    def collect(self) -> Iterable[Metric]:
        engine = self._engine
        used = engine.used_tokens
        for name, doc, value in (
            ("num_running_reqs", "The number of running requests.", engine.running),
            ("num_queue_reqs", "The number of requests in the waiting queue.", engine.waiting),
            ("num_used_tokens", "The number of used tokens.", used),
            ("token_usage", "The token usage.", used / engine.config.max_total_tokens),
            ("gen_throughput", "The generation throughput (token/s).", engine.throughput.rate()),
            ("cache_hit_rate", "The prefix cache hit rate.", engine.cache_hit_rate),
        ):
            family = GaugeMetricFamily(f"sglang:{name}", doc, labels=self._names)
            family.add_metric(self._values, value)
            yield family


class Metrics:
    def __init__(self, model_name: str, engine: Engine) -> None:
        # SGLang exports through prometheus' multiprocess collector: no `*_created` series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry()
        labels = {"model_name": model_name, "engine_type": "unified"}
        values, names = list(labels.values()), [*labels, "is_streaming"]

        def per_stream(
            kind: type[Counter | Histogram], name: str, doc: str, **kw: Any
        ) -> list[Any]:
            metric = kind(name, doc, names, registry=registry, **kw)
            return [
                metric.labels(*values, s) for s in _STREAMING
            ]  # bound once: no lookups per token

        self._prompt = per_stream(
            Counter, "sglang:prompt_tokens_total", "Number of prefill tokens processed."
        )
        self._generation = per_stream(
            Counter, "sglang:generation_tokens_total", "Number of generation tokens processed."
        )
        self._requests = per_stream(
            Counter, "sglang:num_requests_total", "Number of requests processed."
        )
        self._ttft = per_stream(
            Histogram, "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.", buckets=_TTFT_BUCKETS,
        )  # fmt: skip
        self._e2e = per_stream(
            Histogram, "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds", buckets=_E2E_BUCKETS,
        )  # fmt: skip
        # Hits are all "device" (the GPU's radix cache; the simulator has no host tier). As
        # in SGLang, the series appears with the first hit.
        self._cached_family = Counter(
            "sglang:cached_tokens_total",
            "Number of cached prompt tokens by source (device/host/storage).",
            [*labels, "cache_source"], registry=registry,
        )  # fmt: skip
        self._cached_labels = [*values, "device"]
        self._aborted = Counter(
            "sglang:num_aborted_requests_total", "Number of requests aborted.", list(labels),
            registry=registry,
        ).labels(*values)  # fmt: skip
        self._itl = Histogram(
            "sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
            list(labels), buckets=_ITL_BUCKETS, registry=registry,
        ).labels(*values)  # fmt: skip
        scheduler_labels = {**labels, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}
        registry.register(_SchedulerGauges(engine, scheduler_labels))

    def token(self, stream: bool, seconds: float, first: bool) -> None:
        """A token out, `seconds` after the request arrived (first) or the previous token."""
        if first:
            self._ttft[stream].observe(seconds)
        else:
            self._itl.observe(seconds)

    def finished(
        self, stream: bool, prompt_tokens: int, generated: int, e2e_s: float, cached: int = 0
    ) -> None:
        self._prompt[stream].inc(prompt_tokens)
        if cached > 0:
            self._cached_family.labels(*self._cached_labels).inc(cached)
        self._generation[stream].inc(generated)
        self._requests[stream].inc()
        self._e2e[stream].observe(e2e_s)

    def aborted(self) -> None:
        self._aborted.inc()
