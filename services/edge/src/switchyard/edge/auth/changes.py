"""Key changes reaching every edge replica at once, through Redis pub/sub.

The keys file stays the source of truth (each replica's file watch reads it); this only
makes a change take effect before the next poll. A replica that wrote the file publishes
the key's name; every replica (itself included) drops the key from its table at once when
it was revoked (disabled or deleted), re-reads the file, and acknowledges. The writer
waits, bounded, for as many acknowledgements as PUBLISH reported subscribers, so the
admin call that revoked a key returns once every replica that listens refuses it.

Messages carry names, never a key or its hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from switchyard.edge.redis_pool import STORE_ERRORS, RedisConnections

if TYPE_CHECKING:
    from switchyard.edge.auth.store import KeyStore

log = structlog.get_logger(__name__)

CHANNEL = "switchyard:keys:changes"
_ACK_PREFIX = "switchyard:keys:ack:"
#: Acknowledgements outlive any wait for them, then go.
_ACK_TTL_S = 60
#: How long a writer waits for every replica's acknowledgement.
ACK_WAIT_S = 5.0
_ACK_POLL_S = 0.02
#: How often a replica blocks for a message before checking it is still connected.
_LISTEN_POLL_S = 1.0
#: After Redis failed, how long until a replica subscribes again.
_RETRY_S = 1.0


@dataclass(frozen=True)
class Delivery:
    """Who a published change reached: `replicas` subscribers, `applied` of which said they
    had applied it within the wait."""

    replicas: int
    applied: int


class KeyChanges:
    def __init__(self, connections: RedisConnections, *, ack_wait_s: float = ACK_WAIT_S) -> None:
        self._connections = connections
        self._ack_wait_s = ack_wait_s

    @classmethod
    def over(cls, redis: RedisConnections | None) -> KeyChanges | None:
        """Changes over the edge's shared Redis pool (`EDGE_REDIS_URL`; the subscription
        holds one of its connections); None without one (one process applies its own
        changes at once, other processes at their next reload)."""
        return None if redis is None else cls(redis.share())

    async def publish(self, name: str | None, *, revoked: bool) -> Delivery | None:
        """Tell every replica that key `name` changed (`revoked`: it may no longer be used;
        None: something else in the file did, such as a tenant's budget)
        and wait, at most `ack_wait_s`, until each has applied it. None if Redis failed:
        the change is in the file, and replicas see it at their next poll."""
        client = self._connections.client
        change_id = uuid.uuid4().hex
        message = orjson.dumps({"id": change_id, "name": name, "revoked": revoked})
        try:
            replicas = int(await client.publish(CHANNEL, message))
            applied = 0
            deadline = asyncio.get_running_loop().time() + self._ack_wait_s
            while True:
                applied = int(await client.get(_ACK_PREFIX + change_id) or 0)
                if applied >= replicas or asyncio.get_running_loop().time() >= deadline:
                    break
                await asyncio.sleep(_ACK_POLL_S)
        except STORE_ERRORS as exc:
            log.warning("key_change_not_published", key=name, error=str(exc))
            return None
        if applied < replicas:
            log.warning("key_change_not_acknowledged", key=name, replicas=replicas, applied=applied)
        return Delivery(replicas, applied)

    async def listen(self, store: KeyStore) -> None:
        """Apply other replicas' changes to `store` until cancelled; rides out Redis
        failures (subscribing again, then re-reading the file for what was missed)."""
        failing = False  # an outage is logged once, not every retry
        while True:
            client = self._connections.client
            pubsub = client.pubsub()
            try:
                await client.ping()  # connects (a cluster client learns its slots) first
                await pubsub.subscribe(CHANNEL)
                # Whatever changed while not subscribed is in the file (or Secret) by now.
                await store.refresh()
                if failing:
                    log.info("key_changes_resumed")
                    failing = False
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_LISTEN_POLL_S
                    )
                    if message is not None:
                        await self._apply(store, message.get("data"))
            except STORE_ERRORS as exc:
                if not failing:
                    log.warning("key_changes_unavailable", error=str(exc), retry_s=_RETRY_S)
                failing = True
            except Exception:
                if not failing:
                    log.exception("key_changes_failed", retry_s=_RETRY_S)
                failing = True
            finally:
                with contextlib.suppress(*STORE_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(_RETRY_S)

    async def _apply(self, store: KeyStore, data: Any) -> None:
        try:
            change = orjson.loads(data)
            change_id, name, revoked = change["id"], change["name"], change["revoked"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            log.warning("key_change_malformed")
            return
        if not (
            isinstance(change_id, str) and isinstance(name, str | None) and revoked in (True, False)
        ):
            log.warning("key_change_malformed")
            return
        if revoked and name is not None:
            # Refused from now on, even before this replica's file shows the change (a
            # Secret's copy lags): the next reload that sees a new file is the truth.
            await asyncio.to_thread(store.drop, name)
        await store.refresh()
        client = self._connections.client
        await client.incr(_ACK_PREFIX + change_id)
        await client.expire(_ACK_PREFIX + change_id, _ACK_TTL_S)

    async def close(self) -> None:
        await self._connections.close()
