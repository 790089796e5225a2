"""Server-sent events read line by line, as the HTML spec defines them.

Engines differ in framing: vLLM and SGLang write `data: {...}`, TGI writes `data:{...}`
(no space) and sends `:` keep-alive comments; SGLang may send named events. Reading the
spec's way (strip exactly one optional space, skip comments, dispatch on a blank line)
covers all of them in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str


async def iter_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerSentEvent]:
    """Yield events as soon as their terminating blank line (or the end of the stream) arrives."""
    event = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line[0] == ":":
            continue
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield ServerSentEvent(event or "message", "\n".join(data))
