"""Admission control: a bounded number of requests in flight, then a bounded queue, then refusal.

Limits hold per edge process: in all (`max_in_flight`) and per model (`max_in_flight_per_model`).
Past them a request waits, among at most `max_queue` waiters in all, for at most
`queue_timeout_s`; a full queue or a wait past the timeout is refused (the edge answers 429 with
Retry-After). A freed slot goes to a waiter that fits, so one saturated model does not block the
others. Memory is bounded by `max_queue` whatever the burst.

Which waiter (`fair=True`, the default): strict priority by class (the key's `priority`, highest
first; background work in the lowest), then, within a class of one model, weighted fair queuing
across tenants. Each waiter costs the tokens it may use (estimated prompt + reserved completion,
at least 1) and gets a virtual finish tag: start = max(the class's virtual time, the tenant's
last finish), finish = start + cost (every tenant weighs 1). The smallest finish is admitted
and the class's virtual time becomes its finish (self-clocked fair queuing). So a tenant with a
backlog of long requests does not delay another's short ones by the whole backlog: each tenant
gets an equal share of the tokens admitted, whatever it queues. It is work-conserving (a free
slot always goes to some waiter; a lone tenant gets every slot) and a tenant that was idle
banks no credit (it starts at the virtual time now). Per-tenant state lives only while the
tenant has waiters. Strict priority means a lower class can starve while a higher one keeps
the model saturated: that is the intent (batch and background work yield to interactive
work) and no aging is applied; its waiters still time out after `queue_timeout_s`. Across
models (only when the all-models limit is what is full) the slot goes to the highest class,
then the oldest waiter. `fair=False`: one first-come, first-served order, as before
priorities existed (classes and tenants ignored).

Per edge process is the unit. With several edge replicas each one is fair among the requests
it sees: a tenant's share is computed per replica, and since the load balancer spreads every
tenant's connections over the replicas, each replica's queue holds a sample of every tenant
and the shares come out close to global ones. They are not exact: a tenant whose requests
happen to land on one replica competes only there. Global fairness would need one scheduler
shared by the replicas (a central queue, as some peers' gateways do with an external
scheduler), which costs a round trip per admission; Switchyard does not do that.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

#: The classes when none are given: EDGE_PRIORITY_CLASSES's default.
DEFAULT_CLASSES = ("interactive", "standard", "batch")
#: Cancelled waiters stay in their heap until they reach its top; past this many (and more
#: than the live ones) the heap is rebuilt, so it never holds more than about twice its waiters.
_COMPACT_AFTER = 64


class Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "queue_full" | "queue_timeout"
        self.message = message


@dataclass(slots=True, eq=False)
class _Waiter:
    model: str
    tenant: str
    rank: int  # the priority class's index: 0 is the highest
    seq: int  # arrival order
    finish: float = 0.0  # the virtual finish tag (0 when not fair: the order is seq's)
    gone: bool = False  # left the queue (cancelled, timed out) but still in the heap
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def key(self) -> tuple[int, float, int]:
        return (self.rank, self.finish, self.seq)

    def __lt__(self, other: _Waiter) -> bool:
        return self.key() < other.key()


@dataclass(slots=True)
class _Tenant:
    last: float  # the finish tag of its latest waiter
    waiting: int = 1


@dataclass(slots=True)
class _Class:
    """One priority class of one model: its virtual time and its tenants with waiters."""

    virtual: float = 0.0
    waiting: int = 0
    tenants: dict[str, _Tenant] = field(default_factory=dict)


class _ModelQueue:
    """The waiters of one model, best first: (class, finish tag, arrival)."""

    __slots__ = ("_classes", "_dead", "_fair", "_heap", "waiting")

    def __init__(self, fair: bool) -> None:
        self._fair = fair
        self._heap: list[_Waiter] = []
        self._dead = 0
        self._classes: dict[int, _Class] = {}
        self.waiting = 0

    def push(self, waiter: _Waiter, cost: int) -> None:
        if self._fair:
            cls = self._classes.setdefault(waiter.rank, _Class())
            tenant = cls.tenants.get(waiter.tenant)
            last = tenant.last if tenant is not None else 0.0
            waiter.finish = max(cls.virtual, last) + max(cost, 1)
            if tenant is None:
                cls.tenants[waiter.tenant] = _Tenant(waiter.finish)
            else:
                tenant.last = waiter.finish
                tenant.waiting += 1
            cls.waiting += 1
        heapq.heappush(self._heap, waiter)
        self.waiting += 1

    def head(self) -> _Waiter:
        """The best live waiter (there is one: `waiting` > 0)."""
        heap = self._heap
        while heap[0].gone:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0]

    def pop(self) -> _Waiter:
        waiter = self.head()
        heapq.heappop(self._heap)
        self._left(waiter, admitted=True)
        return waiter

    def remove(self, waiter: _Waiter) -> None:
        """A waiter that gave up: marked, and dropped from the heap when it reaches the top."""
        waiter.gone = True
        self._dead += 1
        self._left(waiter, admitted=False)
        if self._dead > _COMPACT_AFTER and self._dead > self.waiting:
            self._heap = [w for w in self._heap if not w.gone]
            heapq.heapify(self._heap)
            self._dead = 0

    def _left(self, waiter: _Waiter, *, admitted: bool) -> None:
        self.waiting -= 1
        if not self._fair:
            return
        cls = self._classes[waiter.rank]
        if admitted:
            cls.virtual = max(cls.virtual, waiter.finish)
        cls.waiting -= 1
        if not cls.waiting:
            del self._classes[waiter.rank]  # idle: the next busy period starts afresh
            return
        tenant = cls.tenants[waiter.tenant]
        tenant.waiting -= 1
        if not tenant.waiting:
            del cls.tenants[waiter.tenant]  # idle tenants bank no credit


class Admission:
    def __init__(
        self,
        max_in_flight: int,
        max_per_model: int,
        max_queue: int,
        queue_timeout_s: float,
        *,
        fair: bool = True,
        classes: Sequence[str] = DEFAULT_CLASSES,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_per_model = max_per_model
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.fair = fair
        self.classes = tuple(classes)
        self._rank = {name: i for i, name in enumerate(self.classes)}
        self.in_flight = 0
        self._per_model: dict[str, int] = {}
        self._queues: dict[str, _ModelQueue] = {}  # models with waiters only
        self._waiting = 0
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return self._waiting

    def waiting_for(self, model: str) -> int:
        queue = self._queues.get(model)
        return queue.waiting if queue is not None else 0

    def in_flight_for(self, model: str) -> int:
        return self._per_model.get(model, 0)

    def _fits(self, model: str) -> bool:
        return (
            self.in_flight < self.max_in_flight
            and self._per_model.get(model, 0) < self.max_per_model
        )

    def _take(self, model: str) -> None:
        self.in_flight += 1
        self._per_model[model] = self._per_model.get(model, 0) + 1

    def _priority_rank(self, priority: str | None) -> int:
        if priority is None or not self.fair:
            return 0
        try:
            return self._rank[priority]
        except KeyError:
            # Keys are checked against the classes when loaded: this is a caller's bug.
            raise ValueError(f"unknown priority class {priority!r}") from None

    async def acquire(
        self, model: str, *, tenant: str = "", cost: int = 1, priority: str | None = None
    ) -> float:
        """Take a slot for `model`; returns the seconds spent waiting. Raises Refused.

        `cost`: the tokens the request may use; `priority`: its class (None: the highest,
        for callers that have none); both only order waiters when `fair`."""
        rank = self._priority_rank(priority)
        # Capacity is handed to waiters on every release, so if there is room now, the
        # queued requests are all held by their own model's limit: only those of this
        # model have a prior claim.
        if self._fits(model) and model not in self._queues:
            self._take(model)
            return 0.0
        if self._waiting >= self.max_queue:
            raise Refused("queue_full", "Too many requests are waiting; retry after a moment.")
        waiter = _Waiter(model, tenant, rank, next(self._seq))
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = _ModelQueue(self.fair)
        queue.push(waiter, cost)
        self._waiting += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter.future
        except BaseException as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted in the same instant we gave up: hand the slot on.
                self.release(model)
            elif not waiter.gone:  # (a grant that found it cancelled took it out already)
                self._leave(queue, waiter)
            if isinstance(exc, TimeoutError):
                raise Refused(
                    "queue_timeout",
                    f"The request waited {self.queue_timeout_s:g}s for capacity; retry after a moment.",
                ) from None
            raise
        return time.monotonic() - started

    def _leave(self, queue: _ModelQueue, waiter: _Waiter) -> None:
        queue.remove(waiter)
        self._waiting -= 1
        if not queue.waiting:
            del self._queues[waiter.model]

    def release(self, model: str) -> None:
        full = self.in_flight >= self.max_in_flight
        self.in_flight -= 1
        left = self._per_model[model] - 1
        if left:
            self._per_model[model] = left
        else:
            del self._per_model[model]
        # One slot is free, for this model and in all: at most one waiter gets it. Unless
        # the all-models limit was full, only this model's waiters were held (by its own
        # limit); otherwise any model's may fit.
        if full:
            self._grant_any()
        else:
            queue = self._queues.get(model)
            if queue is not None:
                self._grant(model, queue)

    def _grant_any(self) -> None:
        # Models with waiters, not waiters: a scan of the few models queued now.
        while True:
            best: tuple[int, int] | None = None
            chosen: str | None = None
            for model, queue in self._queues.items():
                if self._per_model.get(model, 0) >= self.max_per_model:
                    continue
                head = queue.head()
                if best is None or (head.rank, head.seq) < best:
                    best, chosen = (head.rank, head.seq), model
            if chosen is None or self._grant(chosen, self._queues[chosen]):
                return

    def _grant(self, model: str, queue: _ModelQueue) -> bool:
        """The slot to the model's best waiter; False if it had none left."""
        while (waiter := queue.head()).future.cancelled():
            # Its task was cancelled (client gone, queue timeout) in this same instant and
            # has not run yet: it leaves now, and never holds a slot it cannot use.
            self._leave(queue, waiter)
            if not queue.waiting:
                return False
        queue.pop()
        self._waiting -= 1
        if not queue.waiting:
            del self._queues[model]
        self._take(model)
        waiter.future.set_result(None)
        return True
