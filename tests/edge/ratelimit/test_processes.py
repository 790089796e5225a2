"""Replicas in separate OS processes, racing for one key in one Redis."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio

from switchyard.edge.ratelimit import Limits, RedisRateLimiter
from tests.edge.ratelimit.harness import TIMEOUT_S
from tests.support.redis import RedisServer

ROOT = Path(__file__).resolve().parents[3]
REPLICAS = 3
REQUESTS_EACH = 200


async def test_three_processes_admit_exactly_the_limit(redis_server: RedisServer) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    go_key = f"{prefix}:go"
    # 150 requests or 200 tokens a minute, 2 tokens each: the tokens run out first,
    # after 100 requests, out of 600 sent at once. The limits are small so that
    # nothing refills during the test: a request every 0.4 s, a token every 0.3 s.
    rpm, tpm, tokens = 150, 200, 2
    args = [redis_server.url, prefix, go_key, str(REQUESTS_EACH), str(rpm), str(tpm), str(tokens)]
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
    control = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stderr is not None
            line = await worker.stdout.readline()
            assert line == b"ready\n", await worker.stderr.read()
        await control.rpush(go_key, *range(REPLICAS))
        async with asyncio.timeout(60):
            outputs = [await worker.communicate() for worker in workers]
    finally:
        await control.aclose()
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()

    assert [worker.returncode for worker in workers] == [0] * REPLICAS, outputs
    admitted = [int(out) for out, _ in outputs]
    assert sum(admitted) == 100, admitted

    # What was charged is exactly what was admitted, in both buckets: 200 tokens fill
    # 60 s, 100 requests (and this one) 40.4 s, less the same time since (both buckets
    # drain with the same clock), whatever that time was.
    limiter = RedisRateLimiter(redis_server.url, key_prefix=prefix, timeout_s=TIMEOUT_S)
    try:
        state = await limiter.acquire("shared-key", Limits(rpm=rpm, tpm=tpm), 0)
    finally:
        await limiter.aclose()
    assert state.reset_tokens_s is not None
    assert state.reset_requests_s is not None
    elapsed = 60.0 - state.reset_tokens_s
    assert 40.4 - state.reset_requests_s == pytest.approx(elapsed, abs=0.002)
