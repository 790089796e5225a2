"""Redis in each topology the edge supports, as pytest fixtures: single, Sentinel, Cluster.

A test (or fixture) that takes `redis_topology` gets the URL the edge would be given
(`EDGE_REDIS_URL`), a client of its own to look at the data (not the edge's code), and
`flushall`. The servers behind are session-scoped, one set per xdist worker, started on
first use.

Which topologies a test runs on (the suite's time budget): by default only `single`,
where a store's whole case matrix runs. A case runs on Sentinel and Cluster too only when
marked `@every_topology`: what differs by topology (connecting through it, scripts and
multi-key commands on one hash tag's slot in a Cluster, keys read back on each master,
blocking reads, pub/sub, a failover), and, for each store, one representative test per
behaviour family. The stores' logic (Lua scripts, TTL arithmetic, tenants) runs the same
on one server whatever the topology: running its other cases thrice would cover nothing more.

    @every_topology  # without it: single only
    async def test_x(redis_topology: RedisTopology) -> None:
        store = SomeStore(redis_topology.url)          # redis:// | redis+sentinel:// | redis+cluster://
        async with redis_topology.client() as client:  # Redis, or RedisCluster
            assert await client.get("k") is None

    def test_failover(redis_sentinel_set: RedisSentinelSet) -> None:
        redis_sentinel_set.failover()                  # the session's set: a new master

Tests share the servers: use keys of their own (a prefix per test), or `flushall` where
the test owns every key (nothing else of the worker runs meanwhile).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from tests.support.redis import RedisServer, running_redis
from tests.support.redis_cluster import RedisClusterSet, running_cluster
from tests.support.redis_sentinel import MASTER_NAME, RedisSentinelSet, running_sentinel

Kind = Literal["single", "sentinel", "cluster"]
TOPOLOGIES: tuple[Kind, ...] = ("single", "sentinel", "cluster")

#: What a test's own client waits, at most, for anything.
CLIENT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RedisTopology:
    kind: Kind
    #: What the edge is given: redis://, redis+sentinel://... or redis+cluster://...
    url: str
    #: An async client of the test's own (redis-py, built without the edge's code), with
    #: more of redis-py's options (`decode_responses=True`, `socket_timeout=...`).
    client: Callable[
        ..., contextlib.AbstractAsyncContextManager[redis.asyncio.Redis | RedisCluster]
    ]
    #: Empty every master (blocking: call it outside the event loop's hot path).
    flushall: Callable[[], None]

    def __str__(self) -> str:
        return self.kind


def single_topology(server: RedisServer) -> RedisTopology:
    @contextlib.asynccontextmanager
    async def client(**options: Any) -> AsyncIterator[redis.asyncio.Redis]:
        c = redis.asyncio.Redis.from_url(
            server.url, **{"socket_timeout": CLIENT_TIMEOUT_S, **options}
        )
        try:
            yield c
        finally:
            await c.aclose()

    def flushall() -> None:
        with redis.Redis.from_url(server.url, socket_timeout=CLIENT_TIMEOUT_S) as c:
            c.flushall()

    return RedisTopology("single", server.url, client, flushall)


def sentinel_topology(sentinels: RedisSentinelSet) -> RedisTopology:
    @contextlib.asynccontextmanager
    async def client(**options: Any) -> AsyncIterator[redis.asyncio.Redis]:
        auth = {"password": sentinels.password} if sentinels.password else {}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [("127.0.0.1", s.port) for s in sentinels.sentinels],
            sentinel_kwargs={"socket_timeout": CLIENT_TIMEOUT_S, **auth},
            **{"socket_timeout": CLIENT_TIMEOUT_S, **auth, **options},
        )
        c = sentinel.master_for(MASTER_NAME)
        try:
            yield c
        finally:
            await c.aclose()
            for s in sentinel.sentinels:
                await s.aclose()

    return RedisTopology("sentinel", sentinels.url, client, sentinels.flushall)


def cluster_topology(cluster: RedisClusterSet) -> RedisTopology:
    @contextlib.asynccontextmanager
    async def client(**options: Any) -> AsyncIterator[RedisCluster]:
        c = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", m.port) for m in cluster.masters],
            password=cluster.password,
            **{"socket_timeout": CLIENT_TIMEOUT_S, **options},
        )
        try:
            await c.initialize()
            yield c
        finally:
            await c.aclose()

    return RedisTopology("cluster", cluster.url, client, cluster.flushall)


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the worker's session."""
    with running_redis(tmp_path_factory.mktemp("redis-single")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelSet]:
    """1 master, 1 replica, 3 sentinels for the worker's session; `failover()` may be
    called by any test (the set stays usable: the old master follows the new one)."""
    with running_sentinel(tmp_path_factory.mktemp("redis-sentinel")) as sentinels:
        yield sentinels


@pytest.fixture(scope="session")
def redis_cluster_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    """3 masters, no replicas, for the worker's session. Do not kill its nodes: start a
    cluster of the test's own (`running_cluster(tmp_path, replicas=1)`) for that."""
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(params=("single",), ids=str)
def redis_topology(request: pytest.FixtureRequest) -> RedisTopology:
    """The session's single server; each topology in turn under `@every_topology`."""
    return topology(request, request.param)


#: Runs a test (whose fixtures take `redis_topology`) on single, Sentinel and Cluster: for
#: what is topology-specific only (see the module's docstring).
every_topology = pytest.mark.parametrize("redis_topology", TOPOLOGIES, indirect=True, ids=str)


def topology(request: pytest.FixtureRequest, kind: Kind) -> RedisTopology:
    """The session's servers of `kind`, from a fixture parametrized its own way."""
    if kind == "single":
        return single_topology(request.getfixturevalue("redis_single"))
    if kind == "sentinel":
        return sentinel_topology(request.getfixturevalue("redis_sentinel_set"))
    return cluster_topology(request.getfixturevalue("redis_cluster_set"))
