"""Background responses (`background: true`): the interface the routes use.

A background response is stored at once (status `queued`) with its create request, and
run later by a worker in some edge process under the creating key's limits and the
model's admission, as a stream whose events are kept (so that `GET ?stream=true` can
follow or resume it). With the Redis store, the queue lives in Redis: a job whose edge
dies is taken over by another edge once its lease runs out, and never completes twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from switchyard.edge.openai_responses.store import StoredResponse


class JobsFull(Exception):
    """The queue is at its bound (`EDGE_JOBS_MAX_QUEUED`): the route answers 429."""


class NotCancellable(Exception):
    """Not a background response, or one that already ended: the route answers 400 with
    this message."""


class BackgroundJobs(Protocol):
    async def start(self) -> None:
        """Connect and start this process's workers (before the edge is ready)."""
        ...

    async def submit(self, stored: StoredResponse) -> None:
        """Store `stored` (status `queued`, `request` its create body) and queue it;
        `JobsFull` when the queue is at its bound (nothing is stored then)."""
        ...

    async def cancel(self, tenant: str, response_id: str) -> StoredResponse | None:
        """Cancel the tenant's background response wherever it runs (its generation is
        aborted in the engine); the response as it is then (status `cancelled`), None when
        the tenant has no such response, `NotCancellable` when it cannot be cancelled."""
        ...

    def events(self, tenant: str, response_id: str, starting_after: int) -> AsyncIterator[bytes]:
        """The SSE events of a background response's stream whose `sequence_number` is
        greater than `starting_after`, each as it is produced, ending after the last one
        (`response.completed`, `.failed`, `.incomplete`, or the cancellation's)."""
        ...

    async def close(self) -> None:
        """Stop this process's workers; a job they run goes back to the queue (Redis) or
        is marked failed (memory: nothing else will run it)."""
        ...


class NoJobs:
    """No background jobs (an edge state built without them, as unit tests build it)."""

    async def start(self) -> None:
        return None

    async def submit(self, stored: StoredResponse) -> None:
        raise JobsFull("background responses are not served here")

    async def cancel(self, tenant: str, response_id: str) -> StoredResponse | None:
        return None

    async def events(
        self, tenant: str, response_id: str, starting_after: int
    ) -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator that yields nothing

    async def close(self) -> None:
        return None
