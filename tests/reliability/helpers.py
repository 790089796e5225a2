"""What every reliability scenario needs: the edge's resources before and after, and streams
read event by event.

After each scenario the edge must be back where it started: no request in flight
(`switchyard_edge_in_flight_requests` is 0) and as many open file descriptors as before,
give or take `FD_SLACK`. The slack is for connections the edge keeps on purpose and may
have re-opened meanwhile (a gRPC channel reconnecting to an adapter, a pooled Redis
connection): a leak per request would show as dozens, since every scenario sends dozens.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import psutil

from tests.support.edge import Edge
from tests.support.polling import NotYet, eventually

FD_SLACK = 2


def edge_process(edge: Edge) -> psutil.Process:
    return psutil.Process(edge.service.process.pid)


async def _stable_fds(process: psutil.Process) -> int:
    """The descriptor count once two reads 100 ms apart agree (connections closing settle)."""
    reads: list[int] = []

    async def agreed() -> int | None:
        reads.append(await asyncio.to_thread(process.num_fds))
        return reads[-1] if reads[-2:-1] == reads[-1:] else None  # never 0: stdio is open

    count: int = await eventually(agreed, interval=0.1, what="the descriptor count steady")
    return count


@dataclass
class Baseline:
    """The edge's open descriptors once warmed up; `settled()` checks it is back there."""

    edge: Edge
    fds: int

    @classmethod
    async def take(cls, edge: Edge, key: str = "full") -> Baseline:
        """Warm the edge up (one request, so its channels are open) and count its fds."""
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{edge.url}/v1/completions",
                json={"model": "demo-vllm", "prompt": "warm up", "max_tokens": 2},
                headers=edge.auth(key),
            )
            assert response.status_code == 200, response.text
        return cls(edge, await _stable_fds(edge_process(edge)))

    async def settled(self) -> None:
        """Nothing in flight and the descriptors back to the baseline (polled)."""
        process = edge_process(self.edge)
        last = ""

        async def back() -> bool:
            nonlocal last
            in_flight = await self.edge.in_flight()
            fds = await _stable_fds(process)
            last = f"{in_flight} in flight, {fds} fds (baseline {self.fds} + {FD_SLACK})"
            return in_flight == 0 and fds <= self.fds + FD_SLACK

        try:
            await eventually(back, interval=0.1, what="the edge settled")
        except NotYet as exc:
            connections = await asyncio.to_thread(process.net_connections)
            raise NotYet(f"{exc}: {last}; connections: {connections}") from None


@dataclass
class StreamOutcome:
    """A streamed answer as the client saw it."""

    status: int
    headers: httpx.Headers
    chunks: list[dict[str, Any]] = field(default_factory=list)  # data events (JSON)
    error: dict[str, Any] | None = None  # an error event's `error`
    done: bool = False  # `data: [DONE]` arrived
    body: bytes = b""  # a non-200 answer's body

    @property
    def text(self) -> str:
        return "".join(
            c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c.get("choices")
        )

    @property
    def tokens(self) -> int:
        """The tokens received, by their logprobs (ask with `logprobs: true`): one entry per
        token whatever the chunks (the adapter joins tokens that reached it together)."""
        return sum(
            len((c["choices"][0].get("logprobs") or {}).get("content") or ())
            for c in self.chunks
            if c.get("choices")
        )

    @property
    def finish_reason(self) -> str | None:
        reasons = [c["choices"][0].get("finish_reason") for c in self.chunks if c.get("choices")]
        return next((r for r in reasons if r), None)


async def read_stream(
    client: httpx.AsyncClient,
    edge: Edge,
    body: dict[str, Any],
    *,
    key: str = "full",
    first_chunk: asyncio.Event | None = None,
    request_id: str | None = None,
) -> StreamOutcome:
    """POST a streaming chat completion and read it to its end, event by event.
    `first_chunk` is set when the first text arrives; `request_id` is sent as
    `X-Request-Id` (the edge's record carries it)."""
    headers = edge.auth(key)
    if request_id is not None:
        headers = {**headers, "x-request-id": request_id}
    async with client.stream(
        "POST",
        f"{edge.url}/v1/chat/completions",
        json={**body, "stream": True},
        headers=headers,
    ) as response:
        outcome = StreamOutcome(response.status_code, response.headers)
        if response.status_code != 200:
            outcome.body = await response.aread()
            return outcome
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            payload = line.removeprefix("data: ")
            if payload == "[DONE]":
                outcome.done = True
                continue
            event = orjson.loads(payload)
            if "error" in event:
                outcome.error = event["error"]
                continue
            outcome.chunks.append(event)
            if first_chunk is not None and outcome.text:
                first_chunk.set()
    return outcome


def chat(max_tokens: int, **extra: Any) -> dict[str, Any]:
    """A demo-vllm chat body of exactly `max_tokens` tokens."""
    return {
        "model": "demo-vllm",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **extra,
    }
