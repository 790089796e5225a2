"""vLLM's Prometheus families (`v1/metrics/loggers.py`), computed when scraped.

Names, labels (`model_name`, `engine="0"`), help texts and buckets are vLLM 0.33's. The
gauges and the token counters are read from the engine at scrape time, so they reflect
the scheduler as it is now; histograms take weighted observations, so that a request's
hundreds of inter-token latencies cost one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, cast

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from switchyard.enginesim.prometheus import Histogram

if TYPE_CHECKING:
    from switchyard.enginesim.prefix_cache import Lookup
    from switchyard.enginesim.vllm.engine import Engine, Job, Outcome

# Prometheus' own rendering of bucket bounds ("0.5", "1.0", "+Inf"); untyped upstream.
_bound_text = cast("Callable[[float], str]", floatToGoString)
_LABELS: Final = ["model_name", "engine"]

#: `vllm:prompt_tokens_by_source`'s sources (`PromptTokenStats.ALL_SOURCES`).
PROMPT_SOURCES: Final = ("local_compute", "local_cache_hit", "external_kv_transfer")
#: `vllm:prompt_tokens_cached_by_source`'s sources (`CacheHitSource`); hits here are "device".
CACHE_HIT_SOURCES: Final = ("device", "host", "p2p", "disk", "external_unspecified")
FINISH_REASONS: Final = ("stop", "length", "abort", "error", "repetition")
ADMISSION_REASONS: Final = ("max_num_queued_reqs", "max_num_queued_tokens")
LATENCY_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
#: name: (help, buckets; None for the 1-2-5 series of request tokens)
_HISTOGRAMS: Final[dict[str, tuple[str, Sequence[float] | None]]] = {
    "vllm:time_to_first_token_seconds": ("Histogram of time to first token in seconds.", TTFT_BUCKETS),
    "vllm:inter_token_latency_seconds": ("Histogram of inter-token latency in seconds.", ITL_BUCKETS),
    "vllm:request_time_per_output_token_seconds": ("Histogram of time_per_output_token_seconds per request.", ITL_BUCKETS),
    "vllm:e2e_request_latency_seconds": ("Histogram of e2e request latency in seconds.", LATENCY_BUCKETS),
    "vllm:request_queue_time_seconds": ("Histogram of time spent in WAITING phase for request.", LATENCY_BUCKETS),
    "vllm:request_inference_time_seconds": ("Histogram of time spent in RUNNING phase for request.", LATENCY_BUCKETS),
    "vllm:request_prefill_time_seconds": ("Histogram of time spent in PREFILL phase for request.", LATENCY_BUCKETS),
    "vllm:request_decode_time_seconds": ("Histogram of time spent in DECODE phase for request.", LATENCY_BUCKETS),
    "vllm:request_prompt_tokens": ("Number of prefill tokens processed.", None),
    "vllm:request_prefill_kv_computed_tokens": ("Histogram of new KV tokens computed during prefill (excluding cached tokens).", None),
    "vllm:request_generation_tokens": ("Number of generation tokens processed.", None),
    "vllm:request_params_max_tokens": ("Histogram of the max_tokens request parameter.", None),
    "vllm:request_params_n": ("Histogram of the n request parameter.", (1, 2, 5, 10, 20)),
}  # fmt: skip


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


class Metrics(Collector):
    """Every vLLM family the simulator keeps, for one served model on engine 0, in a
    registry of this app's own (with the process and runtime families)."""

    def __init__(self, model_name: str, max_model_len: int, engine: Engine) -> None:
        self.model_name = model_name
        self._labels = [model_name, "0"]
        self._engine = engine
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0  # of `prompt_tokens`, found in the prefix cache
        self.generation_tokens = 0  # of finished and aborted requests
        self.success = dict.fromkeys(FINISH_REASONS, 0)
        self.rejections = dict.fromkeys(ADMISSION_REASONS, 0)
        tokens = request_tokens_buckets(max_model_len)
        self.histograms = {
            name: Histogram(tokens if buckets is None else buckets)
            for name, (_, buckets) in _HISTOGRAMS.items()
        }
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in (self, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def scheduled(self, job: Job, lookups: Sequence[Lookup] = ()) -> None:
        self.prompt_tokens += job.prompt_tokens
        self.cached_prompt_tokens += sum(lookup.hit for lookup in lookups)
        self.histograms["vllm:request_params_n"].observe(job.n)

    def finished(
        self, job: Job, outcomes: Sequence[Outcome], *, queued_s: float, ttft_s: float,
        e2e_s: float, prefill_s: float, itl_s: float, cached: Sequence[int] = (),
    ) -> None:  # fmt: skip
        """`cached`: per prompt, its tokens found in the prefix cache."""
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
                per_token = (e2e_s - ttft_s) / (tokens - 1)
                h["vllm:request_time_per_output_token_seconds"].observe(per_token)
            prompt_tokens = job.prompts[o.prompt].tokens
            h["vllm:request_prompt_tokens"].observe(prompt_tokens)
            hit = cached[o.prompt] if o.prompt < len(cached) else 0
            h["vllm:request_prefill_kv_computed_tokens"].observe(prompt_tokens - hit)
            h["vllm:request_generation_tokens"].observe(tokens)
            h["vllm:request_params_max_tokens"].observe(job.max_tokens)

    def pooled(
        self, prompt_tokens: int, *, queued_s: float, e2e_s: float, prefill_s: float
    ) -> None:
        """A finished pooling request (one input of an embedding request): it stops at its
        first output, with no generated token, as vLLM's scheduler stops it."""
        h = self.histograms
        self.prompt_tokens += prompt_tokens
        self.success["stop"] += 1
        h["vllm:request_params_n"].observe(1)
        h["vllm:time_to_first_token_seconds"].observe(e2e_s)
        h["vllm:e2e_request_latency_seconds"].observe(e2e_s)
        h["vllm:request_queue_time_seconds"].observe(queued_s)
        h["vllm:request_inference_time_seconds"].observe(e2e_s - queued_s)
        h["vllm:request_prefill_time_seconds"].observe(prefill_s)
        h["vllm:request_decode_time_seconds"].observe(0.0)
        h["vllm:request_time_per_output_token_seconds"].observe(0.0)
        h["vllm:request_prompt_tokens"].observe(prompt_tokens)
        h["vllm:request_prefill_kv_computed_tokens"].observe(prompt_tokens)
        h["vllm:request_generation_tokens"].observe(0)

    def collect(self) -> Iterable[Metric]:
        engine, labels = self._engine, self._labels
        running, waiting = engine.scheduler.running, engine.scheduler.waiting
        kv_usage, generating = 0.0, 0
        try:  # timelines are in event-loop time; scraped off the loop, none is running
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        else:
            kv_usage, generating = engine.kv_cache_usage(now), engine.generating(now)
        gauge, counter = GaugeMetricFamily, CounterMetricFamily
        cache = engine.prefix_cache
        for kind, name, doc, value in (
            (gauge, "num_requests_running", "Number of requests in model execution batches.", running),
            (gauge, "num_requests_waiting", "Number of requests waiting to be processed.", waiting),
            (gauge, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", kv_usage),
            (counter, "num_preemptions", "Cumulative number of preemption from the engine.", 0),
            (counter, "prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens),
            (
                counter, "prompt_tokens_cached", "Number of cached prompt tokens (local + external).",
                self.cached_prompt_tokens,
            ),
            (
                counter, "prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.", cache.queries,
            ),
            (
                counter, "prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.", cache.hits,
            ),
            (
                counter, "generation_tokens", "Number of generation tokens processed.",
                self.generation_tokens + generating,
            ),
        ):  # fmt: skip
            yield _family(kind, f"vllm:{name}", doc, _LABELS, [(labels, value)])
        yield _family(
            gauge, "vllm:num_requests_waiting_by_reason",
            "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
            "scheduling capacity; 'deferred' = deferred by transient constraints "
            "(LoRA budget, KV transfer, blocked status). "
            "Sum of all reasons equals vllm:num_requests_waiting.",
            [*_LABELS, "reason"], [([*labels, "capacity"], waiting), ([*labels, "deferred"], 0)],
        )  # fmt: skip
        by_source = dict.fromkeys(PROMPT_SOURCES, 0)
        by_source["local_compute"] = self.prompt_tokens - self.cached_prompt_tokens
        by_source["local_cache_hit"] = self.cached_prompt_tokens
        yield _family(
            counter, "vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
            [*_LABELS, "source"], [([*labels, s], n) for s, n in by_source.items()],
        )  # fmt: skip
        hit_sources = dict.fromkeys(CACHE_HIT_SOURCES, 0)
        hit_sources["device"] = cache.hits
        yield _family(
            counter, "vllm:prompt_tokens_cached_by_source",
            "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), "
            "host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or "
            "external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + "
            "vllm:external_prefix_cache_hits.",
            [*_LABELS, "source"], [([*labels, s], n) for s, n in hit_sources.items()],
        )  # fmt: skip
        yield _family(
            counter, "vllm:request_success", "Count of successfully processed requests.",
            [*_LABELS, "finished_reason"], [([*labels, r], n) for r, n in self.success.items()],
        )  # fmt: skip
        yield _family(
            counter, "vllm:admission_rejections",
            "Number of admission attempts rejected by a queue limit, by reason.",
            ["model_name", "reason"],
            [([self.model_name, r], n) for r, n in self.rejections.items()],
        )  # fmt: skip
        for name, (doc, _) in _HISTOGRAMS.items():
            histogram = self.histograms[name]
            family = HistogramMetricFamily(name, doc, labels=_LABELS)
            buckets = [(_bound_text(bound), n) for bound, n in histogram.cumulative()]
            family.add_metric(labels, buckets, histogram.total)
            yield family


def _family(
    kind: type[GaugeMetricFamily | CounterMetricFamily], name: str, doc: str,
    labels: list[str], samples: Iterable[tuple[list[str], float]],
) -> Metric:  # fmt: skip
    family = kind(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family
