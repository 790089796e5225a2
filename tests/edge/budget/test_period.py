"""Periods: calendar days and months in a time zone (DST included), rolling windows."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from switchyard.edge.budget.period import HOUR_MS, MAX_BUCKETS, Period, iso

PARIS = ZoneInfo("Europe/Paris")


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_day_ends_at_local_midnight_and_a_dst_day_is_23_or_25_hours() -> None:
    day = Period("day")
    spring = day.window(at("2027-03-28T12:00:00+02:00"), PARIS)  # clocks went forward at 02:00
    assert iso(spring.ends_ms, PARIS) == "2027-03-29T00:00:00+02:00"
    before = day.window(at("2027-03-27T23:59:59+01:00"), PARIS)
    assert (spring.ends_ms - before.ends_ms) // HOUR_MS == 23
    assert spring.bucket == before.bucket + 1
    assert spring.span == 1
    autumn = day.window(at("2027-10-31T01:30:00+02:00"), PARIS)  # back at 03:00 to 02:00
    assert (day.window(at("2027-11-01T00:00:00+01:00"), PARIS).ends_ms - autumn.ends_ms) == (
        24 * HOUR_MS
    )
    assert autumn.ends_ms - before.ends_ms > 0
    assert iso(autumn.ends_ms, PARIS) == "2027-11-01T00:00:00+01:00"
    # The same instant is another day in another zone.
    late = at("2027-03-27T23:30:00+00:00")
    assert day.window(late, ZoneInfo("UTC")).bucket + 1 == day.window(late, PARIS).bucket


def test_a_month_ends_at_the_first_of_the_next_one_across_a_year() -> None:
    month = Period("month")
    december = month.window(at("2026-12-31T23:59:59+01:00"), PARIS)
    january = month.window(at("2027-01-01T00:00:00+01:00"), PARIS)
    assert iso(december.ends_ms, PARIS) == "2027-01-01T00:00:00+01:00"
    assert january.bucket == december.bucket + 1
    assert iso(january.reset_ms(None), PARIS) == "2027-02-01T00:00:00+01:00"
    assert not january.counts(december.bucket)
    assert january.counts(january.bucket)


@pytest.mark.parametrize(
    ("name", "span", "width_h"),
    [("3h", 3, 1), ("24h", 24, 1), ("30d", 720, 1), ("60d", 720, 2), ("9999d", 719, 334)],
)
def test_rolling_windows_have_at_most_720_buckets(name: str, span: int, width_h: int) -> None:
    window = Period(name).window(at("2027-01-01T10:30:00+00:00"), PARIS)
    assert (window.span, window.bucket_ms) == (span, width_h * HOUR_MS)
    assert window.span <= MAX_BUCKETS
    assert Period(name).rolling


def test_a_rolling_window_gives_tokens_back_as_its_oldest_bucket_leaves() -> None:
    window = Period("3h").window(at("2027-01-01T10:30:00+00:00"), ZoneInfo("UTC"))
    assert iso(window.reset_ms(window.bucket - 2), ZoneInfo("UTC")) == "2027-01-01T11:00:00+00:00"
    assert iso(window.reset_ms(None), ZoneInfo("UTC")) == "2027-01-01T13:00:00+00:00"
    assert window.counts(window.bucket - 2)
    assert not window.counts(window.bucket - 3)
    assert iso(window.expires_ms(), ZoneInfo("UTC")) == "2027-01-01T13:00:00+00:00"
