"""Background responses queued in Redis: any edge runs them, and takes over a dead edge's.

The queue is one Redis stream, `sy:jobs`, read by the consumer group `sy:jobs:workers` (one
consumer per edge process). A job taken is leased: its stream entry stays pending under
its consumer, and the worker renews the lease every third of `jobs_lease_s` by claiming
the entry again (which resets its idle time). An edge that dies stops renewing; once an
entry has been idle for a lease, `XAUTOCLAIM` hands it to another edge, which runs the job
again from the start. Every take counts an attempt in the response's hash; the scripts
that log an event or store the result do so only for the attempt that holds the job, so a
job completes once even when a paused edge wakes up and finishes a run of its own.

The response's hash (see `redis_store`) is the truth of its status and its cancel flag;
a cancel sets both, then publishes the id on `sy:jobs:cancel` so that the edge running it
ends it at once (its next renewal would see the flag too). A stopping edge gives its jobs
back: the hash says `queued` again and the entry is made idle for a whole lease, so the
next `XAUTOCLAIM` on any edge takes it without waiting.

Each event of a job's stream is an entry of `sy:ev:{<id>}` (bounded with MAXLEN, expiring
with the response); followers read it with blocking XREADs on a pool of their own,
bounded like every pool (`redis_max_connections`): when all of its connections are
blocked in reads, one more follower waits for one (`redis_pool_timeout_s`), then its
stream ends with an error. The workers' own blocking reads have a pool apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Container, Sequence
from typing import Any

import structlog
from redis.exceptions import NoScriptError, ResponseError

from switchyard.edge.openai_responses.jobs import JobsFull, NotCancellable
from switchyard.edge.openai_responses.redis_store import (
    RedisResponseStore,
    decode,
    encode,
    events_key,
    response_key,
)
from switchyard.edge.openai_responses.store import StoredResponse
from switchyard.edge.openai_responses.workers import Job, Renewal, Runner, Workers, end
from switchyard.edge.redis_pool import STORE_ERRORS, RedisConnections

log = structlog.get_logger(__name__)

#: The queue's stream (its consumer group: "<queue>:workers"; cancels: "<queue>:cancel").
QUEUE = "sy:jobs"
#: The most events a response's log keeps (a stream of this many tokens and more is rare;
#: a follower that falls this far behind misses the oldest).
MAX_EVENTS = 100_000
#: A blocking read's longest wait: a follower or a worker checks its state this often.
BLOCK_S = 1.0
TERMINAL = ("completed", "failed", "incomplete", "cancelled")

# KEYS: response hash, event log. ARGV: doc, request, ttl ms.
_SUBMIT = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'request', ARGV[2], 'status', 'queued',
  'job', '1', 'attempt', '0', 'cancel', '0', 'completions', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
# KEYS: queue. ARGV: bound, tenant, id.
_ENQUEUE = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', 'tenant', ARGV[2], 'id', ARGV[3])
return 1
"""
# KEYS: response hash, event log. ARGV: consumer.
# -> {attempt, doc, request} or {0}: gone, ended or cancelled (drop the entry).
_TAKE = """
local f = redis.call('HMGET', KEYS[1], 'status', 'doc', 'request', 'cancel')
local status = f[1]
if not status or f[4] == '1' or (status ~= 'queued' and status ~= 'in_progress') then
  return {0}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'owner', ARGV[1])
redis.call('DEL', KEYS[2])
return {attempt, f[2], f[3] or ''}
"""
# KEYS: response hash. ARGV: attempt. -> 'held' | 'cancelled' | 'lost'
_RENEW = """
local f = redis.call('HMGET', KEYS[1], 'attempt', 'status', 'cancel')
if f[1] ~= ARGV[1] then return 'lost' end
if f[3] == '1' then return 'cancelled' end
if f[2] ~= 'in_progress' then return 'lost' end
return 'held'
"""
# KEYS: response hash, event log. ARGV: attempt, ttl ms, max events, sequence, event, last.
_APPEND = """
local f = redis.call('HMGET', KEYS[1], 'attempt', 'status')
if f[1] ~= ARGV[1] or f[2] ~= 'in_progress' then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'seq', ARGV[4], 'data', ARGV[5],
  'last', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
# KEYS: response hash, event log. ARGV: attempt, doc, status, ttl ms.
_FINISH = """
local f = redis.call('HMGET', KEYS[1], 'attempt', 'status')
if f[1] ~= ARGV[1] or f[2] ~= 'in_progress' then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'status', ARGV[3])
redis.call('HDEL', KEYS[1], 'request')
redis.call('HINCRBY', KEYS[1], 'completions', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'end', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# KEYS: response hash, event log. ARGV: ttl ms.
# -> 'none' | 'not_background' | 'ended:<status>' | 'cancelled'
_CANCEL = """
local f = redis.call('HMGET', KEYS[1], 'doc', 'job', 'status', 'cancel')
if not f[1] then return 'none' end
if f[2] ~= '1' then return 'not_background' end
if f[4] == '1' or (f[3] ~= 'queued' and f[3] ~= 'in_progress') then return 'ended:' .. f[3] end
redis.call('HSET', KEYS[1], 'cancel', '1', 'status', 'cancelled')
redis.call('HDEL', KEYS[1], 'request')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'end', 'cancelled')
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 'cancelled'
"""
# KEYS: response hash. ARGV: attempt. A stopping edge's job is queued again.
_GIVE_BACK = """
local f = redis.call('HMGET', KEYS[1], 'attempt', 'status')
if f[1] ~= ARGV[1] or f[2] ~= 'in_progress' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued')
return 1
"""


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:  # a new or restarted Redis: it learns the script
            return await redis.eval(self.source, len(keys), *keys, *args)


SUBMIT, ENQUEUE, TAKE, RENEW, APPEND, FINISH, CANCEL, GIVE_BACK = (
    _Script(s) for s in (_SUBMIT, _ENQUEUE, _TAKE, _RENEW, _APPEND, _FINISH, _CANCEL, _GIVE_BACK)
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD/XREADGROUP's entries for its one stream (RESP2: [[stream, entries]])."""
    if not reply:
        return []
    return list(reply[0][1])


class RedisJobs:
    """`BackgroundJobs` on Redis, and the queue its `Workers` take from."""

    def __init__(
        self,
        store: RedisResponseStore,
        blocking: RedisConnections,
        followers: RedisConnections,
        runner: Runner,
        *,
        concurrency_per_model: int,
        max_queued: int,
        lease_s: float,
        capacity: Callable[[], int] | None = None,
        block_s: float = BLOCK_S,
        queue: str = QUEUE,
    ) -> None:
        self._store = store
        self._redis = store.connections.client
        #: The workers' blocking read and the cancels' subscription (two connections).
        self._blocking = blocking
        #: Followers' blocking reads: a pool of their own, so that many cannot starve the
        #: workers of connections.
        self._followers = followers
        self._ttl_ms = store.ttl_ms
        self._max_queued = max_queued
        self._lease_ms = max(1, int(lease_s * 1000))
        self._block_ms = max(1, int(min(block_s, lease_s / 3) * 1000))
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._cursor = "0-0"
        #: The queue's stream, its group and the cancels' channel (tests use their own).
        self._queue, self._group, self._channel = queue, f"{queue}:workers", f"{queue}:cancel"
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self.workers = Workers(
            self,
            runner,
            concurrency_per_model=concurrency_per_model,
            lease_s=lease_s,
            capacity=capacity or (lambda: concurrency_per_model),
        )

    # -- BackgroundJobs ----------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(*STORE_ERRORS):  # not there yet: the reader retries
            await self._create_group()
        self._listener = asyncio.create_task(self._listen(), name="background jobs cancels")
        self.workers.start()

    async def submit(self, stored: StoredResponse) -> None:
        doc = encode(stored, self._store.max_bytes)
        keys = [response_key(stored.tenant, stored.id), events_key(stored.id)]
        await SUBMIT(self._redis, keys, [doc, stored.request or b"", self._ttl_ms])
        queued = await ENQUEUE(
            self._redis, [self._queue], [self._max_queued, stored.tenant, stored.id]
        )
        if not queued:
            await self._redis.delete(keys[0])
            raise JobsFull(f"{self._max_queued} background responses are queued already")

    async def cancel(self, tenant: str, response_id: str) -> StoredResponse | None:
        keys = [response_key(tenant, response_id), events_key(response_id)]
        outcome = _text(await CANCEL(self._redis, keys, [self._ttl_ms]))
        if outcome == "none":
            return None
        if outcome == "not_background":
            raise NotCancellable("Only a background response can be cancelled.")
        if outcome.startswith("ended:"):
            status = outcome.removeprefix("ended:")
            raise NotCancellable(f"Cannot cancel a response whose status is {status}.")
        with contextlib.suppress(*STORE_ERRORS):  # the flag is the truth: renewals see it
            await self._redis.publish(self._channel, response_id)
        return await self._store.get(tenant, response_id)

    async def events(
        self, tenant: str, response_id: str, starting_after: int
    ) -> AsyncIterator[bytes]:
        hash_key, log_key = response_key(tenant, response_id), events_key(response_id)
        if not await self._redis.exists(hash_key):
            return  # unknown, expired, or another tenant's: the log is not theirs to read
        last_id, sent = "0-0", starting_after
        reader = self._followers.client
        while True:
            reply = await reader.xread({log_key: last_id}, count=256, block=self._block_ms)
            entries = _entries(reply)
            for entry_id, fields in entries:
                last_id = _text(entry_id)
                if b"end" in fields:
                    return
                sequence = int(fields[b"seq"])
                if sequence > sent:
                    sent = sequence
                    yield fields[b"data"]
                if fields.get(b"last") == b"1":
                    return
            if not entries:
                status = await self._redis.hget(hash_key, "status")
                if status is None:
                    return  # deleted or expired
                if _text(status) in TERMINAL and not await self._redis.exists(log_key):
                    return  # ended with no log left (expired)

    async def close(self) -> None:
        self._closing = True
        await self.workers.stop()
        if self._listener is not None:
            await end(self._listener)
        await self._blocking.close()
        await self._followers.close()

    # -- JobQueue --------------------------------------------------------------------------

    async def take(self, running: Container[str]) -> Job | None:
        entry = await self._reclaim()
        if entry is None:
            try:
                reply = await self._blocking.client.xreadgroup(
                    self._group, self._consumer, {self._queue: ">"}, count=1, block=self._block_ms
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._create_group()  # a Redis that lost its data (or a new one)
                return None
            entries = _entries(reply)
            if not entries:
                return None
            entry = entries[0]
        entry_id, fields = _text(entry[0]), entry[1]
        if not fields:  # deleted meanwhile
            await self._drop(entry_id)
            return None
        tenant, response_id = _text(fields[b"tenant"]), _text(fields[b"id"])
        if response_id in running:
            return None  # ours, and running: a late renewal (the claim renewed it too)
        keys = [response_key(tenant, response_id), events_key(response_id)]
        taken = await TAKE(self._redis, keys, [self._consumer])
        if not int(taken[0]):
            await self._drop(entry_id)
            return None
        attempt, doc, request = int(taken[0]), taken[1], taken[2]
        stored = decode(tenant, response_id, doc, request or None, b"in_progress")
        return Job(tenant, response_id, attempt, stored, handle=entry_id)

    async def renew(self, job: Job) -> Renewal:
        held = _text(
            await RENEW(self._redis, [response_key(job.tenant, job.response_id)], [job.attempt])
        )
        if held == "held":
            # Claimed again by its holder: the entry's idle time starts over.
            await self._redis.xclaim(
                self._queue, self._group, self._consumer, 0, [job.handle], justid=True
            )
        return Renewal(held)

    async def append(self, job: Job, sequence: int, event: bytes, last: bool) -> None:
        keys = [response_key(job.tenant, job.response_id), events_key(job.response_id)]
        args = [job.attempt, self._ttl_ms, MAX_EVENTS, sequence, event, "1" if last else "0"]
        await APPEND(self._redis, keys, args)

    async def finish(self, job: Job, result: StoredResponse) -> bool:
        doc = encode(result, self._store.max_bytes)
        status = str(result.response.get("status", "completed"))
        keys = [response_key(job.tenant, job.response_id), events_key(job.response_id)]
        done = bool(await FINISH(self._redis, keys, [job.attempt, doc, status, self._ttl_ms]))
        if done:
            await self._drop(job.handle)
        return done

    async def cancelled(self, job: Job) -> None:
        await self._drop(job.handle)

    async def give_back(self, job: Job) -> None:
        await GIVE_BACK(self._redis, [response_key(job.tenant, job.response_id)], [job.attempt])
        # Idle for a whole lease already: the next XAUTOCLAIM, on any edge, takes it.
        await self._redis.xclaim(
            self._queue,
            self._group,
            self._consumer,
            0,
            [job.handle],
            idle=self._lease_ms,
            justid=True,
        )

    # -- inside --------------------------------------------------------------------------------

    async def _create_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._queue, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _reclaim(self) -> tuple[bytes, dict[bytes, bytes]] | None:
        """A job whose lease ran out (its edge died or stopped), now ours; None."""
        try:
            reply = await self._redis.xautoclaim(
                self._queue,
                self._group,
                self._consumer,
                self._lease_ms,
                start_id=self._cursor,
                count=1,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()
            return None
        self._cursor = _text(reply[0])
        claimed = reply[1]
        for deleted in reply[2] if len(reply) > 2 else []:
            await self._drop(_text(deleted))
        if not claimed:
            return None
        entry_id, fields = claimed[0]
        log.info("background_job_taken_over", entry=_text(entry_id))
        return entry_id, fields or {}

    async def _drop(self, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self._queue, self._group, entry_id)
            pipe.xdel(self._queue, entry_id)
            await pipe.execute()

    async def _listen(self) -> None:
        """Cancels published by any edge: end the job here at once if it runs here."""
        while not self._closing:
            pubsub = None
            try:
                # A cluster client learns its slots on its first command: pub/sub needs them.
                await self._blocking.client.ping()
                pubsub = self._blocking.client.pubsub()
                await pubsub.subscribe(self._channel)
                while not self._closing:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=BLOCK_S
                    )
                    if message is not None and message.get("type") == "message":
                        self.workers.cancel(_text(message["data"]))
            except Exception as exc:  # never die: renewals would be the only news of cancels
                log.warning("background_jobs_cancels_unavailable", error=repr(exc))
                await asyncio.sleep(0.5)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
