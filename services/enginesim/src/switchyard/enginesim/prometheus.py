"""What the engines' Prometheus metrics share: cheap histograms and the exposition route."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Histogram:
    """Bucket counts and a sum; `observe(value, count)` records `count` equal values, so a
    request's hundreds of inter-token latencies cost one call."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        if count > 0:
            self.counts[bisect.bisect_left(self.bounds, value)] += count
            self.total += value * count

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +Inf and the count."""
        return list(
            zip((*self.bounds, float("inf")), itertools.accumulate(self.counts), strict=True)
        )


def exposition_route(registry: CollectorRegistry, path: str = "/metrics") -> Route:
    """`GET path`: the registry in Prometheus' text format."""

    async def endpoint(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Route(path, endpoint, methods=["GET"])
