"""RedisConnections on each topology: the URL forms, scripts, transactions, bounded waits,
and a Sentinel failover or a lost cluster master followed without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as BrokenConnection

from switchyard.edge.redis_pool import STORE_ERRORS, RedisConnections, RedisUrl, parse_url
from tests.support.polling import eventually
from tests.support.redis import running_redis
from tests.support.redis_cluster import running_cluster
from tests.support.redis_sentinel import RedisSentinelSet, running_sentinel
from tests.support.redis_topology import RedisTopology, cluster_topology, every_topology

#: Generous: a loaded machine must not turn a slow answer into a failure.
TIMEOUT_S = 2.0


def connections(url: str, **overrides: float) -> RedisConnections:
    limits: dict[str, float] = {
        "max_connections": 4,
        "timeout_s": TIMEOUT_S,
        "connect_timeout_s": TIMEOUT_S,
        "pool_timeout_s": TIMEOUT_S,
        **overrides,
    }
    return RedisConnections(
        url,
        max_connections=int(limits["max_connections"]),
        timeout_s=limits["timeout_s"],
        connect_timeout_s=limits["connect_timeout_s"],
        pool_timeout_s=limits["pool_timeout_s"],
    )


# -- URLs ----------------------------------------------------------------------------------


def test_a_sentinel_url_names_the_sentinels_the_master_the_db_and_the_credentials() -> None:
    parsed = parse_url("redis+sentinel://app:s%40cret@s1:26380,s2,[::1]:26381/cache-master/3")
    assert parsed == RedisUrl(
        "sentinel",
        (("s1", 26380), ("s2", 26379), ("::1", 26381)),
        "app",
        "s@cret",
        ssl=False,
        master_name="cache-master",
        db=3,
        sentinel_username="app",
        sentinel_password="s@cret",
    )


def test_the_sentinels_may_have_credentials_of_their_own_or_none() -> None:
    own = parse_url("rediss+sentinel://:pw@s1/m?sentinel_password=other")
    assert (own.ssl, own.password, own.sentinel_password, own.db) == (True, "pw", "other", 0)
    none = parse_url("redis+sentinel://:pw@s1/m?sentinel_password=")
    assert (none.password, none.sentinel_password) == ("pw", None)


def test_a_cluster_url_names_its_seeds() -> None:
    parsed = parse_url("redis+cluster://:pw@n1:7000,n2")
    assert (parsed.topology, parsed.hosts, parsed.password) == (
        "cluster",
        (("n1", 7000), ("n2", 6379)),
        "pw",
    )


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+sentinel://s1:26379", "master's name"),
        ("redis+sentinel:///m", "at least one host"),
        ("redis+cluster://n1/2", "database 0 only"),
        ("redis+cluster://n1:port", "invalid literal"),
    ],
)
def test_a_malformed_url_is_refused_at_once(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RedisConnections(url, max_connections=1, timeout_s=1, connect_timeout_s=1, pool_timeout_s=1)


# -- Each topology -------------------------------------------------------------------------


@pytest.fixture
async def opened(redis_topology: RedisTopology) -> AsyncIterator[RedisConnections]:
    store = connections(redis_topology.url)
    try:
        assert await store.warm() == []
        yield store
    finally:
        await store.close()


@every_topology
async def test_scripts_are_loaded_on_every_master_and_run_on_hash_tagged_keys(
    opened: RedisConnections, redis_topology: RedisTopology
) -> None:
    script = f"return redis.call('INCRBY', KEYS[1], ARGV[1]) + #KEYS -- {uuid.uuid4().hex}"
    sha = await opened.client.script_load(script)
    await opened.load_script(script)
    async with redis_topology.client() as own:
        # On every master: whichever holds a key can run it by its SHA.
        if isinstance(own, RedisCluster):
            masters = own.get_primaries()
            replies = [
                await own.execute_command("SCRIPT EXISTS", sha, target_nodes=m) for m in masters
            ]
            assert replies == [[True]] * 3
        else:
            assert await own.script_exists(sha) == [True]
    tag = uuid.uuid4().hex
    assert await opened.client.evalsha(sha, 2, f"{{{tag}}}:a", f"{{{tag}}}:b", 5) == 7


@every_topology
async def test_a_transaction_on_one_hash_tag_runs_on_every_topology(
    opened: RedisConnections,
) -> None:
    tag = uuid.uuid4().hex
    async with opened.client.pipeline(transaction=True) as tx:
        tx.set(f"{{{tag}}}:a", 1)
        tx.incr(f"{{{tag}}}:a")
        tx.rpush(f"{{{tag}}}:list", "x")
        assert await tx.execute() == [True, 2, 1]


@every_topology
async def test_waiting_for_a_connection_is_bounded_on_every_topology(
    redis_topology: RedisTopology,
) -> None:
    store = connections(redis_topology.url, max_connections=1, timeout_s=30.0, pool_timeout_s=0.2)
    key = f"{{{uuid.uuid4().hex}}}:wake"
    try:
        # The only connection, held by a blocking read until the test pushes.
        holder = asyncio.create_task(_blpop(store, key))
        async with redis_topology.client() as own:
            await eventually(
                lambda: _blocked_clients(own), what="the blocking read holding the connection"
            )
            with pytest.raises(BrokenConnection, match="No connection available"):
                await store.client.get(f"{key}:other")
            assert not holder.done()  # refused while still held: not when it came back
            await own.rpush(key, "go")
        assert await asyncio.wait_for(holder, 30) in ([key.encode(), b"go"], (key.encode(), b"go"))
    finally:
        await store.close()


async def _blpop(store: RedisConnections, key: str) -> object:
    return await store.client.blpop([key], timeout=25)


async def _blocked_clients(client: redis.asyncio.Redis | RedisCluster) -> bool:
    if isinstance(client, RedisCluster):
        infos = await client.info("clients", target_nodes=RedisCluster.PRIMARIES)
        return any(int(i.get("blocked_clients", 0)) for i in infos.values())
    return int((await client.info("clients"))["blocked_clients"]) > 0


# -- Failover ------------------------------------------------------------------------------


@dataclass
class Traffic:
    """INCRs on `keys`, one after another, until stopped: what they met."""

    store: RedisConnections
    keys: list[str]
    ok: int = 0
    store_errors: list[str] = field(default_factory=list)

    stopping: bool = False

    async def run(self) -> None:
        for key in itertools.cycle(self.keys):
            if self.stopping:
                return
            try:
                await self.store.client.incr(key)
                self.ok += 1
            except STORE_ERRORS as exc:  # anything else fails the test
                self.store_errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)

    async def served(self, more: int) -> None:
        """Until `more` further commands succeed (on every key: they cycle)."""
        target = self.ok + more
        await eventually(lambda: self.ok >= target, what=f"{more} more commands served")


@contextlib.asynccontextmanager
async def traffic(
    store: RedisConnections, keys: list[str], concurrency: int = 8
) -> AsyncIterator[Traffic]:
    """`concurrency` loops of traffic running for the block, stopped after it (their
    tasks never outlive it).

    Stopped by a flag, not by cancelling: Python 3.11's `wait_for` (redis-py's, around
    each write) may swallow a cancellation that lands as the write completes."""
    running = Traffic(store, keys)
    tasks = [asyncio.create_task(running.run()) for _ in range(concurrency)]
    try:
        yield running
    finally:
        running.stopping = True
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.gather(*tasks)), 30)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_sentinel_failover_during_traffic_is_followed_without_a_restart(
    redis_sentinel_set: RedisSentinelSet,
) -> None:
    store = connections(redis_sentinel_set.url)
    key = f"{{{uuid.uuid4().hex}}}:count"
    try:
        await store.warm()
        async with traffic(store, [key]) as running:
            await running.served(20)
            new_master = await asyncio.to_thread(redis_sentinel_set.failover)
            await running.served(20)
        # The writes since go to the new master (the old one is its replica now).
        before = await store.client.incr(key)
        with redis.Redis.from_url(new_master.url, socket_timeout=TIMEOUT_S) as direct:
            assert int(direct.get(key) or 0) == before
            assert direct.execute_command("ROLE")[0] == b"master"
        # A failover closes or demotes the master under the traffic: at most a short
        # run of store errors (what the limiter and the cache turn into their failure
        # mode), each one of redis-py's, none of anything else.
        assert len(running.store_errors) < running.ok, running.store_errors[:5]
    finally:
        await store.close()


async def test_the_sentinels_and_servers_password_is_the_url_s(tmp_path: Path) -> None:
    with running_sentinel(tmp_path, password="s3cret") as sentinels:
        store = connections(sentinels.url)
        wrong = connections(sentinels.url.replace("s3cret", "wrong"))
        try:
            assert await store.warm() == []
            assert await store.client.set("{k}:a", "1")
            with pytest.raises(redis.RedisError):
                await wrong.client.get("{k}:a")
        finally:
            await store.close()
            await wrong.close()


async def test_a_lost_cluster_master_s_replica_takes_over_without_a_restart(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path, replicas=1) as cluster:
        store = connections(cluster.url)
        # One key in each master's slots, the first in master 0's (0-5460).
        keys = ["{b}:count", "{c}:count", "{a}:count"]
        assert [key_slot(k.encode()) for k in keys] == [3300, 7365, 15495]
        try:
            await store.warm()
            async with traffic(store, keys) as running:
                await running.served(30)
                await asyncio.to_thread(cluster.kill_master, 0)
                replica = await asyncio.to_thread(cluster.wait_promoted, 0)
                await running.served(30)
            async with cluster_topology(cluster).client() as own:
                assert isinstance(own, RedisCluster)
                node = own.get_node_from_key(keys[0])
                assert node is not None
                assert int(node.port) == replica.port  # the slot's new master serves it
            assert await store.client.incr(keys[0]) >= 1
            assert len(running.store_errors) < running.ok, running.store_errors[:5]
        finally:
            await store.close()


async def test_a_lost_master_without_a_replica_fails_commands_until_it_returns(
    tmp_path: Path,
) -> None:
    """The documented behaviour of 3 masters and no replica: with full coverage required
    (Redis's default), the whole cluster refuses commands while a master is away; the
    client recovers by itself once it is back (its slots and, persistence off, no data)."""
    with running_cluster(tmp_path) as cluster:
        store = connections(cluster.url)
        try:
            await store.warm()
            assert await store.client.incr("{c}:count") == 1  # on master 1
            master = await asyncio.to_thread(cluster.kill_master, 0)
            await asyncio.to_thread(cluster.wait_failed)
            with pytest.raises(STORE_ERRORS):
                await store.client.incr("{c}:count")  # another master's key: down too
            await asyncio.to_thread(master.start)
            await asyncio.to_thread(cluster.wait_ok)
            await eventually(
                lambda: store.client.incr("{c}:count"),
                what="the cluster serving again",
                ignore=STORE_ERRORS,
            )
        finally:
            await store.close()


# -- One pool, several stores --------------------------------------------------------------


async def test_stores_sharing_a_pool_open_its_connections_once_and_the_last_one_closes_it(
    tmp_path: Path,
) -> None:
    with running_redis(tmp_path) as server:
        own = redis.asyncio.Redis.from_url(server.url)

        async def others() -> int:  # connected clients besides `own`
            info = await own.info("clients")
            return int(info["connected_clients"]) - 1

        try:
            shared = connections(server.url, max_connections=3)
            users = [shared.share(), shared.share()]  # say, the limiter and the budgets
            assert all(u is shared for u in users)
            assert await shared.warm() == []
            assert await others() == 3
            assert await users[1].warm() == []  # a second store's start opens nothing more
            assert await others() == 3

            await shared.close()  # the creator's share
            await users[0].close()
            assert await users[1].client.incr("still-open") == 1  # one user left: still open
            assert await others() == 3
            await users[1].close()

            async def all_closed() -> bool:
                return await others() == 0

            await eventually(all_closed, what="every connection closed")
        finally:
            await own.aclose()
