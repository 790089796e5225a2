"""Server-sent event responses as axum's `Sse` writes them, keep-alive comments included.

TGI wraps every stream in `Sse::new(..).keep_alive(KeepAlive::default())`: after 15 s
without an event it sends an empty comment (`:` line). The events themselves are
produced by a separate pump task, so a slow producer (queued for the batch) does not
hold the keep-alive back, and cancelling the response cancels the producer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from starlette.responses import StreamingResponse

from switchyard.enginesim.serving import SSE_KEEPALIVE


@dataclass(frozen=True, slots=True)
class _End:
    error: Exception | None = None


async def with_keep_alive(
    source: AsyncIterator[bytes], interval_s: float
) -> AsyncGenerator[bytes, None]:
    """`source`'s chunks, with a keep-alive comment after each `interval_s` of silence."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        try:
            async for chunk in source:
                await queue.put(chunk)
        except Exception as exc:  # handed to the consumer, which re-raises it
            await queue.put(_End(exc))
        else:
            await queue.put(_End())

    task = asyncio.create_task(pump(), name="sse-pump")
    try:
        while True:
            try:
                async with asyncio.timeout(interval_s):
                    item = await queue.get()
            except TimeoutError:
                yield SSE_KEEPALIVE
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        # The client went away or the stream ended: stop the producer (aborting its request).
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def merged(streams: Sequence[AsyncIterator[bytes]]) -> AsyncIterator[bytes]:
    """The chunks of several streams as they come (TGI's multi-prompt completions)."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(maxsize=len(streams))

    async def pump(stream: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in stream:
                await queue.put(chunk)
        except Exception as exc:
            await queue.put(_End(exc))
        else:
            await queue.put(_End())

    tasks = [asyncio.create_task(pump(s), name="sse-merge") for s in streams]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if isinstance(item, _End):
                remaining -= 1
                if item.error is not None:
                    raise item.error
                continue
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sse_response(
    events: AsyncIterator[bytes], keep_alive_s: float, headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        with_keep_alive(events, keep_alive_s),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", **(headers or {})},
    )
