"""The usage API's query: its parameters checked (400 naming the parameter), rows summed
by the fields asked for, JSON and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from switchyard.edge.errors import OpenAIError
from switchyard.edge.exchange import Exchange
from switchyard.edge.usage.query import parse_query, summarize, to_csv
from switchyard.edge.usage.records import HOUR_S, Counts, Row, UsageRecord, status_class
from switchyard.edge.usage.store import HourRow

#: 2026-12-03T10:30:00Z
NOW = datetime(2026, 12, 3, 10, 30, tzinfo=UTC).timestamp()
NOW_HOUR = int(NOW // HOUR_S)
RETENTION = 48


def _query(**params: str) -> dict[str, list[str]]:
    return {name: [value] for name, value in params.items()}


def _row(tenant: str, key: str, status: str = "2xx", cached: bool = False) -> Row:
    return Row(tenant, key, "demo-vllm", "chat", status, cached)


ROWS: list[HourRow] = [
    (NOW_HOUR, _row("alpha", "a1"), Counts(3, 30, 300, 90)),
    (NOW_HOUR, _row("alpha", "a2", "4xx"), Counts(1, 0, 0, 5)),
    (NOW_HOUR - 1, _row("alpha", "a1", cached=True), Counts(2, 20, 10, 4)),
    (NOW_HOUR - 1, _row("beta", "b1", "cancelled"), Counts(1, 7, 3, 50)),
    (NOW_HOUR - 30, _row("beta", "b1"), Counts(5, 50, 50, 10)),  # outside the last 24 hours
]


def test_the_default_is_the_last_24_hours_by_tenant_and_key() -> None:
    query = parse_query({}, NOW, RETENTION)
    assert (query.end_hour - query.first_hour, query.group_by) == (25, ("tenant", "key"))
    answer = summarize(query, ROWS)
    assert answer["object"] == "usage"
    assert answer["start"] == "2026-12-02T10:00:00Z"
    assert answer["end"] == "2026-12-03T11:00:00Z"
    by_key = {(d["tenant"], d["key"]): d for d in answer["data"]}
    assert list(by_key) == [("alpha", "a1"), ("alpha", "a2"), ("beta", "b1")]
    a1 = by_key["alpha", "a1"]
    assert (a1["requests"], a1["input_tokens"], a1["output_tokens"]) == (5, 50, 310)
    assert (a1["total_tokens"], a1["cached_requests"], a1["mean_latency_ms"]) == (360, 2, 18.8)
    assert (by_key["alpha", "a2"]["errors"], by_key["beta", "b1"]["cancelled"]) == (1, 1)
    totals = answer["totals"]
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (7, 57, 313)
    assert (totals["errors"], totals["cancelled"], totals["cached_requests"]) == (1, 1, 2)


def test_grouping_by_hour_and_filters() -> None:
    query = parse_query(
        _query(start="2026-12-02", group_by="hour,status", tenant="alpha,gamma"), NOW, RETENTION
    )
    answer = summarize(query, ROWS)
    assert answer["group_by"] == ["hour", "status"]
    assert answer["filters"] == {"tenant": ["alpha", "gamma"]}
    assert [(d["hour"], d["status"], d["requests"]) for d in answer["data"]] == [
        ("2026-12-03T09:00:00Z", "2xx", 2),
        ("2026-12-03T10:00:00Z", "2xx", 3),
        ("2026-12-03T10:00:00Z", "4xx", 1),
    ]
    everything = summarize(parse_query(_query(start="2026-12-02T00:00"), NOW, RETENTION), ROWS)
    assert everything["totals"]["requests"] == 12  # the row 30 hours old is in range now


def test_an_explicit_range_is_whole_hours_with_end_exclusive() -> None:
    query = parse_query(
        _query(start="2026-12-03T09:15:00+00:00", end="2026-12-03T10:00:00Z"), NOW, RETENTION
    )
    assert (query.first_hour, query.end_hour) == (NOW_HOUR - 1, NOW_HOUR)
    assert summarize(query, ROWS)["totals"]["requests"] == 3
    # An offset is converted to UTC: 11:15+02:00 is 09:15Z.
    shifted = parse_query(_query(start="2026-12-03T11:15:00+02:00"), NOW, RETENTION)
    assert shifted.first_hour == NOW_HOUR - 1


def test_a_range_ends_at_the_current_hour_at_the_latest() -> None:
    query = parse_query(_query(start="2026-12-03", end="2100-01-01"), NOW, RETENTION)
    assert (query.first_hour, query.end_hour) == (NOW_HOUR - 10, NOW_HOUR + 1)


def test_csv_has_a_header_and_one_row_per_group() -> None:
    query = parse_query(_query(group_by="tenant,cached", format="csv"), NOW, RETENTION)
    assert query.format == "csv"
    rows = list(csv.reader(io.StringIO(to_csv(summarize(query, ROWS)))))
    assert rows[0][:5] == ["tenant", "cached", "requests", "input_tokens", "output_tokens"]
    assert [r[:3] for r in rows[1:]] == [
        ["alpha", "false", "4"],
        ["alpha", "true", "2"],
        ["beta", "false", "1"],
    ]


@pytest.mark.parametrize(
    ("params", "param", "says"),
    [
        (_query(group_by="tenant,colour"), "group_by", "unknown field 'colour'"),
        (_query(start="2026-12-03T10:00", end="2026-12-03T08:00"), "start", "before end"),
        (_query(start="2026-11-01"), "start", "kept 48 hours"),
        (_query(end="2026-11-01"), "end", "kept 48 hours"),
        (_query(start="yesterday"), "start", "ISO 8601"),
        (_query(end="2026-13-01"), "end", "ISO 8601"),
        (_query(format="xml"), "format", "json, csv"),
        (_query(groupby="tenant"), "groupby", "Unknown parameter"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    params: dict[str, list[str]], param: str, says: str
) -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_query(params, NOW, RETENTION)
    error = refused.value
    assert (error.status, error.param, error.type) == (400, param, "invalid_request_error")
    assert says in error.message


def test_the_record_of_a_request_has_its_log_line_values() -> None:
    exchange = Exchange(request_id="r1", api="embeddings", started=0.0, model="demo-sglang")
    exchange.key_name, exchange.tenant = "a1", "alpha"
    exchange.prompt_tokens, exchange.latency_s = 12, 0.0126
    record = UsageRecord.of(exchange, NOW)
    assert record == UsageRecord(
        NOW_HOUR,
        Row("alpha", "a1", "demo-sglang", "embeddings", "2xx", False),
        Counts(1, 12, 0, 13),
    )
    exchange.client_disconnected, exchange.cache = True, "hit"
    gone = UsageRecord.of(exchange, NOW)
    assert gone is not None
    assert (gone.row.status, gone.row.cached) == ("cancelled", True)
    assert UsageRecord.of(Exchange(request_id="r2", api="chat", started=0.0), NOW) is None


@pytest.mark.parametrize(
    ("status", "cls"), [(200, "2xx"), (404, "4xx"), (429, "4xx"), (499, "cancelled"), (503, "5xx")]
)
def test_status_classes(status: int, cls: str) -> None:
    assert status_class(status) == cls
