"""Server-sent events read from raw bytes, as the HTML spec defines them.

Engines differ in framing: vLLM and SGLang write `data: {...}`, TGI writes `data:{...}`
(no space) and sends `:` keep-alive comments; SGLang may send named events. Reading the
spec's way (strip exactly one optional space, skip comments, dispatch on a blank line)
covers all of them in one place. Data stays bytes: JSON parsers read bytes, so nothing is
decoded twice on the path of every token.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

#: A longer line is an engine gone wrong, not a token: refuse to buffer it without bound.
MAX_LINE_BYTES = 16 * 1024 * 1024


class LineTooLong(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: bytes


async def iter_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Lines (without their `\\n`, `\\r\\n` or `\\r`) from chunks that split them anywhere."""
    pending = b""
    async for chunk in chunks:
        buffer = pending + chunk if pending else chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # maybe half of a \r\n split across chunks
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, pending = buffer.split(b"\n")
        pending += held
        for line in lines:
            yield line
        if len(pending) > MAX_LINE_BYTES:
            raise LineTooLong(f"an event line longer than {MAX_LINE_BYTES} bytes")
    pending = pending.rstrip(b"\r")
    if pending:
        yield pending


async def iter_events(lines: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """Yield events as soon as their terminating blank line (or the end of the stream) arrives."""
    event = ""
    data: list[bytes] = []
    async for line in lines:
        if not line:
            if data:
                yield ServerSentEvent(
                    event or "message", data[0] if len(data) == 1 else b"\n".join(data)
                )
            event, data = "", []
            continue
        if line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode(errors="replace")
    if data:
        yield ServerSentEvent(event or "message", b"\n".join(data))
