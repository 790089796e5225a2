"""The load generator: aiohttp on uvloop, one process, nothing blocking on its event loop.

Closed loop (`closed_loop`): N workers, each sending its next request when the last one
ends, until a fixed number was sent. Open loop (`open_loop`): requests start at a fixed
rate whatever happens to the earlier ones, and their latency counts from when they were
due, so a server that falls behind shows it (no coordinated omission).

Every request becomes one `Sample`; nothing here aggregates (see `stats`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from switchyard.bench.wire import (
    StreamReader,
    Workload,
    completion_tokens,
    embedding_tokens,
    request_body,
)

#: No request of the bench may take longer than this.
REQUEST_TIMEOUT_S = 120.0
#: Where the edge says whether its response cache answered ("hit") or not ("miss").
CACHE_HEADER = "x-switchyard-cache"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a path serves a model."""

    base_url: str
    model: str
    api_key: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it was due (perf_counter), how long it took, what came back."""

    due: float
    latency_s: float
    ttft_s: float | None  # streams: until the first text chunk
    tokens: int
    status: int  # HTTP status; 0 when no answer came (connection error, timeout)
    error: str | None = None  # None: a complete, successful answer
    cache: str | None = None  # the answer's `x-switchyard-cache` header, if any
    #: Streams: the gaps between successive text chunks as the client read them (seconds;
    #: chunks that arrived in the same read count 0 after the first).
    gaps: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


def session(concurrency: int) -> aiohttp.ClientSession:
    """A client session keeping up to `concurrency` connections alive."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


class Sender:
    """Sends one workload to one target; the body and headers are built once."""

    def __init__(self, client: aiohttp.ClientSession, target: Target, workload: Workload) -> None:
        self._client = client
        self._url = target.base_url + workload.path
        self._headers = target.headers()
        self._workload = workload
        self._model = target.model
        self._body = request_body(workload, target.model)

    def _next_body(self) -> bytes:
        """The same body every time, but a fresh one for a `distinct` workload."""
        if self._workload.distinct:
            return request_body(self._workload, self._model)
        return self._body

    async def send(self, due: float | None = None) -> Sample:
        body = self._next_body()
        started = time.perf_counter()
        due = started if due is None else due
        try:
            async with self._client.post(self._url, data=body, headers=self._headers) as response:
                cache = response.headers.get(CACHE_HEADER)
                if response.status != 200:
                    answer = await response.read()
                    error = f"HTTP {response.status}: {answer[:200].decode(errors='replace')}"
                    latency = time.perf_counter() - due
                    return Sample(due, latency, None, 0, response.status, error, cache)
                if self._workload.stream:
                    return await self._read_stream(response, due, cache)
                answer = await response.read()
                latency = time.perf_counter() - due
                try:
                    tokens = self._tokens(answer)
                except ValueError as exc:
                    return Sample(due, latency, None, 0, 200, str(exc), cache)
                return Sample(due, latency, None, tokens, 200, cache=cache)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Sample(due, time.perf_counter() - due, None, 0, 0, f"{type(exc).__name__}")

    def _tokens(self, answer: bytes) -> int:
        if self._workload.api == "embeddings":
            return embedding_tokens(answer, self._workload.inputs)
        return completion_tokens(answer, self._workload.tools)

    @staticmethod
    async def _read_stream(
        response: aiohttp.ClientResponse, due: float, cache: str | None
    ) -> Sample:
        reader = StreamReader()
        ttft: float | None = None
        gaps: list[float] = []
        last = 0.0
        async for data in response.content.iter_any():
            texts = reader.feed(data)
            if not texts:
                continue
            now = time.perf_counter()
            if ttft is None:
                ttft = now - due  # the first chunk's wait is the TTFT, not a gap
            else:
                gaps.append(now - last)
            if texts > 1:
                gaps.extend([0.0] * (texts - 1))
            last = now
        latency = time.perf_counter() - due
        error = reader.error
        if error is None and not reader.done:
            error = "stream ended without [DONE]"
        return Sample(due, latency, ttft, reader.tokens, 200, error, cache, tuple(gaps))


Progress = Callable[[int], None]


async def closed_loop(
    sender: Sender,
    concurrency: int,
    requests: int,
    *,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> list[Sample]:
    """`requests` requests from `concurrency` workers; none starts after `deadline`
    (perf_counter), so a slow path cannot overrun the bench's time budget."""
    samples: list[Sample] = []
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0 and (deadline is None or time.perf_counter() < deadline):
            left -= 1
            samples.append(await sender.send())
            if progress is not None:
                progress(len(samples))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return samples


async def open_loop(
    sender: Sender,
    rate_per_s: float,
    requests: int,
    *,
    max_outstanding: int = 1024,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> list[Sample]:
    """`requests` requests started `rate_per_s` per second. A request due while
    `max_outstanding` are open is not sent: it counts as an error ("client overloaded")."""
    samples: list[Sample] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()

    async def one(due: float) -> None:
        samples.append(await sender.send(due))
        if progress is not None:
            progress(len(samples))

    for i in range(requests):
        due = start + i / rate_per_s
        now = time.perf_counter()
        if deadline is not None and now >= deadline:
            break
        if due > now:
            await asyncio.sleep(due - now)
        if len(tasks) >= max_outstanding:
            samples.append(Sample(due, 0.0, None, 0, 0, "client overloaded"))
            continue
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return samples


async def timed(run: Awaitable[list[Sample]]) -> tuple[list[Sample], float]:
    """The samples of `run` and its wall-clock duration."""
    started = time.perf_counter()
    samples = await run
    return samples, time.perf_counter() - started
