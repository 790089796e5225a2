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
from typing import Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_TTFT_BUCKETS: Final = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
_E2E_BUCKETS: Final = (*_TTFT_BUCKETS, 600, 1200, 1800, 2400)
_ITL_BUCKETS: Final = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040,
    0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip
_STREAMING: Final = ("false", "true")


class LiveLoad(Protocol):
    """What the scheduler's gauges show, read at scrape time."""

    @property
    def running(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def used_tokens(self) -> int: ...
    @property
    def max_total_tokens(self) -> int: ...
    def gen_throughput(self) -> float: ...


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
    def __init__(self, load: LiveLoad, labels: dict[str, str]) -> None:
        self._load = load
        self._names = list(labels)
        self._values = list(labels.values())

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=self._names)
        family.add_metric(self._values, value)
        return family

    def collect(self) -> Iterable[Metric]:
        load = self._load
        used = load.used_tokens
        yield self._gauge(
            "sglang:num_running_reqs", "The number of running requests.", load.running
        )
        yield self._gauge(
            "sglang:num_queue_reqs", "The number of requests in the waiting queue.", load.waiting
        )
        yield self._gauge("sglang:num_used_tokens", "The number of used tokens.", used)
        yield self._gauge("sglang:token_usage", "The token usage.", used / load.max_total_tokens)
        yield self._gauge(
            "sglang:gen_throughput", "The generation throughput (token/s).", load.gen_throughput()
        )


class SglangMetrics:
    def __init__(self, model_name: str, load: LiveLoad) -> None:
        # SGLang exports through prometheus' multiprocess collector: no `*_created` series.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        labels = {"model_name": model_name, "engine_type": "unified"}
        names = [*labels, "is_streaming"]
        registry = self.registry
        prompt = Counter(
            "sglang:prompt_tokens_total", "Number of prefill tokens processed.", names,
            registry=registry,
        )  # fmt: skip
        generation = Counter(
            "sglang:generation_tokens_total", "Number of generation tokens processed.", names,
            registry=registry,
        )  # fmt: skip
        requests = Counter(
            "sglang:num_requests_total", "Number of requests processed.", names, registry=registry
        )
        aborted = Counter(
            "sglang:num_aborted_requests_total", "Number of requests aborted.", list(labels),
            registry=registry,
        )  # fmt: skip
        ttft = Histogram(
            "sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            names, buckets=_TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        itl = Histogram(
            "sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
            list(labels), buckets=_ITL_BUCKETS, registry=registry,
        )  # fmt: skip
        e2e = Histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds", names,
            buckets=_E2E_BUCKETS, registry=registry,
        )  # fmt: skip
        # Children bound once: no label lookups per token.
        values = list(labels.values())
        self._prompt = [prompt.labels(*values, s) for s in _STREAMING]
        self._generation = [generation.labels(*values, s) for s in _STREAMING]
        self._requests = [requests.labels(*values, s) for s in _STREAMING]
        self._ttft = [ttft.labels(*values, s) for s in _STREAMING]
        self._e2e = [e2e.labels(*values, s) for s in _STREAMING]
        self._aborted = aborted.labels(*values)
        self._itl = itl.labels(*values)
        scheduler_labels = {**labels, "tp_rank": "0", "pp_rank": "0", "moe_ep_rank": "0"}
        registry.register(_SchedulerGauges(load, scheduler_labels))

    def first_token(self, stream: bool, seconds: float) -> None:
        self._ttft[stream].observe(seconds)

    def inter_token(self, seconds: float) -> None:
        self._itl.observe(seconds)

    def finished(self, stream: bool, prompt_tokens: int, generated: int, e2e_s: float) -> None:
        self._prompt[stream].inc(prompt_tokens)
        self._generation[stream].inc(generated)
        self._requests[stream].inc()
        self._e2e[stream].observe(e2e_s)

    def aborted(self) -> None:
        self._aborted.inc()

    def route(self, path: str = "/metrics") -> Route:
        async def endpoint(request: Request) -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return Route(path, endpoint, methods=["GET"], name="metrics")
