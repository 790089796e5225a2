"""What a chat or completion entry holds, and how an answer is recorded into one.

A unary answer is its `GenerateResponse`, serialized. A stream is the
`GenerateStreamResponse` messages the edge relayed, each after its length (4 bytes,
little-endian): replayed through a fresh `Encoder`, they give the same chunks with a new
id and `created`. An entry is kept only when the answer came whole: every choice finished
(and, for a stream, its usage arrived); a recording that grows past the entry limit stops
at once and is dropped, so nothing is ever buffered without bound.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from switchyard.inference.v1 import inference_pb2 as pb

_LENGTH_BYTES = 4

#: A stored entry that cannot be read back (another version's, or damaged): a miss.
CorruptEntry = (DecodeError, ValueError)


def whole_entry(response: pb.GenerateResponse, choices: int) -> bytes | None:
    """The entry of a unary answer; None when a choice is missing or did not finish."""
    finished = {c.index for c in response.choices if c.finish_reason}
    if not response.choices and response.finish_reason:
        finished = {0}  # an answer in the top-level fields only (one choice)
    if finished != set(range(choices)):
        return None
    return response.SerializeToString()


def read_whole(entry: bytes) -> pb.GenerateResponse:
    return pb.GenerateResponse.FromString(entry)


class StreamRecording:
    """The messages of one stream as they are relayed, up to `limit` bytes."""

    __slots__ = ("_finished", "_parts", "_size", "_usage", "choices", "limit")

    def __init__(self, limit: int, choices: int) -> None:
        self.limit = limit
        self.choices = choices
        self._parts: list[bytes] | None = []  # None: past the limit, given up
        self._size = 0
        self._finished: set[int] = set()
        self._usage = False

    def add(self, message: pb.GenerateStreamResponse) -> None:
        parts = self._parts
        if parts is None:
            return
        data = message.SerializeToString()
        self._size += _LENGTH_BYTES + len(data)
        if self._size > self.limit:
            self._parts = None  # too large to keep: let go of what was recorded
            return
        parts.append(len(data).to_bytes(_LENGTH_BYTES, "little"))
        parts.append(data)
        if message.finish_reason:
            self._finished.add(message.index)
        self._usage = message.HasField("usage")  # the last message carries it

    def entry(self) -> bytes | None:
        """The entry, when the stream came whole and within the limit; else None."""
        if self._parts is None or not self._usage:
            return None
        if self._finished != set(range(self.choices)):
            return None
        return b"".join(self._parts)


def read_stream(entry: bytes) -> list[pb.GenerateStreamResponse]:
    """The messages of a stream's entry (`CorruptEntry` if it is not one)."""
    messages = []
    offset, end = 0, len(entry)
    while offset < end:
        start = offset + _LENGTH_BYTES
        size = int.from_bytes(entry[offset:start], "little")
        if start + size > end:
            raise ValueError("a stream entry cut short")
        messages.append(pb.GenerateStreamResponse.FromString(entry[start : start + size]))
        offset = start + size
    if not messages or not messages[-1].HasField("usage"):
        raise ValueError("a stream entry without its usage")
    return messages


def stream_usage(messages: list[pb.GenerateStreamResponse]) -> pb.Usage:
    """A stored stream's usage (on its last message: `read_stream` checks it is there)."""
    return messages[-1].usage
