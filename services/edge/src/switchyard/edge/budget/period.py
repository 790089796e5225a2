"""The window of a budget's period that an instant falls in.

A period is calendar-aligned (`day`, `month`: from local midnight to local midnight in
the edge's EDGE_BUDGET_TIMEZONE, so a day with a DST change is 23 or 25 hours long) or a
rolling window (`<N>h`, `<N>d`). Both are counted in *buckets*, numbered so that both
stores only add, compare and subtract integers:

- calendar: one bucket per period (the local day's ordinal, or year * 12 + month), and
  a window of one bucket: the period itself, reset at its end;
- rolling: the window is approximated with fixed buckets, an hour wide for windows up
  to 30 days (`24h` counts the current hour and the 23 before it, so between 23 and 24
  hours of usage), wider beyond so a window never has more than 720 buckets. Tokens
  leave the window a whole bucket at a time, when their bucket's hour has passed the
  window's length.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

HOUR_MS = 3_600_000
#: The most buckets a rolling window has (so each store's work per call stays bounded).
MAX_BUCKETS = 720
_ROLLING = re.compile(r"^([1-9][0-9]{0,3})([hd])$")


@dataclass(frozen=True, slots=True)
class Window:
    """Where an instant falls: its bucket, and what the stores need around it."""

    #: The bucket the instant falls in (what a charge now is added to).
    bucket: int
    #: Buckets the window counts: the current one and `span - 1` before it.
    span: int
    #: A rolling bucket's width (ms); 0 for a calendar period.
    bucket_ms: int
    #: When the current bucket ends (ms since the epoch): a calendar period's reset.
    ends_ms: int

    def reset_ms(self, oldest: int | None) -> int:
        """When the budget next gets tokens back, given the oldest bucket still holding
        some (None: none does): a calendar period's end; for a rolling window, when the
        oldest bucket leaves it."""
        if self.bucket_ms == 0:
            return self.ends_ms
        first = self.bucket if oldest is None else oldest
        return (first + self.span) * self.bucket_ms

    def expires_ms(self) -> int:
        """When every bucket counted now has left the window (a store may forget them)."""
        if self.bucket_ms == 0:
            return self.ends_ms
        return (self.bucket + self.span) * self.bucket_ms

    def counts(self, bucket: int) -> bool:
        """Whether `bucket` is still inside the window."""
        return self.bucket - self.span < bucket <= self.bucket


@dataclass(frozen=True, slots=True)
class Period:
    """A parsed period (`day`, `month`, `<N>h`, `<N>d`; the keys file has checked it)."""

    name: str

    @property
    def rolling(self) -> bool:
        return self.name not in ("day", "month")

    def window(self, now_s: float, zone: ZoneInfo) -> Window:
        """The window `now_s` (seconds since the epoch) falls in."""
        now_ms = math.floor(now_s * 1000)
        if self.name in ("day", "month"):
            local = datetime.fromtimestamp(now_s, zone).date()
            if self.name == "day":
                bucket, following = local.toordinal(), local + timedelta(days=1)
            else:
                bucket = local.year * 12 + local.month - 1
                following = date(local.year + local.month // 12, local.month % 12 + 1, 1)
            # Local midnight of the next period; a midnight that DST skips resolves to the
            # instant just after the gap (zoneinfo's fold=0), still the period's end.
            ends = datetime.combine(following, time(0), tzinfo=zone)
            return Window(bucket, 1, 0, round(ends.timestamp() * 1000))
        match = _ROLLING.fullmatch(self.name)
        if match is None:
            raise ValueError(f"unknown budget period {self.name!r}")
        hours = int(match[1]) * (24 if match[2] == "d" else 1)
        width_h = -(-hours // MAX_BUCKETS)
        bucket_ms = width_h * HOUR_MS
        bucket = now_ms // bucket_ms
        return Window(bucket, -(-hours // width_h), bucket_ms, (bucket + 1) * bucket_ms)


def iso(ms: int, zone: ZoneInfo) -> str:
    """An instant as ISO 8601 in `zone`, to the second (2027-01-01T00:00:00+00:00)."""
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")
