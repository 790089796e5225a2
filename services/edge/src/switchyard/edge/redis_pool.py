"""How the edge opens Redis: one bounded pool per store, its timeouts, and its warm-up.

The rate limiter and the response cache each hold one such pool. A burst waits for one
of a bounded number of connections instead of opening one per request; opening one (TCP
connect, AUTH, the handshake) has its own timeout, `connect_timeout_s`, and waiting for a
free one its own, `pool_timeout_s`: neither is Redis being slow to answer, which only
`timeout_s` (each command's reply) decides. One immediate retry, and only for a broken
connection (a pooled one that a restarted server closed): never after a timeout, whose
command may have run.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as BrokenConnection
from redis.exceptions import RedisError

#: What an unreachable, timed-out, restarting or read-only Redis raises through redis-py.
STORE_ERRORS = (RedisError, OSError)


async def _handshake(connection: AbstractConnection) -> None:
    """redis-py's own set-up of a new connection (AUTH, SELECT, CLIENT SETINFO), with
    the connect timeout instead of the command timeout for its replies."""
    command_timeout = connection.socket_timeout
    connection.socket_timeout = connection.socket_connect_timeout
    try:
        await connection.on_connect()
    finally:
        connection.socket_timeout = command_timeout


def connection_pool(
    url: str,
    *,
    max_connections: int,
    timeout_s: float,
    connect_timeout_s: float,
    pool_timeout_s: float,
) -> BlockingConnectionPool:
    """A bounded pool for `url` (redis://, rediss:// or unix://)."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        redis_connect_func=_handshake,
        retry=Retry(NoBackoff(), 1, supported_errors=(BrokenConnection,)),
    )


async def warm(pool: BlockingConnectionPool, connections: int) -> list[BaseException]:
    """Open `connections` of the pool now (before the first request, so that a burst on a
    fresh edge does not open them all at once); the errors of those that failed."""
    opened = await asyncio.gather(
        *(pool.get_connection() for _ in range(connections)),  # type: ignore[no-untyped-call]
        return_exceptions=True,
    )
    for connection in opened:
        if not isinstance(connection, BaseException):
            await pool.release(connection)
    return [c for c in opened if isinstance(c, BaseException)]


class RedisConnections:
    """One store's connections to the Redis at `url`: a client over a bounded pool, its
    warm-up and its closing. Stores written from now on take one of these (and use only
    `client`), so that the topology behind the URL is decided here alone."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        timeout_s: float,
        connect_timeout_s: float,
        pool_timeout_s: float,
    ) -> None:
        self._max_connections = max_connections
        self._pool = connection_pool(
            url,
            max_connections=max_connections,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )
        self.client = Redis(connection_pool=self._pool)

    async def warm(self) -> list[BaseException]:
        """Open every connection now; the errors of those that failed."""
        return await warm(self._pool, self._max_connections)

    async def close(self) -> None:
        await self.client.aclose()
        await self._pool.disconnect()
