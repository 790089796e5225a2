"""vLLM's Prometheus families (`v1/metrics/loggers.py`), computed when scraped.

Names, labels (`model_name`, `engine="0"`), help texts and buckets are vLLM 0.33's. The
gauges and the token counters are read from the engine at scrape time, so they reflect
the scheduler as it is now; histograms take weighted observations, so that a request's
hundreds of inter-token latencies cost one call.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, cast

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from switchyard.enginesim.vllm.engine import Engine, Outcome
    from switchyard.enginesim.vllm.inputs import Job

# Prometheus' own rendering of bucket bounds ("0.5", "1.0", "+Inf"); untyped upstream.
_bound_text = cast("Callable[[float], str]", floatToGoString)

FINISH_REASONS: Final = ("stop", "length", "abort", "error", "repetition")
ADMISSION_REASONS: Final = ("max_num_queued_reqs", "max_num_queued_tokens")

REQUEST_LATENCY_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_PARAMS_N_BUCKETS: Final = (1, 2, 5, 10, 20)


def request_tokens_buckets(max_model_len: int) -> list[float]:
    """vLLM's 1-2-5 series capped at the context length."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_model_len:
                return buckets
            buckets.append(value)
        exponent += 1


class Histogram:
    """Bucket counts and a sum; `observe(value, count)` records `count` equal values."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        if count > 0:
            self.counts[bisect.bisect_left(self.bounds, value)] += count
            self.total += value * count

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((_bound_text(bound), running))
        return out


_HISTOGRAMS: Final = {
    # name: (help, buckets or None for the request-token series)
    "vllm:time_to_first_token_seconds": (
        "Histogram of time to first token in seconds.",
        TIME_TO_FIRST_TOKEN_BUCKETS,
    ),
    "vllm:inter_token_latency_seconds": (
        "Histogram of inter-token latency in seconds.",
        INTER_TOKEN_LATENCY_BUCKETS,
    ),
    "vllm:request_time_per_output_token_seconds": (
        "Histogram of time_per_output_token_seconds per request.",
        INTER_TOKEN_LATENCY_BUCKETS,
    ),
    "vllm:e2e_request_latency_seconds": (
        "Histogram of e2e request latency in seconds.",
        REQUEST_LATENCY_BUCKETS,
    ),
    "vllm:request_queue_time_seconds": (
        "Histogram of time spent in WAITING phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    "vllm:request_inference_time_seconds": (
        "Histogram of time spent in RUNNING phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    "vllm:request_prefill_time_seconds": (
        "Histogram of time spent in PREFILL phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    "vllm:request_decode_time_seconds": (
        "Histogram of time spent in DECODE phase for request.",
        REQUEST_LATENCY_BUCKETS,
    ),
    "vllm:request_prompt_tokens": ("Number of prefill tokens processed.", None),
    "vllm:request_generation_tokens": ("Number of generation tokens processed.", None),
    "vllm:request_params_max_tokens": ("Histogram of the max_tokens request parameter.", None),
    "vllm:request_params_n": (
        "Histogram of the n request parameter.",
        REQUEST_PARAMS_N_BUCKETS,
    ),
}


class VllmMetrics(Collector):
    """Every vLLM family the simulator keeps, for one served model on engine 0."""

    def __init__(self, model_name: str, max_model_len: int) -> None:
        self.model_name = model_name
        self._labels = [model_name, "0"]
        self._engine: Engine | None = None
        self.prompt_tokens = 0
        self.generation_tokens = 0  # of finished and aborted requests
        self.success = dict.fromkeys(FINISH_REASONS, 0)
        self.rejections = dict.fromkeys(ADMISSION_REASONS, 0)
        token_buckets = request_tokens_buckets(max_model_len)
        self.histograms = {
            name: Histogram(token_buckets if buckets is None else buckets)
            for name, (_, buckets) in _HISTOGRAMS.items()
        }

    def bind(self, engine: Engine) -> None:
        self._engine = engine

    # --- recording ---------------------------------------------------------------------
    def admission_rejected(self, reason: str) -> None:
        self.rejections[reason] += 1

    def scheduled(self, job: Job) -> None:
        self.prompt_tokens += job.prompt_tokens
        self.histograms["vllm:request_params_n"].observe(job.n)

    def aborted(self, generated: int) -> None:
        self.generation_tokens += generated

    def finished(
        self,
        job: Job,
        outcomes: Sequence[Outcome],
        *,
        queued_s: float,
        ttft_s: float,
        e2e_s: float,
        prefill_s: float,
        itl_s: float,
    ) -> None:
        h = self.histograms
        for o in outcomes:
            tokens = o.completion_tokens
            self.success[o.finish_reason] += 1
            self.generation_tokens += tokens
            h["vllm:e2e_request_latency_seconds"].observe(e2e_s)
            h["vllm:time_to_first_token_seconds"].observe(ttft_s)
            h["vllm:request_queue_time_seconds"].observe(queued_s)
            h["vllm:request_inference_time_seconds"].observe(e2e_s - queued_s)
            h["vllm:request_prefill_time_seconds"].observe(prefill_s)
            h["vllm:request_decode_time_seconds"].observe(max(0.0, e2e_s - queued_s - prefill_s))
            h["vllm:inter_token_latency_seconds"].observe(itl_s, tokens - 1)
            if tokens > 1:
                h["vllm:request_time_per_output_token_seconds"].observe(
                    (e2e_s - ttft_s) / (tokens - 1)
                )
            h["vllm:request_prompt_tokens"].observe(job.prompts[o.prompt].tokens)
            h["vllm:request_generation_tokens"].observe(tokens)
            h["vllm:request_params_max_tokens"].observe(job.max_tokens)

    # --- exposition --------------------------------------------------------------------
    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["model_name", "engine"])
        family.add_metric(self._labels, value)
        return family

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["model_name", "engine"])
        family.add_metric(self._labels, value)
        return family

    def collect(self) -> Iterable[Metric]:
        engine = self._engine
        running = waiting = 0
        kv_usage = 0.0
        generating = 0
        if engine is not None:
            running, waiting = engine.scheduler.running, engine.scheduler.waiting
            try:  # timelines are in event-loop time; scraped off the loop, none is running
                now = asyncio.get_running_loop().time()
            except RuntimeError:
                now = None
            if now is not None:
                kv_usage = engine.kv_cache_usage(now)
                generating = engine.generating(now)
        yield self._gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", running
        )
        yield self._gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting
        )
        by_reason = GaugeMetricFamily(
            "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
            "scheduling capacity; 'deferred' = deferred by transient constraints "
            "(LoRA budget, KV transfer, blocked status). "
            "Sum of all reasons equals vllm:num_requests_waiting.",
            labels=["model_name", "engine", "reason"],
        )
        by_reason.add_metric([*self._labels, "capacity"], waiting)
        by_reason.add_metric([*self._labels, "deferred"], 0)
        yield by_reason
        yield self._gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage
        )
        yield self._counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine.", 0
        )
        yield self._counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens
        )
        yield self._counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            self.generation_tokens + generating,
        )
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=["model_name", "engine", "finished_reason"],
        )
        for reason, count in self.success.items():
            success.add_metric([*self._labels, reason], count)
        yield success
        rejections = CounterMetricFamily(
            "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            labels=["model_name", "reason"],
        )
        for reason, count in self.rejections.items():
            rejections.add_metric([self.model_name, reason], count)
        yield rejections
        for name, (doc, _) in _HISTOGRAMS.items():
            histogram = self.histograms[name]
            family = HistogramMetricFamily(name, doc, labels=["model_name", "engine"])
            family.add_metric(self._labels, histogram.buckets(), histogram.total)
            yield family


def registry(metrics: VllmMetrics) -> CollectorRegistry:
    """A registry of this app's own: vLLM's families plus the process and runtime ones."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(metrics)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        reg.register(collector)
    return reg
