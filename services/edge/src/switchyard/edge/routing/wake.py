"""One wake signal per model across edge replicas.

Every edge replica that holds requests for a model at zero asks the operator for a
replica (the `switchyard.dev/demanded-at` annotation), at most once per `interval_s` in
each process. Across replicas the signal is coalesced before it is sent:

- With a shared Redis (the rate limiter's, `EDGE_RATE_LIMIT_BACKEND=redis`), the first
  replica to take `SET <prefix>:wake:{<namespace>/<name>} <edge id> NX PX <interval>`
  sends it and the others do not. A Redis that cannot answer does not stop a wake:
  the signal is sent anyway (counted: a duplicate patch is harmless, a missed wake is
  not).
- Without one, a replica does not send it when the ModelBackend it watches already
  carries an annotation fresher than `interval_s` (another replica asked): the
  annotation is the shared state, seen through the watch, so two replicas asking within
  the same instant may both send it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import structlog

from switchyard.edge import metrics
from switchyard.edge.redis_pool import STORE_ERRORS, RedisConnections
from switchyard.edge.settings import EdgeSettings

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (namespace, name) of a ModelBackend


def edge_id() -> str:
    """This process, as other replicas may read it in Redis."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WakeSignals:
    """Whether this replica is the one to send a backend's wake signal now."""

    def __init__(
        self,
        interval_s: float,
        *,
        redis: RedisConnections | None = None,
        prefix: str = "switchyard",
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_s = interval_s
        self._redis = redis
        self._prefix = prefix
        self._owner = owner or edge_id()
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> WakeSignals:
        """Coalesced through the rate limiter's Redis when there is one, else through the
        annotation itself."""
        redis = None
        if settings.rate_limit_backend == "redis" and settings.redis_url is not None:
            redis = RedisConnections(
                settings.redis_url.get_secret_value(),
                max_connections=2,  # one command per wake, per backend and interval
                timeout_s=settings.redis_timeout_s,
                connect_timeout_s=settings.redis_connect_timeout_s,
                pool_timeout_s=settings.redis_pool_timeout_s,
            )
        return cls(settings.demand_interval_s, redis=redis)

    def key(self, backend: Key) -> str:
        # The hash tag keeps one backend's key on one slot of a Redis Cluster.
        return f"{self._prefix}:wake:{{{backend[0]}/{backend[1]}}}"

    async def first(self, backend: Key, demanded_at: float | None) -> bool:
        """Whether to send `backend`'s wake signal: no other replica sent it within the
        interval. `demanded_at`: the annotation's time (epoch seconds) as last watched."""
        if self._redis is None:
            return demanded_at is None or self._clock() - demanded_at >= self.interval_s
        try:
            taken = await self._redis.client.set(
                self.key(backend),
                self._owner,
                nx=True,
                px=max(1, round(self.interval_s * 1000)),
            )
        except STORE_ERRORS as exc:
            metrics.WAKES_UNCOALESCED.inc()
            log.warning(
                "wake_coalescing_failed", backend=f"{backend[0]}/{backend[1]}", error=repr(exc)
            )
            return True  # waking matters more than sending the signal once
        return bool(taken)

    async def forget(self, backend: Key) -> None:
        """The signal could not be sent: let the next replica that asks send it."""
        if self._redis is None:
            return
        try:
            await self._redis.client.delete(self.key(backend))
        except STORE_ERRORS as exc:  # it expires with the interval anyway
            log.warning("wake_forget_failed", backend=f"{backend[0]}/{backend[1]}", error=repr(exc))

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()
