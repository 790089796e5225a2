"""The memory store: bounded by hours kept and by rows; the oldest hours go first."""

from __future__ import annotations

from prometheus_client import REGISTRY

from switchyard.edge.usage.memory import MemoryUsageStore
from switchyard.edge.usage.records import Counts, Row, UsageRecord

H = 500_000  # an hour (hours since the epoch)


def _record(hour: int, key: str, tokens: int = 10) -> UsageRecord:
    return UsageRecord(hour, Row("t", key, "m", "chat", "2xx", False), Counts(1, tokens, 1, 5))


def _lost() -> float:
    value = REGISTRY.get_sample_value(
        "switchyard_edge_usage_records_lost_total", {"reason": "memory_full"}
    )
    return value or 0.0


async def test_counts_add_up_per_row_and_hour() -> None:
    store = MemoryUsageStore(retention_hours=24, max_rows=10)
    for record in (_record(H, "a"), _record(H, "a", 5), _record(H + 1, "a"), _record(H, "b")):
        assert store.add(record) is None  # counted at once: nothing to await
    rows = {(hour, row.key): counts for hour, row, counts in await store.rows(H, H + 2)}
    assert rows == {
        (H, "a"): Counts(2, 15, 2, 10),
        (H, "b"): Counts(1, 10, 1, 5),
        (H + 1, "a"): Counts(1, 10, 1, 5),
    }
    assert [(hour, row.key) for hour, row, _ in await store.rows(H + 1, H + 2)] == [(H + 1, "a")]


async def test_hours_past_the_retention_are_dropped() -> None:
    store = MemoryUsageStore(retention_hours=3, max_rows=100)
    for hour in range(H, H + 5):
        store.add(_record(hour, "a"))
    assert sorted(hour for hour, _, _ in await store.rows(0, H + 10)) == [H + 2, H + 3, H + 4]
    assert len(store) == 3


async def test_the_row_cap_drops_the_oldest_hours_then_loses_records() -> None:
    store = MemoryUsageStore(retention_hours=100, max_rows=3)
    store.add(_record(H, "a"))
    store.add(_record(H + 1, "a"))
    store.add(_record(H + 1, "b"))
    store.add(_record(H + 2, "a"))  # full: hour H goes
    assert sorted((h, r.key) for h, r, _ in await store.rows(0, H + 10)) == [
        (H + 1, "a"),
        (H + 1, "b"),
        (H + 2, "a"),
    ]
    lost = _lost()
    store.add(_record(H + 2, "b"))  # hour H + 1 goes
    store.add(_record(H + 2, "c"))
    assert _lost() == lost
    store.add(_record(H + 2, "d"))  # the current hour holds every row: not counted
    store.add(_record(H + 2, "a"))  # an existing row still counts
    assert _lost() == lost + 1
    rows = {r.key: c.requests for _, r, c in await store.rows(0, H + 10)}
    assert rows == {"a": 2, "b": 1, "c": 1}
    assert len(store) == 3
