"""The Redis store: one hash per hour with a field per row and counter, expiring with the
retention (on each topology: one server, Sentinel, Cluster), and Redis failing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from switchyard.edge.usage.records import HOUR_S, Counts, Row, UsageRecord
from switchyard.edge.usage.redis import RedisUsageStore, hour_key
from switchyard.edge.usage.store import UsageStoreUnavailable
from tests.support.redis import running_redis
from tests.support.redis_topology import RedisTopology, every_topology

H = 493_994  # 2026-05-10T02:00Z, hours since the epoch
RETENTION = 48
ALPHA = Row("alpha", "a1", "demo-vllm", "chat", "2xx", False)
BETA = Row("beta", "b1", "demo-sglang", "embeddings", "cancelled", True)


def _lost(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "switchyard_edge_usage_records_lost_total", {"reason": reason}
    )
    return value or 0.0


@every_topology
async def test_rows_are_counted_per_hour_and_expire_with_the_retention(
    redis_topology: RedisTopology,
) -> None:
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    now = (H + 1) * HOUR_S + 600.0  # ten minutes into hour H + 1
    store = RedisUsageStore(
        redis_topology.url,
        retention_hours=RETENTION,
        key_prefix=prefix,
        max_connections=4,
        clock=lambda: now,
    )
    await store.start()
    try:
        for record in (
            UsageRecord(H, ALPHA, Counts(1, 10, 20, 30)),
            UsageRecord(H, ALPHA, Counts(1, 1, 2, 3)),
            UsageRecord(H, BETA, Counts(1, 7, 0, 9)),
            UsageRecord(H + 1, ALPHA, Counts(1, 5, 5, 5)),
        ):
            write = store.add(record)
            assert write is not None
            await write
        rows = {(hour, row): counts for hour, row, counts in await store.rows(H - 5, H + 2)}
        assert rows == {
            (H, ALPHA): Counts(2, 11, 22, 33),
            (H, BETA): Counts(1, 7, 0, 9),
            (H + 1, ALPHA): Counts(1, 5, 5, 5),
        }
        assert [h for h, _, _ in await store.rows(H + 1, H + 2)] == [H + 1]

        key = hour_key(H, prefix)
        assert key == f"{prefix}{{2026-05-10T02}}"
        async with redis_topology.client(decode_responses=True) as client:
            fields = await client.hgetall(key)
            assert fields["alpha\ta1\tdemo-vllm\tchat\t2xx\t0\tinput_tokens"] == "11"
            assert fields["beta\tb1\tdemo-sglang\tembeddings\tcancelled\t1\trequests"] == "1"
            # Hour H leaves the window when hour H + RETENTION begins.
            expected = (H + RETENTION) * HOUR_S - now
            assert expected - 5 <= await client.ttl(key) <= expected
    finally:
        await store.aclose()


async def test_a_redis_that_is_down_loses_the_record_and_refuses_reads(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        store = RedisUsageStore(
            server.url, retention_hours=RETENTION, max_connections=2, connect_timeout_s=0.5
        )
        await store.start()
        try:
            server.stop()
            lost = _lost("store_error")
            write = store.add(UsageRecord(H, ALPHA, Counts(1, 1, 1, 1)))
            assert write is not None
            await write  # no exception: a write never fails a request
            assert _lost("store_error") == lost + 1
            with pytest.raises(UsageStoreUnavailable):
                await store.rows(H, H + 1)
        finally:
            await store.aclose()
