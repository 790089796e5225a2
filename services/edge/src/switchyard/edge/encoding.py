"""What an API's encoding of a generation gives `Generation` to send.

Each API the edge speaks (OpenAI's chat and completions, OpenAI's Responses, Anthropic's
Messages) encodes the same contract messages its own way; `Generation` relays through
whichever encoder the API's pipeline hands it and knows nothing of their shapes. Every
method returns the bytes to send as they are (SSE events for a stream); b"" sends
nothing. An encoder is made per request and may keep state (sequence numbers, what has
been opened, the finish reason it holds back until the usage comes).
"""

from __future__ import annotations

from typing import Protocol

from switchyard.inference.v1 import inference_pb2 as pb


class GenerationEncoder(Protocol):
    #: How many choices the request asked for: a message for another index is refused.
    choices: int

    def opening(self) -> bytes:
        """A stream's first events, sent once the stream is committed to (200)."""
        ...

    def delta(self, message: pb.GenerateStreamResponse) -> bytes:
        """What `message` adds to its choice: text, reasoning, tool-call fragments."""
        ...

    def finish(self, message: pb.GenerateStreamResponse) -> bytes:
        """A choice's end (`message.finish_reason` is set; `stop_sequence` may be)."""
        ...

    def usage(self, usage: pb.Usage) -> bytes:
        """The stream's usage, when it arrives (its last message)."""
        ...

    def closing(self) -> bytes:
        """A stream's last events, after everything above; sent as the body's end."""
        ...

    def whole(self, response: pb.GenerateResponse) -> bytes:
        """A unary answer's JSON body."""
        ...
