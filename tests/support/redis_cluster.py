"""A real Redis Cluster for tests: 3 masters on loopback, optionally a replica each.

Each node is a `redis-server --cluster-enabled yes` with persistence off, its client and
cluster-bus ports from `free_port()`, its `nodes.conf` and log in `log_dir`. The slots
are split evenly over the masters (CLUSTER ADDSLOTSRANGE), the nodes meet, the replicas
follow their masters, and `start` returns once every node says `cluster_state:ok` and
agrees on the slots. `cluster-node-timeout` is short, so that a lost master is noticed
(and its replica promoted) within seconds:

    with running_cluster(tmp_path) as cluster:
        url = cluster.url                  # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
        cluster.kill_master(0)             # a replica (if any) takes its slots over
        cluster.wait_ok()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support.polling import NotYet, eventually_sync
from tests.support.processes import free_port
from tests.support.redis import RedisServer

SLOTS = 16384
#: How long a node may not answer before the others count it failed (ms).
NODE_TIMEOUT_MS = 1000
#: Bound on the cluster's forming, and on a failover.
TIMEOUT_S = 60.0


class RedisClusterSet:
    """`masters` masters, each with `replicas` replicas; `start` once, `close` once."""

    def __init__(
        self,
        log_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 0,
        password: str | None = None,
    ) -> None:
        self._log_dir = log_dir
        self.password = password
        self._bus_ports: dict[str, int] = {}
        self.masters = [self._node(f"master-{i}") for i in range(masters)]
        self.replicas = [
            [self._node(f"replica-{i}-{j}") for j in range(replicas)] for i in range(masters)
        ]

    @property
    def nodes(self) -> list[RedisServer]:
        return [*self.masters, *(r for group in self.replicas for r in group)]

    @property
    def url(self) -> str:
        """The edge's URL for this cluster: every master as a seed."""
        auth = f":{self.password}@" if self.password else ""
        seeds = ",".join(f"127.0.0.1:{m.port}" for m in self.masters)
        return f"redis+cluster://{auth}{seeds}"

    def client(self, node: RedisServer) -> redis.Redis:
        """A plain (non-cluster) client of one node; the caller closes it."""
        return redis.Redis(
            host="127.0.0.1",
            port=node.port,
            password=self.password,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        share = SLOTS // len(self.masters)
        for i, master in enumerate(self.masters):
            first = i * share
            last = SLOTS - 1 if i == len(self.masters) - 1 else first + share - 1
            self._call(master, "CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.masters[0]
        for node in self.nodes[1:]:
            self._call(node, "CLUSTER", "MEET", "127.0.0.1", seed.port, self._bus_ports[seed.name])
        self.wait_ok()
        for master, group in zip(self.masters, self.replicas, strict=True):
            master_id = self._call(master, "CLUSTER", "MYID")
            for replica in group:
                self._replicate(replica, master_id)
        self.wait_ok()

    def wait_ok(self, within_s: float = TIMEOUT_S) -> None:
        """Until every live node says `cluster_state:ok` and sees every slot served."""

        def ok() -> bool:
            for node in self._live():
                text = self._info(node)
                if "cluster_state:ok" not in text or f"cluster_slots_ok:{SLOTS}" not in text:
                    return False
            return True

        try:
            eventually_sync(
                ok, within_s=within_s, interval=0.05, what="cluster_state:ok on every node",
                ignore=(redis.RedisError,),
            )  # fmt: skip
        except NotYet as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def kill_master(self, index: int) -> RedisServer:
        """Stop master `index` for good (SIGTERM; its data is gone, as persistence is off).
        With replicas, `wait_promoted` then waits for one to serve its slots; without,
        the cluster turns `cluster_state:fail` (full coverage is required): see
        `wait_failed`."""
        master = self.masters[index]
        master.stop()
        return master

    def wait_promoted(self, index: int, within_s: float = TIMEOUT_S) -> RedisServer:
        """Until a replica of (killed) master `index` is master and the cluster is ok."""

        def promoted() -> RedisServer | None:
            for replica in self.replicas[index]:
                if self._role(replica) == "master":
                    return replica
            return None

        try:
            replica = eventually_sync(
                promoted, within_s=within_s, interval=0.05, what="a replica promoted",
                ignore=(redis.RedisError,),
            )  # fmt: skip
        except NotYet as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None
        self.wait_ok(within_s)
        return replica

    def wait_failed(self, within_s: float = TIMEOUT_S) -> None:
        """Until every live node says `cluster_state:fail` (a master lost, no replica)."""

        def failed() -> bool:
            return all("cluster_state:fail" in self._info(n) for n in self._live())

        try:
            eventually_sync(
                failed, within_s=within_s, interval=0.05, what="cluster_state:fail",
                ignore=(redis.RedisError,),
            )  # fmt: skip
        except NotYet as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def flushall(self) -> None:
        for master in self.masters:
            if master.service is not None and master.service.alive():
                with contextlib.suppress(redis.ReadOnlyError):
                    self._call(master, "FLUSHALL")

    def logs(self) -> str:
        return "\n".join(
            f"--- {n.name} ---\n{n.service.log_tail(15)}" for n in self.nodes if n.service
        )

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def _node(self, name: str) -> RedisServer:
        bus = free_port()
        node = RedisServer(
            self._log_dir,
            name=name,
            password=self.password,
            args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self._log_dir / f"nodes-{name}.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-port", str(bus),
                # A replica takes over however long it was cut off from its master.
                "--cluster-replica-validity-factor", "0",
            ],
        )  # fmt: skip
        self._bus_ports[name] = bus
        return node

    def _replicate(self, replica: RedisServer, master_id: object) -> None:
        """CLUSTER REPLICATE, once the replica has learnt of the master (gossip)."""

        def done() -> bool:
            self._call(replica, "CLUSTER", "REPLICATE", master_id)
            return True

        eventually_sync(
            done, within_s=TIMEOUT_S, interval=0.05, what=f"{replica.name} replicating",
            ignore=(redis.ResponseError,),
        )  # fmt: skip

    def _live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.service is not None and n.service.alive()]

    def _info(self, node: RedisServer) -> str:
        info = self._call(node, "CLUSTER", "INFO")
        return info.decode() if isinstance(info, bytes) else str(info)

    def _role(self, node: RedisServer) -> str:
        role = self._call(node, "ROLE")
        assert isinstance(role, list)
        first = role[0]
        return first.decode() if isinstance(first, bytes) else str(first)

    def _call(self, node: RedisServer, *args: object) -> object:
        client = self.client(node)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()


@contextlib.contextmanager
def running_cluster(
    log_dir: Path, *, masters: int = 3, replicas: int = 0, password: str | None = None
) -> Iterator[RedisClusterSet]:
    """A formed cluster, every node stopped on exit."""
    cluster = RedisClusterSet(log_dir, masters=masters, replicas=replicas, password=password)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
