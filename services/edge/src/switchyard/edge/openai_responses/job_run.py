"""How a worker runs one background response: as a streamed request with no client.

The job runs through the same pipeline as `POST /v1/responses` (`pipeline.run`), under a
`Claim` of its own: the creating key's rate limits and the model's admission apply as to
any request, in the lowest priority class (`background_priority`). Its `receive` never
reports a disconnect (there is no client to leave: only a cancel or this process stopping
ends it, by cancelling the task), and its `send` turns
the SSE stream into the job's event log. A refusal before the stream begins that waiting
can cure (429: the key's limits; 503: no capacity now) is retried until the request's
time is up; any other ends the job `failed`, with OpenAI's error object.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import orjson
import structlog
from pydantic import ValidationError
from starlette.types import Message

from switchyard.edge.claim import Claim
from switchyard.edge.draining import Drain
from switchyard.edge.exchange import Exchange
from switchyard.edge.openai_responses.pipeline import run
from switchyard.edge.openai_responses.schemas import CreateResponse
from switchyard.edge.openai_responses.store import StoredResponse
from switchyard.edge.openai_responses.workers import EventLog, Job, failed
from switchyard.edge.state import EdgeState

log = structlog.get_logger(__name__)

#: The stream's events that end it.
LAST_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
#: Refusals that waiting cures: retried, after Retry-After (within these bounds).
RETRIED = frozenset({429, 503})
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0
#: An error answer's body kept to read its message (an error body is small).
MAX_ERROR_BODY = 64 * 1024


async def _never() -> Message:
    """A client that never leaves."""
    await asyncio.Future()
    raise AssertionError("not reached")


class _Capture:
    """The Claim's `send`: the stream's events to the log, an error answer kept."""

    def __init__(self, event_log: EventLog, drain: Drain) -> None:
        self._log = event_log
        self._drain = drain
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.error_body = b""
        self._pending = b""
        self.last_sequence = -1
        #: The stream's last event (its data), once sent.
        self.last: dict[str, Any] | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
            return
        body: bytes = message.get("body", b"")
        if self.status != 200:
            self.error_body = (self.error_body + body)[:MAX_ERROR_BODY]
            return
        self._pending += body
        while b"\n\n" in self._pending:
            event, self._pending = self._pending.split(b"\n\n", 1)
            await self._event(event + b"\n\n")

    async def _event(self, event: bytes) -> None:
        data = next((line[6:] for line in event.split(b"\n") if line.startswith(b"data: ")), None)
        if data is None:
            return  # a keep-alive comment
        fields = orjson.loads(data)
        sequence = fields.get("sequence_number")
        if not isinstance(sequence, int):
            return
        last = fields.get("type") in LAST_EVENTS
        if last and self._drain.over:
            return  # the edge's shutdown ended it: not its end (another edge runs it again)
        if last:
            self.last = fields
        self.last_sequence = sequence
        await self._log(sequence, event, last)

    def error(self) -> tuple[str, str]:
        """The error answered before the stream: (Response error code, message)."""
        message = "the response failed"
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            message = str(orjson.loads(self.error_body)["error"]["message"])
        code = {429: "rate_limit_exceeded", 400: "invalid_prompt"}.get(self.status or 0)
        return code or "server_error", message

    def retry_after_s(self) -> float:
        try:
            wait = float(self.headers.get("retry-after", RETRY_MIN_S))
        except ValueError:
            wait = RETRY_MIN_S
        return min(max(wait, RETRY_MIN_S), RETRY_MAX_S)


class JobRunner:
    """Runs jobs for one edge process (a `Runner`)."""

    def __init__(self, edge: EdgeState) -> None:
        self._edge = edge

    async def __call__(self, job: Job, event_log: EventLog) -> StoredResponse:
        edge, stored = self._edge, job.stored
        key = edge.keys.by_name(stored.key_name)
        if key is None or key.tenant != job.tenant:
            return await _failed(
                job, event_log, -1, "invalid_prompt", "The API key that created it was revoked."
            )
        try:
            body = CreateResponse.model_validate_json(stored.request or b"")
        except ValidationError:
            return await _failed(job, event_log, -1, "server_error", "Its request is unreadable.")
        body = body.model_copy(update={"stream": True})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + edge.settings.request_timeout_s
        while True:
            capture = _Capture(event_log, edge.drain)
            exchange = Exchange(
                request_id=uuid.uuid4().hex, api="responses", started=time.perf_counter()
            )
            exchange.key_name, exchange.tenant = key.name, key.tenant
            result: StoredResponse | None = None
            async with Claim(
                edge, exchange, _never, capture.send, priority=edge.settings.background_priority
            ) as claim:
                result = await run(claim, key, body, job.response_id, deadline)
            if edge.drain.over:
                # The shutdown's grace ended the run before `close` could: not the job's
                # failure. Cancelled, it goes back to the queue as `close` would give it.
                raise asyncio.CancelledError
            if result is not None:
                result.request = None
                return result
            if capture.last is not None:  # the stream ended it (failed)
                response = capture.last.get("response")
                if isinstance(response, dict):
                    return _with(stored, response)
                return failed(stored, "server_error", "the response failed")
            if (
                capture.status in RETRIED
                and capture.last_sequence < 0
                and loop.time() + capture.retry_after_s() < deadline
            ):
                log.info("background_job_waits", response_id=job.response_id, status=capture.status)
                await asyncio.sleep(capture.retry_after_s())
                continue
            code, message = capture.error()
            return await _failed(job, event_log, capture.last_sequence, code, message)


def _with(stored: StoredResponse, response: dict[str, Any]) -> StoredResponse:
    return StoredResponse(
        id=stored.id,
        tenant=stored.tenant,
        key_name=stored.key_name,
        response=response,
        input_items=stored.input_items,
        context=stored.context,
    )


async def _failed(
    job: Job, event_log: EventLog, last_sequence: int, code: str, message: str
) -> StoredResponse:
    """The job failed before its stream ended: its followers get `response.failed`."""
    result = failed(job.stored, code, message)
    sequence = last_sequence + 1
    data = {"type": "response.failed", "sequence_number": sequence, "response": result.response}
    await event_log(
        sequence, b"event: response.failed\ndata: " + orjson.dumps(data) + b"\n\n", True
    )
    return result
