"""What tests observe about a simulator: request counters, open streams, recent trace ids.

Front-ends wrap each generation in `SimStats.track`; `GET /sim/stats` (a simulator-only
route, hence the `/sim/` prefix) returns a snapshot. Proves, for instance, that a client
disconnect upstream really aborted the generation here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.routing import Route

from switchyard.enginesim.scheduler import AdmissionRejected
from switchyard.enginesim.serving import ClientDisconnected, OrjsonResponse

RECENT: Final = 256


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    traceparent: str | None


@dataclass(slots=True)
class SimStats:
    """Counters since start. Each tracked request ends in exactly one of completed,
    aborted (the client went away), rejected (overload) or failed (any other error)."""

    requests: int = 0
    completed: int = 0
    aborted: int = 0
    rejected: int = 0
    failed: int = 0
    in_flight: int = 0
    open_streams: int = 0
    recent: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=RECENT))

    @contextmanager
    def track(
        self, request_id: str, traceparent: str | None = None, *, stream: bool = False
    ) -> Iterator[None]:
        """Count one request around the block (admission and generation).

        Cancellation, GeneratorExit (a stream closed early) and client disconnects count
        as aborted, AdmissionRejected as rejected; the gauges always come back down.
        """
        self.requests += 1
        self.in_flight += 1
        self.open_streams += stream
        self.recent.append(RequestRecord(request_id, traceparent))
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit, ClientDisconnected, ClientDisconnect):
            self.aborted += 1
            raise
        except AdmissionRejected:
            self.rejected += 1
            raise
        except BaseException:
            self.failed += 1
            raise
        else:
            self.completed += 1
        finally:
            self.in_flight -= 1
            self.open_streams -= stream

    def snapshot(self) -> dict[str, Any]:
        """The counters, gauges and recent requests (oldest first), JSON-ready."""
        return {
            "requests": self.requests,
            "completed": self.completed,
            "aborted": self.aborted,
            "rejected": self.rejected,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "open_streams": self.open_streams,
            "recent": [
                {"request_id": r.request_id, "traceparent": r.traceparent} for r in self.recent
            ],
        }


def stats_route(stats: SimStats, path: str = "/sim/stats") -> Route:
    """A Starlette route answering `GET path` with `stats.snapshot()` as JSON."""

    async def endpoint(request: Request) -> OrjsonResponse:
        return OrjsonResponse(stats.snapshot())

    return Route(path, endpoint, methods=["GET"], name="sim_stats")
