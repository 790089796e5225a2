"""One edge replica in its own process, for the concurrency test.

    python -m tests.edge.ratelimit.burst_worker URL PREFIX GO_KEY REQUESTS RPM TPM TOKENS

Prints "ready" once connected, waits until GO_KEY has an item for it (so every replica
starts at once), sends REQUESTS acquires for one subject from CONCURRENCY tasks (each
waits for its answer before the next, as a server's request handlers do, so the
replicas' requests interleave in Redis), and prints how many were admitted.
"""

from __future__ import annotations

import asyncio
import sys

from switchyard.edge.ratelimit import Limits, RedisRateLimiter
from switchyard.edge.redis_pool import RedisConnections

CONCURRENCY = 8


async def handler(limiter: RedisRateLimiter, limits: Limits, tokens: int, count: int) -> int:
    admitted = 0
    for _ in range(count):
        admitted += (await limiter.acquire("shared-key", limits, tokens)).allowed
    return admitted


async def main(
    url: str, prefix: str, go_key: str, requests: int, limits: Limits, tokens: int
) -> int:
    limiter = RedisRateLimiter(url, key_prefix=prefix, timeout_s=5.0)
    # The go signal through the same plumbing, so that any topology's URL works here.
    connections = RedisConnections(
        url, max_connections=1, timeout_s=40.0, connect_timeout_s=5.0, pool_timeout_s=5.0
    )
    control = connections.client
    try:
        await control.ping()
        print("ready", flush=True)
        await control.blpop([go_key], timeout=30)
        each = requests // CONCURRENCY
        counts = await asyncio.gather(
            *(handler(limiter, limits, tokens, each) for _ in range(CONCURRENCY))
        )
        return sum(counts)
    finally:
        await connections.close()
        await limiter.aclose()


if __name__ == "__main__":
    url, prefix, go_key, requests, rpm, tpm, tokens = sys.argv[1:]
    limits = Limits(rpm=int(rpm), tpm=int(tpm))
    print(asyncio.run(main(url, prefix, go_key, int(requests), limits, int(tokens))), flush=True)
