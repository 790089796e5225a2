"""A request's usage, as counted: one row per (tenant, key, model, API, status class, cached)
and hour, with its counts.

The values are those of the request's log line (`Exchange.record` writes it just before),
so the usage API's totals are the sums of the log lines: the key's name and tenant, the
route's served name (`(none)` when the model did not resolve: client input never becomes
a row), the API, the status the log line says (499 for a client that left), the tokens
and the latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from switchyard.edge.exchange import Exchange

#: The APIs, as the log line and the usage API name them.
APIS = ("chat", "completions", "embeddings", "responses", "messages")
#: Status classes: 2xx (answered), 4xx and 5xx (errors), cancelled (the client left: 499).
STATUS_CLASSES = ("2xx", "4xx", "5xx", "cancelled")
CLIENT_GONE = 499
HOUR_S = 3600


def status_class(status: int) -> str:
    if status == CLIENT_GONE:
        return "cancelled"
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    return "2xx"


class Row(NamedTuple):
    """What a usage row is counted by (besides its hour)."""

    tenant: str
    key: str
    model: str
    api: str
    status: str  # one of STATUS_CLASSES
    cached: bool  # answered from the response cache


@dataclass(slots=True)
class Counts:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: Whole milliseconds (each request's latency rounded).
    latency_ms: int = 0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.latency_ms += other.latency_ms


#: The counters a row holds, in the order `Counts` has them.
COUNTERS = ("requests", "input_tokens", "output_tokens", "latency_ms")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request's usage: its row, its hour (hours since the epoch, UTC) and its counts."""

    hour: int
    row: Row
    counts: Counts

    @classmethod
    def of(cls, exchange: Exchange, now: float) -> UsageRecord | None:
        """The record of a finished request (`exchange.record()` done), at `now` (epoch
        seconds); None for a request without a key (refused with 401: no one to count)."""
        if exchange.key_name is None:
            return None
        status = CLIENT_GONE if exchange.client_disconnected else exchange.status
        row = Row(
            exchange.tenant or "",
            exchange.key_name,
            exchange.model,
            exchange.api,
            status_class(status),
            exchange.cache == "hit",
        )
        latency_s = exchange.latency_s or 0.0
        counts = Counts(
            1, exchange.prompt_tokens, exchange.completion_tokens, round(latency_s * 1000)
        )
        return cls(int(now // HOUR_S), row, counts)
