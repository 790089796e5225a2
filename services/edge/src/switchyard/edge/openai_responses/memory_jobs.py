"""Background responses in this process only (`EDGE_RESPONSES_STORE=memory`).

The same workers as with Redis (`Workers`), fed by a bounded asyncio queue; the jobs'
states and event logs live here, beside the memory store's responses. Nothing survives
the process: a job queued or running when it stops is marked failed (no other process
will ever run it). A lease means nothing here (no other process can take a job): the
renewal only learns of cancellations, which also end a job's run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Container
from dataclasses import dataclass, field

from switchyard.edge.openai_responses.jobs import JobsFull, NotCancellable
from switchyard.edge.openai_responses.store import ResponseStore, StoredResponse
from switchyard.edge.openai_responses.workers import Job, Renewal, Runner, Workers, failed

#: The most events a response's log keeps (later ones are not logged).
MAX_EVENTS = 100_000
#: How long `take` waits for a job before its reader looks around again.
TAKE_WAIT_S = 1.0
ACTIVE = ("queued", "in_progress")


@dataclass(slots=True)
class _State:
    tenant: str
    status: str = "queued"
    #: (sequence number, event, whether it is the last), in order.
    events: list[tuple[int, bytes, bool]] = field(default_factory=list)
    ended: bool = False
    #: Set (and replaced) whenever the log grows or the job ends: followers wait on it.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def end(self, status: str) -> None:
        self.status = status
        self.ended = True
        self.notify()


class MemoryJobs:
    """`BackgroundJobs` in this process, and the queue its `Workers` take from."""

    def __init__(
        self,
        store: ResponseStore,
        runner: Runner,
        *,
        concurrency_per_model: int,
        max_queued: int,
        max_entries: int,
        lease_s: float,
        capacity: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=max_queued)
        self._max_queued = max_queued
        self._max_entries = max_entries
        #: Jobs by id, oldest first: ended ones are forgotten past `max_entries`.
        self._states: OrderedDict[str, _State] = OrderedDict()
        self.workers = Workers(
            self,
            runner,
            concurrency_per_model=concurrency_per_model,
            lease_s=lease_s,
            capacity=capacity or (lambda: concurrency_per_model),
        )

    # -- BackgroundJobs ----------------------------------------------------------------------

    async def start(self) -> None:
        self.workers.start()

    async def submit(self, stored: StoredResponse) -> None:
        if self._queue.full():
            raise JobsFull(f"{self._max_queued} background responses are queued already")
        await self._store.put(stored)
        self._states[stored.id] = _State(stored.tenant)
        self._forget_ended()
        self._queue.put_nowait((stored.tenant, stored.id))

    async def cancel(self, tenant: str, response_id: str) -> StoredResponse | None:
        stored = await self._store.get(tenant, response_id)
        if stored is None:
            return None
        state = self._states.get(response_id)
        if state is None or state.tenant != tenant:
            raise NotCancellable("Only a background response can be cancelled.")
        if state.status not in ACTIVE:
            raise NotCancellable(f"Cannot cancel a response whose status is {state.status}.")
        state.end("cancelled")
        stored.response = {**stored.response, "status": "cancelled"}
        stored.request = None
        await self._store.put(stored)
        self.workers.cancel(response_id)
        return stored

    async def events(
        self, tenant: str, response_id: str, starting_after: int
    ) -> AsyncIterator[bytes]:
        state = self._states.get(response_id)
        if state is None or state.tenant != tenant:
            return
        index, sent = 0, starting_after
        while True:
            changed = state.changed
            while index < len(state.events):
                sequence, event, last = state.events[index]
                index += 1
                if sequence > sent:
                    sent = sequence
                    yield event
                if last:
                    return
            if state.ended:
                return
            await changed.wait()

    async def close(self) -> None:
        await self.workers.stop()
        while not self._queue.empty():  # never to run: say so
            tenant, response_id = self._queue.get_nowait()
            state = self._states.get(response_id)
            stored = await self._store.get(tenant, response_id)
            if state is not None and stored is not None and state.status in ACTIVE:
                await self._store.put(failed(stored, "server_error", "the edge stopped"))
                state.end("failed")

    # -- JobQueue --------------------------------------------------------------------------

    async def take(self, running: Container[str]) -> Job | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TAKE_WAIT_S):
                tenant, response_id = await self._queue.get()
                state = self._states.get(response_id)
                stored = await self._store.get(tenant, response_id)
                if state is None or stored is None or state.status != "queued":
                    return None  # cancelled, deleted or forgotten before it ran
                state.status = "in_progress"
                stored.response = {**stored.response, "status": "in_progress"}
                await self._store.put(stored)
                return Job(tenant, response_id, 1, stored)
        return None

    async def renew(self, job: Job) -> Renewal:
        state = self._states.get(job.response_id)
        if state is None:
            return Renewal.LOST
        return Renewal.CANCELLED if state.status == "cancelled" else Renewal.HELD

    async def append(self, job: Job, sequence: int, event: bytes, last: bool) -> None:
        state = self._states.get(job.response_id)
        if state is None or state.status != "in_progress" or len(state.events) >= MAX_EVENTS:
            return
        state.events.append((sequence, event, last))
        state.notify()

    async def finish(self, job: Job, result: StoredResponse) -> bool:
        state = self._states.get(job.response_id)
        if state is None or state.status != "in_progress":
            return False
        if await self._store.get(job.tenant, job.response_id) is None:
            state.end("deleted")  # deleted while it ran: not to be brought back
            return False
        await self._store.put(result)
        state.end(str(result.response.get("status", "completed")))
        return True

    async def cancelled(self, job: Job) -> None:
        return None  # the cancel already ended it

    async def give_back(self, job: Job) -> None:
        await self.finish(job, failed(job.stored, "server_error", "the edge stopped"))

    def _forget_ended(self) -> None:
        """Past `max_entries` jobs, the oldest ended ones' states and logs go."""
        excess = len(self._states) - self._max_entries
        if excess <= 0:
            return
        for response_id in [i for i, s in self._states.items() if s.ended][:excess]:
            del self._states[response_id]
