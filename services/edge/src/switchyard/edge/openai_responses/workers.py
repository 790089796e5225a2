"""The workers that run background responses in an edge process, whatever queue feeds them.

A queue (`JobQueue`: Redis or memory) hands out jobs; `Workers` takes one whenever it has
room, runs it under a per-model bound (`jobs_concurrency_per_model` in this process),
renews its lease every third of it (learning there whether it was cancelled or taken
over), and stores its result through the queue, which refuses it unless this attempt
still holds the job. A cancelled or lost job's task is cancelled: its `Claim` ends the
engine's generation. Each job is admitted in the lowest priority class (`job_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import orjson
import structlog

from switchyard.edge.openai_responses.store import ResponseTooLarge, StoredResponse
from switchyard.edge.redis_pool import STORE_ERRORS

log = structlog.get_logger(__name__)

#: How long a loop that met an unreachable store waits before trying again.
RETRY_S = 0.5
#: How long a stopping process lets a job's task give it back (before cancelling again).
GIVE_BACK_S = 5.0


@dataclass(slots=True)
class Job:
    tenant: str
    response_id: str
    #: Which run of the job this is (the queue's count): results of another are refused.
    attempt: int
    #: The response as queued, with its create request.
    stored: StoredResponse
    #: The queue's own reference (the Redis stream entry).
    handle: str = ""

    @property
    def model(self) -> str:
        """The model the create request names (the per-model bound's key)."""
        try:
            model = orjson.loads(self.stored.request or b"{}").get("model")
        except (orjson.JSONDecodeError, AttributeError):
            return ""
        return model if isinstance(model, str) else ""


class Renewal(Enum):
    HELD = "held"
    CANCELLED = "cancelled"
    #: Taken over (its lease ran out, another edge runs it now) or deleted.
    LOST = "lost"


#: Appends one SSE event (its sequence number, its bytes, whether it is the last) to the
#: job's event log.
EventLog = Callable[[int, bytes, bool], Awaitable[None]]
#: Runs a job to its end: the response to store (completed, incomplete or failed).
Runner = Callable[[Job, EventLog], Awaitable[StoredResponse]]


class JobQueue(Protocol):
    async def take(self, running: Container[str]) -> Job | None:
        """The next job for this process (bounded wait), now marked in progress; None.
        A job whose id is in `running` runs here already: it is not taken again."""
        ...

    async def renew(self, job: Job) -> Renewal: ...

    async def append(self, job: Job, sequence: int, event: bytes, last: bool) -> None:
        """Log one event of the job's stream (dropped unless this attempt holds it)."""
        ...

    async def finish(self, job: Job, result: StoredResponse) -> bool:
        """Store the result and end the job, if this attempt still holds it."""
        ...

    async def cancelled(self, job: Job) -> None:
        """The job was cancelled while this process ran it: drop it from the queue."""
        ...

    async def give_back(self, job: Job) -> None:
        """This process stops: the job was not finished (see each queue)."""
        ...


class _Slots:
    """Per-model semaphores, kept only while someone holds or waits for one."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._held: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, model: str) -> AsyncIterator[None]:
        semaphore, users = self._held.get(model, (asyncio.Semaphore(self._size), 0))
        self._held[model] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self._held[model]
            if users == 1:
                del self._held[model]
            else:
                self._held[model] = (semaphore, users - 1)


@dataclass(slots=True)
class _Running:
    job: Job
    task: asyncio.Task[None] | None = None
    #: Why its task was cancelled, when it was: a Renewal, or None for this process stopping.
    ended: Renewal | None = None
    renewal: asyncio.Task[None] | None = field(default=None)


class Workers:
    def __init__(
        self,
        queue: JobQueue,
        runner: Runner,
        *,
        concurrency_per_model: int,
        lease_s: float,
        capacity: Callable[[], int],
    ) -> None:
        self._queue = queue
        self._runner = runner
        self._slots = _Slots(concurrency_per_model)
        self._lease_s = lease_s
        #: How many jobs this process holds at most (running or waiting for their model).
        self._capacity = capacity
        self._running: dict[str, _Running] = {}
        self._room = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="background jobs")

    async def stop(self) -> None:
        """Take no more jobs; cancel the running ones, and give each back to its queue."""
        self._stopping = True
        if self._reader is not None:
            await end(self._reader)
        tasks = [r.task for r in self._running.values() if r.task is not None]
        # Each gets time to give its job back before it is cancelled again.
        await asyncio.gather(*(end(task, again_after_s=GIVE_BACK_S) for task in tasks))

    def cancel(self, response_id: str) -> None:
        """The job was cancelled (its record says so): end its run here, if it runs here."""
        running = self._running.get(response_id)
        if running is not None and running.task is not None and running.ended is None:
            running.ended = Renewal.CANCELLED
            running.task.cancel()

    async def _read(self) -> None:
        while not self._stopping:
            while len(self._running) >= self._capacity():
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # the capacity may grow meanwhile
                        await self._room.wait()
            try:
                job = await self._queue.take(self._running)
            except Exception as exc:  # the reader must outlive any one failure
                log.warning("background_jobs_queue_unavailable", error=repr(exc))
                await asyncio.sleep(RETRY_S)
                continue
            if job is None or job.response_id in self._running:
                continue
            running = _Running(job)
            self._running[job.response_id] = running
            running.task = asyncio.create_task(self._work(running), name=f"job {job.response_id}")

    async def _work(self, running: _Running) -> None:
        job = running.job
        running.renewal = asyncio.create_task(self._renew(running))
        try:
            async with self._slots.hold(job.model):
                log.info("background_job_started", response_id=job.response_id, attempt=job.attempt)
                result = await self._run(job)
            done = await self._store(job, result)
            log.info(
                "background_job_ended",
                response_id=job.response_id,
                attempt=job.attempt,
                status=result.response.get("status"),
                stored=done,
            )
        except asyncio.CancelledError:
            await self._ended(running)
        except STORE_ERRORS as exc:  # its lease is gone too: another edge will run it
            log.warning("background_job_not_stored", response_id=job.response_id, error=str(exc))
        finally:
            running.renewal.cancel()
            await asyncio.gather(running.renewal, return_exceptions=True)
            del self._running[job.response_id]
            self._room.set()

    async def _store(self, job: Job, result: StoredResponse) -> bool:
        try:
            return await self._retrying(lambda: self._queue.finish(job, result))
        except ResponseTooLarge as exc:
            too_large = failed(job.stored, "server_error", str(exc))
            return await self._retrying(lambda: self._queue.finish(job, too_large))

    async def _run(self, job: Job) -> StoredResponse:
        async def event_log(sequence: int, event: bytes, last: bool) -> None:
            try:
                await self._queue.append(job, sequence, event, last)
            except STORE_ERRORS as exc:  # a follower misses it; the stored result will not
                log.warning(
                    "background_job_event_lost", response_id=job.response_id, error=str(exc)
                )

        try:
            return await self._runner(job, event_log)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background_job_crashed", response_id=job.response_id)
            return failed(job.stored, "server_error", "the response failed at the edge")

    async def _ended(self, running: _Running) -> None:
        """The job's task was cancelled: say so to the queue, as the reason requires."""
        job = running.job
        log.info("background_job_stopped", response_id=job.response_id, reason=running.ended)
        with contextlib.suppress(*STORE_ERRORS):
            if running.ended is Renewal.CANCELLED:
                await self._queue.cancelled(job)
            elif running.ended is None:  # this process stops
                await self._queue.give_back(job)

    async def _renew(self, running: _Running) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                renewal = await self._queue.renew(running.job)
            except Exception as exc:  # tried again at the next third of the lease
                log.warning("background_job_lease_not_renewed", error=repr(exc))
                continue
            if renewal is not Renewal.HELD and running.ended is None:
                running.ended = renewal
                assert running.task is not None
                running.task.cancel()
                return

    async def _retrying(self, step: Callable[[], Awaitable[bool]]) -> bool:
        """`step` until the store answers: once the lease is gone, the job is another's."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self._lease_s
        while True:
            try:
                return await step()
            except STORE_ERRORS as exc:
                if loop.time() >= until:
                    raise
                log.warning("background_job_store_unavailable", error=str(exc))
                await asyncio.sleep(RETRY_S)


async def end(task: asyncio.Task[None], again_after_s: float = 1.0) -> None:
    """Cancel `task` and wait until it has ended. Cancelled again while it runs on: a
    cancellation that lands as a reply arrives can be lost (Python 3.11's `wait_for`,
    inside redis-py), and a loop that lost it would otherwise run on forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=again_after_s)


def failed(stored: StoredResponse, code: str, message: str) -> StoredResponse:
    """`stored` (a queued or running response) ended in failure with `error`."""
    response = {
        **stored.response,
        "status": "failed",
        "error": {"code": code, "message": message},
    }
    return StoredResponse(
        id=stored.id,
        tenant=stored.tenant,
        key_name=stored.key_name,
        response=response,
        input_items=stored.input_items,
        context=stored.context,
    )
