"""A real Redis Sentinel set for tests: 1 master, 1 replica, 3 sentinels (quorum 2).

Every process runs on loopback with a port from `free_port()` and its log (and, for a
sentinel, its config file, which Sentinel rewrites) in `log_dir`. `start` returns once
each sentinel knows the master, the replica and the two other sentinels, so a failover
can be forced at once. `down-after-milliseconds` is short, so that a master that died
(not only a forced failover) is replaced within seconds.

    with running_sentinel(tmp_path) as sentinels:
        url = sentinels.url        # redis+sentinel://127.0.0.1:s1,...,127.0.0.1:s3/switchyard/0
        sentinels.failover()       # SENTINEL FAILOVER; returns once every sentinel names
                                   # the new master and the old one follows it
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support.polling import NotYet, eventually_sync
from tests.support.processes import Service, free_port
from tests.support.redis import RedisServer

MASTER_NAME = "switchyard"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
#: A sentinel's view of a replica younger than this is fresh (its INFO period is 10 s).
INFO_FRESH_MS = 10_000
#: Bound on the set's forming, and on a failover.
TIMEOUT_S = 60.0


class SentinelProcess:
    """One `redis-sentinel` on a loopback port, with its own config file."""

    def __init__(self, log_dir: Path, index: int, password: str | None) -> None:
        executable = shutil.which("redis-sentinel")
        if executable is None:
            raise RuntimeError(
                "redis-sentinel is not installed (Debian: apt-get install redis-sentinel)"
            )
        self._executable = executable
        self.name = f"sentinel-{index}"
        self.port = free_port()
        self._password = password
        self._config = log_dir / f"{self.name}.conf"
        self._log_path = log_dir / f"{self.name}.log"
        self.service: Service | None = None

    def start(self, master_port: int) -> None:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "daemonize no",
            f"dir {self._config.parent}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self._password:
            # The same password for the sentinels themselves and for the Redis servers.
            lines += [f"requirepass {self._password}", f"sentinel auth-pass {MASTER_NAME} {self._password}"]  # fmt: skip
        self._config.write_text("\n".join(lines) + "\n")
        with self._log_path.open("ab") as log:
            process = subprocess.Popen(
                [self._executable, str(self._config), "--loglevel", "notice"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.service = Service(self.name, process, self._log_path, self.port)

    def client(self) -> redis.Redis:
        """A plain client of this sentinel; the caller closes it."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self._password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            decode_responses=True,
        )

    def ask(self, *args: object) -> object:
        client = self.client()
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


class RedisSentinelSet:
    """The servers and sentinels of one monitored master; `start` once, `close` once."""

    def __init__(self, log_dir: Path, *, password: str | None = None) -> None:
        self.password = password
        first = RedisServer(log_dir, name="redis-a", password=password)
        replicaof = ["--replicaof", "127.0.0.1", str(first.port)]
        second = RedisServer(log_dir, name="redis-b", password=password, args=replicaof)
        #: The servers, whichever is master now.
        self.servers = [first, second]
        self._initial_master = first
        self.sentinels = [SentinelProcess(log_dir, i, password) for i in range(3)]

    @property
    def url(self) -> str:
        """The edge's URL for this set: every sentinel, the master's name, database 0."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/0"

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for sentinel in self.sentinels:
            sentinel.start(self._initial_master.port)
        self._wait_replica_synced(self._initial_master)
        self._wait_known(self._initial_master)

    def master(self) -> RedisServer:
        """The server that the sentinels name as master now."""
        port = self._master_port(self.sentinels[0])
        for server in self.servers:
            if server.port == port:
                return server
        raise AssertionError(f"sentinels name an unknown master port {port}")

    @staticmethod
    def _master_port(sentinel: SentinelProcess) -> int:
        address = sentinel.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        assert isinstance(address, list | tuple)
        return int(address[1])

    def failover(self) -> RedisServer:
        """Force a failover (SENTINEL FAILOVER) and wait until every sentinel names the
        new master, it answers as master, and the old master replicates from it (so a
        next failover can follow at once). Returns the new master."""
        old = self.master()
        new = next(s for s in self.servers if s is not old)
        self.sentinels[0].ask("SENTINEL", "FAILOVER", MASTER_NAME)
        self._wait_master(new)
        # What the sentinels do too (REPLICAOF, then closing the clients' connections),
        # but only once their next INFO of the old master (every 10 s) shows it still a
        # master: done here at once, to the same effect.
        with _client(old) as client, client.pipeline(transaction=True) as tx:
            tx.execute_command("REPLICAOF", "127.0.0.1", new.port)
            tx.execute_command("CLIENT", "KILL", "TYPE", "normal")
            tx.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            tx.execute()
        self._wait_replica_synced(new)
        self._wait_known(new)
        return new

    def flushall(self) -> None:
        with _client(self.master()) as client:
            client.flushall()

    def logs(self) -> str:
        processes: list[RedisServer | SentinelProcess] = [*self.servers, *self.sentinels]
        services = [p.service for p in processes if p.service]
        return "\n".join(f"--- {s.name} ---\n{s.log_tail(15)}" for s in services)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.close()

    def _wait(self, condition: object, what: str) -> None:
        try:
            eventually_sync(
                condition,  # type: ignore[arg-type]
                within_s=TIMEOUT_S, interval=0.05, what=what, ignore=(redis.RedisError,),
            )  # fmt: skip
        except NotYet as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def _wait_master(self, master: RedisServer) -> None:
        def named() -> bool:
            for sentinel in self.sentinels:
                if self._master_port(sentinel) != master.port:
                    return False
            return _role(master) == "master"

        self._wait(named, f"every sentinel naming {master.name} master")

    def _wait_replica_synced(self, master: RedisServer) -> None:
        """Until the other server replicates from `master` with its link up."""
        replica = next(s for s in self.servers if s is not master)

        def synced() -> bool:
            with _client(replica) as client:
                info = client.info("replication")
            return bool(
                info.get("role") == "slave"
                and int(info.get("master_port", 0)) == master.port
                and info.get("master_link_status") == "up"
            )

        self._wait(synced, f"{replica.name} replicating from {master.name}")

    def _wait_known(self, master: RedisServer) -> None:
        """Until each sentinel knows the replica (healthy) and the two other sentinels:
        what a failover needs (a replica to promote, a quorum to agree)."""
        replica = next(s for s in self.servers if s is not master)

        def known() -> bool:
            for sentinel in self.sentinels:
                replicas = sentinel.ask("SENTINEL", "REPLICAS", MASTER_NAME)
                peers = sentinel.ask("SENTINEL", "SENTINELS", MASTER_NAME)
                assert isinstance(replicas, list)
                assert isinstance(peers, list)
                # Refreshed (INFO) since it was listed, not down: a replica to promote.
                healthy = [
                    r
                    for r in map(_fields, replicas)
                    if int(r["port"]) == replica.port
                    and r["flags"] == "slave"
                    and int(r["info-refresh"]) < INFO_FRESH_MS
                ]
                if not healthy or len(peers) < len(self.sentinels) - 1:
                    return False
            return True

        self._wait(known, "every sentinel knowing the replica and its peers")


def _fields(entry: object) -> dict[str, str]:
    """A SENTINEL REPLICAS entry (a flat list, or a dict in redis-py's parsing) as a dict."""
    if isinstance(entry, dict):
        return {str(k): str(v) for k, v in entry.items()}
    assert isinstance(entry, list)
    return {str(k): str(v) for k, v in zip(entry[::2], entry[1::2], strict=True)}


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=2.0, decode_responses=True)


def _role(server: RedisServer) -> str:
    with _client(server) as client:
        return str(client.execute_command("ROLE")[0])


@contextlib.contextmanager
def running_sentinel(log_dir: Path, *, password: str | None = None) -> Iterator[RedisSentinelSet]:
    """A started set, every process stopped on exit."""
    sentinels = RedisSentinelSet(log_dir, password=password)
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.close()
