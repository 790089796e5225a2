"""The usage API's query (`GET /admin/v1/usage`): its parameters checked, the rows
summed by the fields asked for, and the answer as JSON or CSV.

Times are UTC (an ISO time with an offset is converted); a date alone is its midnight.
The range is whole hours: `start` down to its hour, `end` up to the next (exclusive).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from switchyard.edge.errors import OpenAIError
from switchyard.edge.usage.records import HOUR_S, Counts, Row
from switchyard.edge.usage.store import HourRow

#: What rows may be grouped by, in the order they appear in an answer.
GROUP_FIELDS = ("hour", "tenant", "key", "model", "api", "status", "cached")
DEFAULT_GROUP_BY = ("tenant", "key")
#: Exact-match filters (a comma-separated list matches any of its values).
FILTERS = ("tenant", "key", "model", "api")
PARAMETERS = frozenset({"start", "end", "group_by", "format", *FILTERS})
#: The counts of each group and of the totals, in order.
MEASURES = (
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_requests",
    "errors",
    "cancelled",
    "mean_latency_ms",
)
DEFAULT_SPAN_HOURS = 24

Format = Literal["json", "csv"]
_FORMATS: dict[str, Format] = {"json": "json", "csv": "csv"}


@dataclass(frozen=True)
class UsageQuery:
    first_hour: int  # hours since the epoch, UTC
    end_hour: int  # exclusive
    group_by: tuple[str, ...]
    filters: Mapping[str, frozenset[str]] = field(default_factory=dict)
    format: Format = "json"


def _bad(message: str, param: str) -> OpenAIError:
    return OpenAIError.invalid(message, param=param, code="invalid_usage_query")


def _time(text: str, param: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _bad(
            f"{param}: {text!r} is not an ISO 8601 date or time (e.g. 2026-12-01 or "
            "2026-12-01T13:00:00Z)",
            param,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def hour_stamp(hour: int) -> str:
    return datetime.fromtimestamp(hour * HOUR_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_query(
    params: Mapping[str, Sequence[str]], now: float, retention_hours: int
) -> UsageQuery:
    """`params` (each name's values) checked against `now` (epoch seconds) and the
    retention; `OpenAIError` 400 for anything wrong, naming the parameter."""
    unknown = sorted(set(params) - PARAMETERS)
    if unknown:
        raise _bad(
            f"Unknown parameter {unknown[0]!r}; expected: {', '.join(sorted(PARAMETERS))}",
            unknown[0],
        )
    values = {name: ",".join(v) for name, v in params.items()}
    now_hour = int(now // HOUR_S)
    oldest_hour = now_hour - retention_hours + 1
    end = _time(values["end"], "end") if "end" in values else now
    # No usage exists after the current hour: a far end must not make a long read.
    end_hour = min(math.ceil(end / HOUR_S), now_hour + 1)
    if end_hour <= oldest_hour:
        raise _bad(_beyond(retention_hours, oldest_hour, "end"), "end")
    if "start" in values:
        first_hour = math.floor(_time(values["start"], "start") / HOUR_S)
        if first_hour < oldest_hour:
            raise _bad(_beyond(retention_hours, oldest_hour, "start"), "start")
    else:
        first_hour = max(oldest_hour, math.floor((end - DEFAULT_SPAN_HOURS * HOUR_S) / HOUR_S))
    if first_hour >= end_hour:
        raise _bad("start must be before end", "start")
    group_by = _group_by(values.get("group_by"))
    fmt = _FORMATS.get(values.get("format", "json"))
    if fmt is None:
        raise _bad(f"format: {values['format']!r} is not one of json, csv", "format")
    filters = {
        name: frozenset(v.strip() for v in values[name].split(",") if v.strip())
        for name in FILTERS
        if values.get(name, "").strip()
    }
    return UsageQuery(first_hour, end_hour, group_by, filters, fmt)


def _beyond(retention_hours: int, oldest_hour: int, param: str) -> str:
    return (
        f"{param}: usage is kept {retention_hours} hours; the oldest hour kept is "
        f"{hour_stamp(oldest_hour)}"
    )


def _group_by(text: str | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_GROUP_BY
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in GROUP_FIELDS:
            raise _bad(
                f"group_by: unknown field {name!r}; expected any of {', '.join(GROUP_FIELDS)}",
                "group_by",
            )
    return tuple(n for n in GROUP_FIELDS if n in names)  # answer order, each once


@dataclass(slots=True)
class _Sums:
    counts: Counts = field(default_factory=Counts)
    cached_requests: int = 0
    errors: int = 0
    cancelled: int = 0

    def add(self, row: Row, counts: Counts) -> None:
        self.counts.add(counts)
        if row.cached:
            self.cached_requests += counts.requests
        if row.status in ("4xx", "5xx"):
            self.errors += counts.requests
        elif row.status == "cancelled":
            self.cancelled += counts.requests

    def measures(self) -> dict[str, Any]:
        c = self.counts
        return {
            "requests": c.requests,
            "input_tokens": c.input_tokens,
            "output_tokens": c.output_tokens,
            "total_tokens": c.input_tokens + c.output_tokens,
            "cached_requests": self.cached_requests,
            "errors": self.errors,
            "cancelled": self.cancelled,
            "mean_latency_ms": round(c.latency_ms / c.requests, 1) if c.requests else None,
        }


def _value(name: str, hour: int, row: Row) -> str | bool:
    if name == "hour":
        return hour_stamp(hour)
    if name == "cached":
        return row.cached
    return str(getattr(row, name))


def summarize(query: UsageQuery, rows: Iterable[HourRow]) -> dict[str, Any]:
    """The JSON answer: one entry per group (sorted by its fields), and the totals."""
    groups: dict[tuple[str | bool, ...], _Sums] = {}
    totals = _Sums()
    for hour, row, counts in rows:
        if not query.first_hour <= hour < query.end_hour:
            continue
        if any(getattr(row, name) not in wanted for name, wanted in query.filters.items()):
            continue
        group = tuple(_value(name, hour, row) for name in query.group_by)
        groups.setdefault(group, _Sums()).add(row, counts)
        totals.add(row, counts)
    data = [
        {**dict(zip(query.group_by, group, strict=True)), **sums.measures()}
        for group, sums in sorted(groups.items(), key=lambda item: item[0])
    ]
    return {
        "object": "usage",
        "start": hour_stamp(query.first_hour),
        "end": hour_stamp(query.end_hour),
        "group_by": list(query.group_by),
        "filters": {name: sorted(values) for name, values in query.filters.items()},
        "data": data,
        "totals": totals.measures(),
    }


def to_csv(answer: Mapping[str, Any]) -> str:
    """The groups of a `summarize` answer as CSV: a header row, then one row per group."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [*answer["group_by"], *MEASURES]
    writer.writerow(columns)
    for entry in answer["data"]:
        writer.writerow([_csv(entry[c]) for c in columns])
    return out.getvalue()


def _csv(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value
