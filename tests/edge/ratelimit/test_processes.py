"""Replicas in separate OS processes, racing for one key in one Redis server. (Through
Sentinel and Cluster: replicas in one process, `test_redis_store.py`, and two edge
processes, `tests/edge/test_redis_topologies.py`.)"""

from __future__ import annotations

import asyncio
import math
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from switchyard.edge.ratelimit import Limits, RedisRateLimiter
from tests.edge.ratelimit.harness import TIMEOUT_S
from tests.support.redis_topology import RedisTopology

ROOT = Path(__file__).resolve().parents[3]
REPLICAS = 3
REQUESTS_EACH = 200


async def test_three_processes_admit_the_limit_and_only_what_refilled(
    redis_topology: RedisTopology,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    go_key = f"{prefix}:go"
    # 150 requests or 200 tokens a minute, 2 tokens each: the tokens run out first,
    # after 100 requests, out of 600 sent at once. A request's 2 tokens come back every
    # 0.6 s, and the burst takes as long as the machine makes it: each one that came
    # back may be admitted, nothing more.
    rpm, tpm, tokens = 150, 200, 2
    args = [redis_topology.url, prefix, go_key, str(REQUESTS_EACH), str(rpm), str(tpm), str(tokens)]
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.edge.ratelimit.burst_worker",
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(REPLICAS)
    ]
    try:
        async with redis_topology.client() as control:
            for worker in workers:
                assert worker.stdout is not None
                assert worker.stderr is not None
                line = await worker.stdout.readline()
                assert line == b"ready\n", await worker.stderr.read()
            started = await redis_now(control)  # the limiter's clock: Redis's
            await control.rpush(go_key, *range(REPLICAS))
            async with asyncio.timeout(60):
                outputs = [await worker.communicate() for worker in workers]
            # What was charged, as the limiter sees it now (a request, no tokens).
            limiter = RedisRateLimiter(redis_topology.url, key_prefix=prefix, timeout_s=TIMEOUT_S)
            try:
                state = await limiter.acquire("shared-key", Limits(rpm=rpm, tpm=tpm), 0)
            finally:
                await limiter.aclose()
            elapsed = await redis_now(control) - started
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()

    assert [worker.returncode for worker in workers] == [0] * REPLICAS, outputs
    admitted = sum(int(out) for out, _ in outputs)
    # The whole bucket at once, plus what refilled while the burst ran (none if it ran in
    # under 0.6 s): an edge reading locally and writing globally would admit far more.
    assert 100 <= admitted <= 100 + math.floor(elapsed / (60 * tokens / tpm)), (admitted, elapsed)

    # What was charged is exactly what was admitted, in both buckets. Each charge pushes a
    # bucket's reset time on (0.3 s a token, 0.4 s a request, this one included) and both
    # drain with the same clock since the first charge, whatever that time was.
    assert state.reset_tokens_s is not None
    assert state.reset_requests_s is not None
    since_first_charge = admitted * tokens * 60 / tpm - state.reset_tokens_s
    assert (admitted + 1) * 60 / rpm - state.reset_requests_s == pytest.approx(
        since_first_charge, abs=0.002
    )


async def redis_now(client: redis.asyncio.Redis | RedisCluster) -> float:
    """Redis's clock, in seconds."""
    seconds, microseconds = await client.time()
    return seconds + microseconds / 1e6
