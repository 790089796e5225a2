"""Server-sent events read from raw bytes, as the HTML spec defines them.

Engines differ in framing: vLLM and SGLang write `data: {...}`, TGI writes `data:{...}`
(no space) and sends `:` keep-alive comments; SGLang may send named events. Reading the
spec's way (strip exactly one optional space, skip comments, dispatch on a blank line)
covers all of them in one place. Data stays bytes: JSON parsers read bytes, so nothing is
decoded twice on the path of every token.

`EventDecoder` is the reader, synchronous: fed whatever bytes arrived, it answers every
event they complete at once, so that a caller can relay the events that were already
waiting together.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A longer line is an engine gone wrong, not a token: refuse to buffer it without bound.
MAX_LINE_BYTES = 16 * 1024 * 1024


class LineTooLong(ValueError):
    pass


# Not frozen, though never changed once made: one is made per token, and a frozen
# dataclass's __init__ (object.__setattr__ per field) costs twice as much.
@dataclass(slots=True)
class ServerSentEvent:
    event: str
    data: bytes


class EventDecoder:
    """One stream's bytes → its events, incrementally: `feed` each chunk as it arrives,
    `end` once the stream has ended (a last event without its blank line is kept)."""

    __slots__ = ("_data", "_event", "_pending")

    def __init__(self) -> None:
        self._pending = b""  # the start of a line whose end has not arrived
        self._event = ""
        self._data: list[bytes] = []

    def lines(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes (without their `\\n`, `\\r\\n` or `\\r`)."""
        buffer = self._pending + chunk if self._pending else chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # maybe half of a \r\n split across chunks
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, pending = buffer.split(b"\n")
        self._pending = pending + held
        if len(self._pending) > MAX_LINE_BYTES:
            raise LineTooLong(f"an event line longer than {MAX_LINE_BYTES} bytes")
        return lines

    def last_line(self) -> bytes:
        """What is left of the stream once it has ended (b"" for nothing)."""
        pending, self._pending = self._pending.rstrip(b"\r"), b""
        return pending

    def line(self, line: bytes) -> ServerSentEvent | None:
        """Reads one line; the event it completes (a blank line after data), if any."""
        if not line:
            event = None
            if self._data:
                data = self._data
                event = ServerSentEvent(
                    self._event or "message", data[0] if len(data) == 1 else b"\n".join(data)
                )
            self._event, self._data = "", []
            return event
        if line[:1] == b":":
            return None
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode(errors="replace")
        return None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Every event `chunk` completes, in order."""
        # `line` inlined, with a fast path for `data:` lines: this runs for every token.
        events = []
        data = self._data
        for line in self.lines(chunk):
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif not line:
                if data:
                    joined = data[0] if len(data) == 1 else b"\n".join(data)
                    events.append(ServerSentEvent(self._event or "message", joined))
                    data = self._data = []
                self._event = ""
            else:
                self.line(line)
        return events

    def end(self) -> list[ServerSentEvent]:
        """The events the stream's end completes: a last line, a last event without its
        blank line."""
        events = []
        last = self.last_line()
        for line in (last, b"") if last else (b"",):
            event = self.line(line)
            if event is not None:
                events.append(event)
        return events
