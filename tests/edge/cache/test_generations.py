"""What a chat or completion entry holds: only answers that came whole, within the limit."""

from __future__ import annotations

import pytest

from switchyard.edge.cache.generations import (
    CorruptEntry,
    StreamRecording,
    read_stream,
    read_whole,
    whole_entry,
)
from switchyard.inference.v1 import inference_pb2 as pb

STOP = pb.FINISH_REASON_STOP


def messages(choices: int = 1) -> list[pb.GenerateStreamResponse]:
    out = []
    for index in range(choices):
        out.append(pb.GenerateStreamResponse(index=index, text_delta="Hello", token_count=1))
        out.append(pb.GenerateStreamResponse(index=index, text_delta=" world", token_count=1))
        out.append(pb.GenerateStreamResponse(index=index, finish_reason=STOP))
    out.append(pb.GenerateStreamResponse(usage=pb.Usage(prompt_tokens=5, completion_tokens=4)))
    return out


def record(
    stream: list[pb.GenerateStreamResponse], limit: int = 10_000, choices: int = 1
) -> bytes | None:
    recording = StreamRecording(limit, choices)
    for message in stream:
        recording.add(message)
    return recording.entry()


def test_a_whole_stream_is_kept_and_read_back_message_for_message() -> None:
    stream = messages(choices=2)
    entry = record(stream, choices=2)
    assert entry is not None
    assert read_stream(entry) == stream


def test_a_stream_without_every_choice_finished_is_not_kept() -> None:
    stream = messages(choices=2)
    cut = [m for m in stream if not (m.index == 1 and m.finish_reason)]
    assert record(cut, choices=2) is None


def test_a_stream_without_its_usage_at_the_end_is_not_kept() -> None:
    assert record(messages()[:-1]) is None


def test_a_recording_past_the_limit_gives_up_and_keeps_nothing() -> None:
    stream = messages()
    size = len(record(stream) or b"")
    assert record(stream, limit=size) is not None
    assert record(stream, limit=size - 1) is None


def test_a_unary_answer_is_kept_only_with_every_choice_finished() -> None:
    usage = pb.Usage(prompt_tokens=3, completion_tokens=2)
    whole = pb.GenerateResponse(
        choices=[pb.GeneratedChoice(index=0, text="hi", finish_reason=STOP)], usage=usage
    )
    entry = whole_entry(whole, 1)
    assert entry is not None
    assert read_whole(entry) == whole
    unfinished = pb.GenerateResponse(choices=[pb.GeneratedChoice(index=0, text="hi")], usage=usage)
    assert whole_entry(unfinished, 1) is None
    assert whole_entry(whole, 2) is None  # a choice is missing


@pytest.mark.parametrize("entry", [b"\xff\xff\xff\x7f", b"\x02\x00\x00\x00\x08", b""])
def test_an_unreadable_stream_entry_is_refused(entry: bytes) -> None:
    with pytest.raises(CorruptEntry):
        read_stream(entry)
