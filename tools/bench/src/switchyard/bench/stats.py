"""From samples to figures: percentiles, rates, and what a path adds to the floor."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from switchyard.bench.loadgen import Sample


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, interpolated linearly between the two
    nearest ranks (numpy's default); NaN when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Summary:
    """One scenario on one path. Latencies are of successful requests, in seconds."""

    requests: int
    ok: int
    errors: dict[str, int]
    duration_s: float
    latency_p50_s: float
    latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    requests_per_s: float
    tokens_per_s: float
    #: Successful answers by their `x-switchyard-cache` header ("hit", "miss"); none: no header.
    cache: dict[str, int] = field(default_factory=dict)
    #: Tokens of the successful answers (completion tokens; embeddings: input tokens).
    tokens: int = 0
    #: Streams: the gap between successive text chunks as the client read them, over
    #: every chunk of every successful stream (NaN when none).
    gap_p50_s: float = math.nan
    gap_p99_s: float = math.nan

    @property
    def error_rate(self) -> float:
        return (self.requests - self.ok) / self.requests if self.requests else 0.0


def _error_kind(sample: Sample) -> str:
    if sample.status and sample.status != 200:
        return f"HTTP {sample.status}"
    return (sample.error or "").split(":", 1)[0]


def summarize(samples: Sequence[Sample], duration_s: float) -> Summary:
    """The figures of one run of a scenario; rates count successful requests only."""
    good = [s for s in samples if s.ok]
    latencies = [s.latency_s for s in good]
    ttfts = [s.ttft_s for s in good if s.ttft_s is not None]
    errors = Counter(_error_kind(s) for s in samples if not s.ok)
    cache = Counter(s.cache for s in good if s.cache is not None)
    gaps = [gap for s in good for gap in s.gaps]
    tokens = sum(s.tokens for s in good)
    rate = 1 / duration_s if duration_s > 0 else math.nan
    return Summary(
        requests=len(samples),
        ok=len(good),
        errors=dict(errors),
        duration_s=duration_s,
        latency_p50_s=percentile(latencies, 50),
        latency_p99_s=percentile(latencies, 99),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p99_s=percentile(ttfts, 99),
        requests_per_s=len(good) * rate,
        tokens_per_s=tokens * rate,
        cache=dict(cache),
        tokens=tokens,
        gap_p50_s=percentile(gaps, 50),
        gap_p99_s=percentile(gaps, 99),
    )


@dataclass(frozen=True, slots=True)
class Added:
    """What a path adds to the floor's latency in the same scenario (seconds)."""

    p50_s: float
    p99_s: float


def added(path: Summary, floor: Summary) -> Added:
    """Percentile against percentile: p50 minus the floor's p50, p99 minus its p99."""
    return Added(path.latency_p50_s - floor.latency_p50_s, path.latency_p99_s - floor.latency_p99_s)
