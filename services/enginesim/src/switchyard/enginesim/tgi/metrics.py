"""TGI's Prometheus metrics, under its names, buckets and exposition.

The router records with the `metrics` crate and renders with `metrics-exporter-prometheus`,
which writes counters under their plain names (`tgi_request_count`, no `_total` suffix,
unlike `prometheus_client`), so this module keeps its own small per-app registry and
writes the text format itself. Buckets follow `router/src/server.rs`: 35 geometric ones
from 0.15 ms (x1.5) for every `*_duration`, 100 linear ones up to `--max-input-tokens`
for input lengths and up to `--max-total-tokens` for generated and new tokens. The gauges
are read from the scheduler at scrape time, so they are always the live state.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Final

from switchyard.enginesim.tgi.config import TgiConfig

_HELP: Final = {
    "tgi_request_count": "Total number of requests",
    "tgi_request_success": "Number of successful requests",
    "tgi_request_failure": "Number of failed requests",
    "tgi_request_duration": "Total time spent processing the request",
    "tgi_request_validation_duration": "Time spent validating the request",
    "tgi_request_queue_duration": "Time spent in the queue per request",
    "tgi_request_inference_duration": "Request inference duration",
    "tgi_request_mean_time_per_token_duration": "Mean time per token per request",
    "tgi_request_generated_tokens": "Generated tokens per request",
    "tgi_request_input_length": "Input token length per request",
    "tgi_request_max_new_tokens": "Maximum new tokens per request",
    "tgi_queue_size": "Current queue size",
    "tgi_batch_current_size": "Current batch size",
    "tgi_batch_current_max_tokens": "Maximum tokens for the current batch",
}
DURATIONS: Final = (
    "tgi_request_duration",
    "tgi_request_validation_duration",
    "tgi_request_queue_duration",
    "tgi_request_inference_duration",
    "tgi_request_mean_time_per_token_duration",
)
#: `err` label values the router uses; a fixed set, so the registry stays bounded.
FAILURE_KINDS: Final = frozenset(
    {"validation", "overloaded", "dropped", "incomplete", "generation", "template"}
)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Histogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.total += value

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {_number(self.total)}")
        out.append(f"{name}_count {self.count}")
        return out


class TgiMetrics:
    """One simulator's metrics; `gauges` returns (queue size, batch size, batch max tokens)."""

    def __init__(self, config: TgiConfig, gauges: Callable[[], tuple[int, int, int]]) -> None:
        self._gauges = gauges
        self.request_count = 0
        self.request_success = 0
        self.failures: dict[str, int] = {}
        durations = [0.0001 * 1.5 ** (i + 1) for i in range(35)]
        per_input = config.max_input_tokens / 100
        per_total = config.max_total_tokens / 100
        self.histograms: dict[str, Histogram] = {name: Histogram(durations) for name in DURATIONS}
        self.histograms["tgi_request_input_length"] = Histogram(
            [per_input * (x + 1) for x in range(100)]
        )
        for name in ("tgi_request_generated_tokens", "tgi_request_max_new_tokens"):
            self.histograms[name] = Histogram([per_total * (x + 1) for x in range(100)])

    def failure(self, err: str) -> None:
        if err in FAILURE_KINDS:
            self.failures[err] = self.failures.get(err, 0) + 1

    def observe(self, name: str, value: float) -> None:
        self.histograms[name].observe(value)

    def render(self) -> str:
        queue, batch, batch_tokens = self._gauges()
        blocks: list[list[str]] = [
            [
                *self._head("tgi_request_count", "counter"),
                f"tgi_request_count {self.request_count}",
            ],
            [
                *self._head("tgi_request_success", "counter"),
                f"tgi_request_success {self.request_success}",
            ],
        ]
        if self.failures:
            blocks.append(
                self._head("tgi_request_failure", "counter")
                + [
                    f'tgi_request_failure{{err="{k}"}} {v}'
                    for k, v in sorted(self.failures.items())
                ]
            )
        for name, value in (
            ("tgi_queue_size", queue),
            ("tgi_batch_current_size", batch),
            ("tgi_batch_current_max_tokens", batch_tokens),
        ):
            blocks.append([*self._head(name, "gauge"), f"{name} {value}"])
        for name, histogram in self.histograms.items():
            blocks.append(self._head(name, "histogram") + histogram.lines(name))
        return "\n\n".join("\n".join(block) for block in blocks) + "\n"

    @staticmethod
    def _head(name: str, kind: str) -> list[str]:
        return [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} {kind}"]
