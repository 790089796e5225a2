"""How a worker's claim turns the Responses stream into a job's event log."""

from __future__ import annotations

import orjson

from switchyard.edge.draining import Drain
from switchyard.edge.openai_responses.job_run import _Capture
from switchyard.edge.responses import KEEPALIVE


def sse(kind: str, sequence: int) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": sequence})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[int, bytes, bool]] = []

    async def __call__(self, sequence: int, event: bytes, last: bool) -> None:
        self.events.append((sequence, event, last))


def start(status: int, **headers: str) -> dict[str, object]:
    fields = [(k.encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http.response.start", "status": status, "headers": fields}


def body(chunk: bytes) -> dict[str, object]:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def test_events_are_logged_one_by_one_whatever_the_chunks() -> None:
    log = Log()
    capture = _Capture(log, Drain(10))
    created, delta, done = (
        sse("response.created", 0),
        sse("response.output_text.delta", 1),
        sse("response.completed", 2),
    )
    await capture.send(start(200))
    await capture.send(body(created))
    await capture.send(body(KEEPALIVE))  # between sends: never inside an event
    await capture.send(body(delta[:10]))  # half an event, then the rest with the next
    await capture.send(body(delta[10:] + done))
    assert log.events == [(0, created, False), (1, delta, False), (2, done, True)]
    assert capture.last == {"type": "response.completed", "sequence_number": 2}
    assert capture.last_sequence == 2


async def test_an_error_before_the_stream_is_kept_not_logged() -> None:
    log = Log()
    capture = _Capture(log, Drain(10))
    await capture.send(start(429, **{"retry-after": "7"}))
    await capture.send(body(b'{"error": {"message": "slow down", "type": "rate_limit"}}'))
    assert log.events == []
    assert capture.error() == ("rate_limit_exceeded", "slow down")
    assert capture.retry_after_s() == 7.0


async def test_the_end_a_shutdown_gave_the_stream_is_not_its_end() -> None:
    log, drain = Log(), Drain(10)
    capture = _Capture(log, drain)
    await capture.send(start(200))
    await capture.send(body(sse("response.created", 0)))
    drain.over = True  # the shutdown's grace ended the claim: its failure is no result
    await capture.send(body(sse("response.failed", 1)))
    assert [sequence for sequence, _, _ in log.events] == [0]
    assert capture.last is None
