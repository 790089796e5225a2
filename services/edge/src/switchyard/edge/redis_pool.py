"""How the edge opens Redis: the topology behind a URL, one bounded pool per store, its
timeouts, and its warm-up.

Every store (the rate limiter, the response cache, the Responses store and its jobs)
takes a `RedisConnections`, so the topology is decided here alone, from the URL:

- `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path`:
  one server.
- `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master-name>[/db]`
  (`rediss+sentinel://` for TLS): the sentinels (port 26379 by default) name the
  master; each new connection asks them, and a connection to a demoted or unreachable
  master breaks, so a failover is followed without a restart. The credentials are
  those of the Redis servers and, unless `?sentinel_password=` (and
  `sentinel_username=`) say otherwise, of the sentinels too (empty: no AUTH).
- `redis+cluster://[[user]:password@]host[:port][,host[:port]...]` (`rediss+cluster://`):
  Redis Cluster; the hosts are seeds (port 6379 by default), the rest is discovered,
  and MOVED / a lost master (its replica promoted) refresh the slot map. Keys that one
  command or script uses together must share a hash tag (`{...}`).

A burst waits for one of a bounded number of connections instead of opening one per
request; opening one (TCP connect, AUTH, the handshake) has its own timeout,
`connect_timeout_s`, and waiting for a free one its own, `pool_timeout_s`: neither is
Redis being slow to answer, which only `timeout_s` (each command's reply) decides. One
immediate retry, and only for a broken connection (a pooled one that a restarted server
or a failover closed, a master that is now a replica): never after a timeout, whose
command may have run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisError, SlotNotCoveredError
from redis.exceptions import ConnectionError as BrokenConnection

#: What an unreachable, timed-out, restarting or read-only Redis raises through redis-py.
STORE_ERRORS = (RedisError, OSError)

Topology = Literal["single", "sentinel", "cluster"]

SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
#: Connections to each sentinel: each holds one only for a lookup of the master.
SENTINEL_CONNECTIONS = 4


async def _handshake(connection: AbstractConnection) -> None:
    """redis-py's own set-up of a new connection (AUTH, SELECT, CLIENT SETINFO), with
    the connect timeout instead of the command timeout for its replies."""
    command_timeout = connection.socket_timeout
    connection.socket_timeout = connection.socket_connect_timeout
    try:
        await connection.on_connect()
    finally:
        connection.socket_timeout = command_timeout


def _one_retry() -> Retry:
    """One immediate retry, for a broken connection only (never after a timeout)."""
    return Retry(NoBackoff(), 1, supported_errors=(BrokenConnection,))


def connection_pool(
    url: str,
    *,
    max_connections: int,
    timeout_s: float,
    connect_timeout_s: float,
    pool_timeout_s: float,
) -> BlockingConnectionPool:
    """A bounded pool for one server at `url` (redis://, rediss:// or unix://)."""
    return BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=connect_timeout_s,
        redis_connect_func=_handshake,
        retry=_one_retry(),
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


# -- URLs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisUrl:
    """A redis+sentinel:// or redis+cluster:// URL, parsed."""

    topology: Topology
    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool
    #: Sentinel: the monitored master's name, the database, the sentinels' own AUTH.
    master_name: str = ""
    db: int = 0
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def topology_of(url: str) -> Topology:
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return "sentinel"
    if scheme in ("redis+cluster", "rediss+cluster"):
        return "cluster"
    return "single"


def parse_url(url: str) -> RedisUrl:
    """Parse a redis+sentinel:// or redis+cluster:// URL (ValueError when malformed)."""
    topology = topology_of(url)
    if topology == "single":
        raise ValueError("not a redis+sentinel:// or redis+cluster:// URL")
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    default_port = SENTINEL_PORT if topology == "sentinel" else CLUSTER_PORT
    hosts = tuple(_host(h, default_port) for h in hostlist.split(",") if h)
    if not hosts:
        raise ValueError(f"{scheme}:// needs at least one host")
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    base = RedisUrl(
        topology,
        hosts,
        unquote(username) or None,
        unquote(password) or None,
        scheme.lower().startswith("rediss"),
    )
    if topology == "cluster":
        if path.strip("/") not in ("", "0"):
            raise ValueError("redis+cluster:// has database 0 only")
        return base
    name, _, db = path.strip("/").partition("/")
    if not name:
        raise ValueError("redis+sentinel:// needs the master's name: .../<master-name>[/db]")
    return RedisUrl(
        topology,
        hosts,
        base.username,
        base.password,
        base.ssl,
        unquote(name),
        int(db or 0),
        options.get("sentinel_username", base.username) or None,
        options.get("sentinel_password", base.password) or None,
    )


def _host(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"no host in {text!r}")
    return host, int(port) if port else default_port


@dataclass(frozen=True)
class Limits:
    """A store's connection bounds (see the module's docstring)."""

    max_connections: int
    timeout_s: float
    connect_timeout_s: float
    pool_timeout_s: float


# -- Sentinel ------------------------------------------------------------------------------


class _SentinelConnection(SentinelManagedConnection):
    """A connection that asks the sentinels for the master whenever it reconnects.

    redis-py's reconnects a broken connection, when it sends the retried command, to the
    address it had (a master turned replica answers READONLY again): here the retry
    goes to the master the sentinels name now."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]
        await super().send_packed_command(command, check_health)


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    pass


class _SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (each new connection asks the sentinels for the master;
    a master turned replica breaks the connection) with the blocking pool's bound."""


def _sentinel_client(
    parsed: RedisUrl, limits: Limits
) -> tuple[Redis, Sentinel, _SentinelBlockingPool]:
    manager = Sentinel([])  # type: ignore[no-untyped-call]
    # The sentinels' clients, bounded too: a lookup is part of opening a connection.
    manager.sentinels = [
        Redis.from_pool(
            BlockingConnectionPool(
                host=host,
                port=port,
                username=parsed.sentinel_username,
                password=parsed.sentinel_password,
                max_connections=SENTINEL_CONNECTIONS,
                timeout=limits.pool_timeout_s,
                socket_timeout=limits.connect_timeout_s,
                socket_connect_timeout=limits.connect_timeout_s,
                retry=_one_retry(),
                connection_class=SSLConnection if parsed.ssl else Connection,
            )
        )
        for host, port in parsed.hosts
    ]
    client = manager.master_for(
        parsed.master_name,
        connection_pool_class=_SentinelBlockingPool,
        max_connections=limits.max_connections,
        timeout=limits.pool_timeout_s,
        socket_timeout=limits.timeout_s,
        socket_connect_timeout=limits.connect_timeout_s,
        redis_connect_func=_handshake,
        retry=_one_retry(),
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
        connection_class=_SentinelSSLConnection if parsed.ssl else _SentinelConnection,
    )
    return cast(Redis, client), manager, cast(_SentinelBlockingPool, client.connection_pool)


# -- Cluster -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _permit(permits: asyncio.Semaphore, timeout_s: float) -> AsyncIterator[None]:
    """One of the cluster client's bounded permits, waited for at most `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            await permits.acquire()
    except TimeoutError:
        raise BrokenConnection("No connection available.") from None
    try:
        yield
    finally:
        permits.release()


@contextlib.asynccontextmanager
async def _reset_is_broken() -> AsyncIterator[None]:
    """On CLUSTERDOWN redis-py's cluster client closes every node's connections, also
    those other commands are using: one caught mid-write meets a connection without its
    socket (AttributeError). That is a broken connection, and a store error like one."""
    try:
        yield
    except AttributeError as exc:
        raise BrokenConnection(f"connection closed under the command: {exc}") from exc


class _BoundedCluster(RedisCluster):
    """redis-py's cluster client, bounded as the single server's pool is.

    Its nodes' pools do not block (a node out of connections raises at once), so each
    command (or pipeline) first takes one of `max_connections` permits, waiting up to
    `pool_timeout_s`: a command uses one connection per node it runs on, so no node
    ever needs more. It retries (slot map refreshed) after a broken connection or a
    cluster that is down or missing a slot (a failover), never after a timeout."""

    ERRORS_ALLOW_RETRY = (BrokenConnection, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    def __init__(self, *, max_connections: int, pool_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, retry=_one_retry(), **kwargs)
        self._permits = asyncio.Semaphore(max_connections)
        self._pool_timeout_s = pool_timeout_s
        # The handshake with the connect timeout, as on one server: the nodes found later
        # copy these kwargs; the seeds were built with their own copy.
        for kwargs_ in [self.connection_kwargs, *(n.connection_kwargs for n in self.startup_nodes)]:
            kwargs_["redis_connect_func"] = _handshake

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with _permit(self._permits, self._pool_timeout_s), _reset_is_broken():
            # The slot map first, once for all (under its lock): commands sent at once to
            # a client that has not learnt it yet break each other's connections.
            await self.initialize()
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as redis-py does
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]

    def permit(self) -> contextlib.AbstractAsyncContextManager[None]:
        return _permit(self._permits, self._pool_timeout_s)


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        cluster = cast(_BoundedCluster, self.cluster_client)
        async with cluster.permit(), _reset_is_broken():
            await cluster.initialize()
            return await super().execute(raise_on_error, allow_redirections)


def _cluster_client(parsed: RedisUrl, limits: Limits) -> _BoundedCluster:
    return _BoundedCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
        max_connections=limits.max_connections,
        pool_timeout_s=limits.pool_timeout_s,
        socket_timeout=limits.timeout_s,
        socket_connect_timeout=limits.connect_timeout_s,
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.ssl,
    )


async def _warm_cluster(cluster: _BoundedCluster, connections: int) -> list[BaseException]:
    """Learn the slot map and open `connections` spread over the masters."""
    try:
        await cluster.initialize()
    except STORE_ERRORS as exc:
        return [exc]
    masters = cluster.get_primaries()
    each = math.ceil(connections / max(1, len(masters)))
    errors: list[BaseException] = []
    for node in masters:
        opened = [node.acquire_connection() for _ in range(min(each, node.max_connections))]
        results = await asyncio.gather(
            *(c.connect() for c in opened),  # type: ignore[no-untyped-call]
            return_exceptions=True,
        )
        errors += [r for r in results if isinstance(r, BaseException)]
        for connection in opened:
            node.release(connection)
    return errors


# -- The stores' connections ---------------------------------------------------------------


class RedisConnections:
    """One store's connections to the Redis at `url` (any topology above): a client over
    bounded connections, its warm-up, script loading and closing. Stores use only
    `client` (and `load_script`), so that the topology is decided here alone.

    On Redis Cluster `client` is a `redis.asyncio.RedisCluster` (the same command
    methods, typed as `Redis` for the stores): a command's keys (a script's, a
    transaction's) must hash to one slot."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        timeout_s: float,
        connect_timeout_s: float,
        pool_timeout_s: float,
    ) -> None:
        self.topology: Topology = topology_of(url)
        self._max_connections = max_connections
        self._users = 1  # the stores sharing this pool (`share`); closed with the last one
        self._warm = False
        self._pool: BlockingConnectionPool | None = None
        self._sentinel: Sentinel | None = None
        self._cluster: _BoundedCluster | None = None
        limits = Limits(max_connections, timeout_s, connect_timeout_s, pool_timeout_s)
        if self.topology == "single":
            self._pool = connection_pool(
                url,
                max_connections=max_connections,
                timeout_s=timeout_s,
                connect_timeout_s=connect_timeout_s,
                pool_timeout_s=pool_timeout_s,
            )
            self.client = Redis(connection_pool=self._pool)
        elif self.topology == "sentinel":
            self.client, self._sentinel, self._pool = _sentinel_client(parse_url(url), limits)
        else:
            self._cluster = _cluster_client(parse_url(url), limits)
            self.client = cast(Redis, self._cluster)

    @property
    def max_connections(self) -> int:
        return self._max_connections

    def share(self) -> RedisConnections:
        """This pool for one more store: one bound on connections per process however many
        stores talk to this Redis. Each user closes it; the last `close` closes it."""
        self._users += 1
        return self

    async def warm(self) -> list[BaseException]:
        """Open every connection now (once for all the pool's users); the errors of those
        that failed."""
        if self._warm:
            return []
        if self._cluster is not None:
            errors = await _warm_cluster(self._cluster, self._max_connections)
        else:
            assert self._pool is not None
            errors = await warm(self._pool, self._max_connections)
        self._warm = not errors
        return errors

    async def load_script(self, source: str) -> None:
        """Load a Lua script now: on the master, or on every master of a cluster. (After
        a failover or a restart a server may not have it: callers fall back to EVAL on
        NOSCRIPT.)"""
        await self.client.script_load(source)

    async def close(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        await self.client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def connections_for(
    redis: str | RedisConnections,
    *,
    max_connections: int,
    timeout_s: float,
    connect_timeout_s: float,
    pool_timeout_s: float,
) -> RedisConnections:
    """A store's connections: a pool of its own for a URL, or a share of the pool it is
    given (whose bounds then apply, not these)."""
    if isinstance(redis, RedisConnections):
        return redis.share()
    return RedisConnections(
        redis,
        max_connections=max_connections,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
        pool_timeout_s=pool_timeout_s,
    )
